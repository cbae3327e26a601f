package experiment

import (
	"context"
	"fmt"
	"sort"
	"strings"

	"github.com/autoif/autoif/model"
	"github.com/autoif/autoif/proto"
	"github.com/autoif/autoif/reward"
	"github.com/autoif/autoif/rollout"
	"github.com/autoif/autoif/trainer"
)

// SampleOptions say how a policy is sampled outside the loop (evaluation, offline pairs).
type SampleOptions struct {
	// K responses per prompt (evaluation: 1).
	K int
	// Temperature 0 decodes greedily.
	Temperature  float64
	MaxNewTokens int
	Seed         uint64
	ChatTemplate bool
	// Batch is how many prompts are sampled together (default 32).
	Batch   int
	Threads int
}

// sampled is one prompt's K responses with their scores.
type sampled struct {
	unit      proto.PromptUnit
	promptIDs []int
	tokens    [][]int // as sampled, with the stop token when one ended it
	texts     []string
	scores    []float64
}

// sampleAndScore samples K responses for every unit from the policy in dir and scores them.
func sampleAndScore(ctx context.Context, dir string, units []proto.PromptUnit, scorer reward.Scorer, o SampleOptions) ([]sampled, error) {
	out, err := samplePolicy(ctx, dir, units, o)
	if err != nil {
		return nil, err
	}
	if err := score(ctx, out, scorer); err != nil {
		return nil, err
	}
	return out, nil
}

// SampleResponses samples one response per prompt from the policy in dir, each prompt
// rendered as in training (o.ChatTemplate) and decoded as evaluation does (greedy at
// Temperature 0): for benchmarks that score responses themselves.
func SampleResponses(ctx context.Context, dir string, prompts []string, o SampleOptions) ([]string, error) {
	o.K = 1
	units := make([]proto.PromptUnit, len(prompts))
	for i, p := range prompts {
		units[i] = proto.PromptUnit{Prompt: p}
	}
	out, err := samplePolicy(ctx, dir, units, o)
	if err != nil {
		return nil, err
	}
	texts := make([]string, len(out))
	for i, s := range out {
		texts[i] = s.texts[0]
	}
	return texts, nil
}

// samplePolicy samples K responses for every unit from the policy in dir.
func samplePolicy(ctx context.Context, dir string, units []proto.PromptUnit, o SampleOptions) ([]sampled, error) {
	if o.K <= 0 {
		o.K = 1
	}
	if o.Batch <= 0 {
		o.Batch = 32
	}
	pol, err := rollout.LoadPolicy(dir, 0, o.Threads, nil)
	if err != nil {
		return nil, err
	}
	tok := pol.Tok
	stops := map[int]bool{}
	var stopIDs []int
	for _, id := range append(tok.EOSIDs(), pol.Model.Config.EOSTokenIDs...) {
		if !stops[id] {
			stops[id] = true
			stopIDs = append(stopIDs, id)
		}
	}
	out := make([]sampled, len(units))
	for start := 0; start < len(units); start += o.Batch {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		end := min(start+o.Batch, len(units))
		var batch [][]int
		for i := start; i < end; i++ {
			ids, _, err := tok.RenderPrompt(units[i].Prompt, o.ChatTemplate)
			if err != nil {
				return nil, err
			}
			out[i] = sampled{unit: units[i], promptIDs: ids}
			for range o.K {
				batch = append(batch, ids)
			}
		}
		gen, err := pol.Model.Generate(batch, model.SampleOptions{
			MaxNewTokens: o.MaxNewTokens, Temperature: o.Temperature, Seed: o.Seed + uint64(start), StopTokens: stopIDs,
		})
		if err != nil {
			return nil, fmt.Errorf("sample %s: %w", dir, err)
		}
		for j, g := range gen {
			s := &out[start+j/o.K]
			body := g.Tokens
			if g.Finish == model.FinishStopToken && len(body) > 0 && stops[body[len(body)-1]] {
				body = body[:len(body)-1]
			}
			text, err := tok.Decode(body)
			if err != nil {
				return nil, fmt.Errorf("decode sample: %w", err)
			}
			s.tokens = append(s.tokens, g.Tokens)
			s.texts = append(s.texts, strings.ToValidUTF8(text, "\uFFFD"))
		}
	}
	return out, nil
}

