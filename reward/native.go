package reward

import (
	"context"
	"errors"

	"github.com/autoif/autoif/ifeval"
)

// NativeScorer scores IFEval constraints (ifeval.ConstraintFunction) in process, natively,
// and sends every other function to Next (the Python sandbox, local or over NATS); the
// outcomes are merged in function order and scored by AutoIF's rule, so one prompt unit may
// mix both kinds.
type NativeScorer struct {
	Next Scorer
}

// WithNative wraps s so that IFEval constraints never reach the sandbox. Wrapping twice is a
// no-op.
func WithNative(s Scorer) Scorer {
	if n, ok := s.(*NativeScorer); ok {
		return n
	}
	return &NativeScorer{Next: s}
}

// Score implements Scorer.
func (n *NativeScorer) Score(ctx context.Context, funcs []string, responses []string) (*Result, error) {
	res := &Result{Evals: make([][]Eval, len(funcs))}
	texts := make([]*ifeval.Text, len(responses))
	for r, resp := range responses {
		texts[r] = ifeval.NewText(resp)
	}
	var others []int
	for f, fn := range funcs {
		if !ifeval.IsConstraintFunction(fn) {
			others = append(others, f)
			continue
		}
		row := make([]Eval, len(responses))
		in, err := ifeval.ParseConstraintFunction(fn)
		for r, text := range texts {
			switch {
			case err != nil:
				row[r] = Eval{Outcome: Error, Kind: KindCompile, Message: err.Error()}
			case ifeval.Follows(in, text):
				row[r] = Eval{Outcome: Pass}
			default:
				row[r] = Eval{Outcome: Fail}
			}
		}
		res.Evals[f] = row
	}
	if len(others) > 0 {
		if n.Next == nil {
			return nil, errors.New("reward: Python verification functions but no sandbox to run them")
		}
		sub := make([]string, len(others))
		for i, f := range others {
			sub[i] = funcs[f]
		}
		got, err := n.Next.Score(ctx, sub, responses)
		if err != nil {
			return nil, err
		}
		for i, f := range others {
			res.Evals[f] = got.Evals[i]
		}
	}
	res.Scores = ScoreResponses(res.Evals, len(responses))
	return res, nil
}
