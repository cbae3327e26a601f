package rewardbench

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/autoif/autoif/reward"
)

// IFEvalFigures compare native IFEval scoring with the sandbox on the same constraints and
// responses: each official constraint once as a native check and once as a Python function.
type IFEvalFigures struct {
	Constraints int `json:"ifeval_constraints"`
	Skipped     int `json:"ifeval_skipped"` // no Python form: NLTK, langdetect, random letters
	Responses   int `json:"ifeval_responses"`
	Workers     int `json:"ifeval_workers"`
	// Evaluations per second, best of Rounds, with Workers sandbox workers and as many
	// goroutines natively.
	SandboxEvalsPerS  float64 `json:"ifeval_sandbox_evals_per_s"`
	NativeEvalsPerS   float64 `json:"ifeval_native_evals_per_s"`
	NativeOverSandbox float64 `json:"ifeval_native_over_sandbox"`
	VerdictAgreement  float64 `json:"ifeval_verdict_agreement"`
}

// RunIFEval measures w: Rounds rounds of every constraint on every response, each way.
func RunIFEval(ctx context.Context, w *reward.IFEvalWorkload, opts Options) (*IFEvalFigures, error) {
	if opts.Rounds <= 0 {
		opts.Rounds = 3
	}
	pool, err := reward.NewPool(ctx, opts.Pool)
	if err != nil {
		return nil, err
	}
	defer pool.Close()
	fig := &IFEvalFigures{Constraints: len(w.Native), Skipped: w.Skipped, Responses: len(w.Responses), Workers: pool.Options().Workers}
	evals := float64(len(w.Native) * len(w.Responses))
	if opts.Progress != nil {
		fmt.Fprintf(opts.Progress, "ifeval: %d constraints × %d responses, %d workers\n", fig.Constraints, fig.Responses, fig.Workers)
	}
	var py, native *reward.Result
	if _, err := pool.Score(ctx, w.Python, w.Responses[:1]); err != nil { // warm up
		return nil, err
	}
	for range opts.Rounds {
		start := time.Now()
		if py, err = pool.Score(ctx, w.Python, w.Responses); err != nil {
			return nil, err
		}
		fig.SandboxEvalsPerS = max(fig.SandboxEvalsPerS, evals/time.Since(start).Seconds())
		start = time.Now()
		if native, err = scoreNative(ctx, w.Native, w.Responses, fig.Workers); err != nil {
			return nil, err
		}
		fig.NativeEvalsPerS = max(fig.NativeEvalsPerS, evals/time.Since(start).Seconds())
	}
	fig.NativeOverSandbox = fig.NativeEvalsPerS / fig.SandboxEvalsPerS
	agree := 0
	for f := range w.Native {
		for r := range w.Responses {
			if py.Evals[f][r].Outcome == native.Evals[f][r].Outcome {
				agree++
			}
		}
	}
	fig.VerdictAgreement = float64(agree) / evals
	if opts.Progress != nil {
		fmt.Fprintf(opts.Progress, "ifeval: sandbox %.0f evals/s, native %.0f evals/s (%.1fx), verdicts agree %.4f\n",
			fig.SandboxEvalsPerS, fig.NativeEvalsPerS, fig.NativeOverSandbox, fig.VerdictAgreement)
	}
	return fig, nil
}

// scoreNative scores every function natively, the functions shared among workers goroutines
// as the sandbox pool shares them among its workers.
func scoreNative(ctx context.Context, funcs, responses []string, workers int) (*reward.Result, error) {
	res := &reward.Result{Evals: make([][]reward.Eval, len(funcs))}
	s := reward.WithNative(nil)
	errs := make([]error, workers)
	var wg sync.WaitGroup
	for g := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for f := g; f < len(funcs); f += workers {
				r, err := s.Score(ctx, funcs[f:f+1], responses)
				if err != nil {
					errs[g] = err
					return
				}
				res.Evals[f] = r.Evals[0]
			}
		}()
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return nil, err
		}
	}
	return res, nil
}