// score fills each sample's scores: one reward call per instruction, its functions × all its
// responses.
func score(ctx context.Context, out []sampled, scorer reward.Scorer) error {
	scorer = reward.WithNative(scorer)
	byInstr := map[string][]int{}
	for i, s := range out {
		byInstr[s.unit.InstructionID] = append(byInstr[s.unit.InstructionID], i)
	}
	for _, idx := range byInstr {
		var texts []string
		for _, i := range idx {
			texts = append(texts, out[i].texts...)
		}
		res, err := scorer.Score(ctx, out[idx[0]].unit.Functions, texts)
		if err != nil {
			return fmt.Errorf("score %s: %w", out[idx[0]].unit.InstructionID, err)
		}
		n := 0
		for _, i := range idx {
			for range out[i].texts {
				out[i].scores = append(out[i].scores, res.Scores[n].Score)
				n++
			}
		}
	}
	return nil
}

// EvalResult is a policy's verification pass rate on a prompt set.
type EvalResult struct {
	// PassRate is the mean score (mean pass rate over each instruction's functions) of one
	// response per prompt.
	PassRate       float64            `json:"pass_rate"`
	PerInstruction map[string]float64 `json:"per_instruction"`
	Prompts        int                `json:"prompts"`
	// Examples are a few responses, for reading.
	Examples []EvalExample `json:"examples,omitempty"`
}

// EvalExample is one evaluated response.
type EvalExample struct {
	Prompt   string  `json:"prompt"`
	Response string  `json:"response"`
	Score    float64 `json:"score"`
}

// Evaluate samples one response per unit from the policy in dir and scores it.
func Evaluate(ctx context.Context, dir string, units []proto.PromptUnit, scorer reward.Scorer, o SampleOptions) (EvalResult, error) {
	o.K = 1
	out, err := sampleAndScore(ctx, dir, units, scorer, o)
	if err != nil {
		return EvalResult{}, fmt.Errorf("evaluate %s: %w", dir, err)
	}
	r := EvalResult{PerInstruction: map[string]float64{}, Prompts: len(out)}
	counts := map[string]int{}
	var sum float64
	for i, s := range out {
		sum += s.scores[0]
		r.PerInstruction[s.unit.InstructionID] += s.scores[0]
		counts[s.unit.InstructionID]++
		if i%max(1, len(out)/8) == 0 && len(r.Examples) < 8 {
			r.Examples = append(r.Examples, EvalExample{Prompt: s.unit.Prompt, Response: s.texts[0], Score: s.scores[0]})
		}
	}
	for k, n := range counts {
		r.PerInstruction[k] /= float64(n)
	}
	if len(out) > 0 {
		r.PassRate = sum / float64(len(out))
	}
	return r, nil
}

// SamplePairs samples K responses per unit once from the policy in dir, scores them, and
// makes preference pairs with the rollout workers' selection rule: the offline-DPO baseline's
// data. It stops early once it has maxPairs pairs (0: no limit).
func SamplePairs(ctx context.Context, dir string, units []proto.PromptUnit, scorer reward.Scorer, o SampleOptions, sel rollout.SelectOptions, maxPairs int) ([]*trainer.Pair, error) {
	var pairs []*trainer.Pair
	chunk := max(o.Batch, 16)
	for start := 0; start < len(units) && (maxPairs == 0 || len(pairs) < maxPairs); start += chunk {
		so := o
		so.Seed = o.Seed + uint64(start)*7919
		out, err := sampleAndScore(ctx, dir, units[start:min(start+chunk, len(units))], scorer, so)
		if err != nil {
			return nil, fmt.Errorf("offline pairs: %w", err)
		}
		for _, s := range out {
			cands := make([]rollout.Candidate, len(s.texts))
			for i := range s.texts {
				cands[i] = rollout.Candidate{Index: i, Text: s.texts[i], Score: s.scores[i]}
			}
			got := rollout.SelectPairs(s.unit.PromptID, cands, sel)
			for _, p := range got.Pairs {
				pairs = append(pairs, &trainer.Pair{
					ID:     fmt.Sprintf("%s/%d-%d", s.unit.PromptID, p.Chosen, p.Rejected),
					Prompt: s.promptIDs, Chosen: s.tokens[p.Chosen], Rejected: s.tokens[p.Rejected],
				})
			}
		}
	}
	if maxPairs > 0 && len(pairs) > maxPairs {
		pairs = pairs[:maxPairs]
	}
	return pairs, nil
}

// median of xs (0 for none).
func median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := append([]float64(nil), xs...)
	sort.Float64s(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}
