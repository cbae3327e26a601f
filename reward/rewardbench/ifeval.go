package rewardbench

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/autoif/autoif/reward"
)

// IFEvalFigures compare native IFEval scoring with the sandbox on the same constraints and
// responses: each official constraint once as a native check and once as a Python function.
type IFEvalFigures struct {
	Constraints int `json:"ifeval_constraints"`
	Skipped     int `json:"ifeval_skipped"` // no Python form: NLTK, langdetect, random letters
	Responses   int `json:"ifeval_responses"`
	// Both sides run on the same number of threads: Workers sandbox worker processes (one
	// Python thread each) and as many goroutines natively, with GOMAXPROCS cores for Go.
	Workers          int `json:"ifeval_workers"`
	NativeGoroutines int `json:"ifeval_native_goroutines"`
	GOMAXPROCS       int `json:"ifeval_gomaxprocs"`
	// Evaluations per second, best of Rounds.
	SandboxEvalsPerS  float64 `json:"ifeval_sandbox_evals_per_s"`
	NativeEvalsPerS   float64 `json:"ifeval_native_evals_per_s"`
	NativeOverSandbox float64 `json:"ifeval_native_over_sandbox"`
	// The native side again with nothing shared among constraints: one constraint per call,
	// so each works out what it needs of each response for itself, as the Python functions do.
	NativeUnsharedEvalsPerS   float64 `json:"ifeval_native_unshared_evals_per_s"`
	NativeUnsharedOverSandbox float64 `json:"ifeval_native_unshared_over_sandbox"`
	VerdictAgreement          float64 `json:"ifeval_verdict_agreement"`
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
	workers := pool.Options().Workers
	fig := &IFEvalFigures{Constraints: len(w.Native), Skipped: w.Skipped, Responses: len(w.Responses),
		Workers: workers, NativeGoroutines: workers, GOMAXPROCS: runtime.GOMAXPROCS(0)}
	evals := float64(len(w.Native) * len(w.Responses))
	if opts.Progress != nil {
		fmt.Fprintf(opts.Progress, "ifeval: %d constraints × %d responses; %d sandbox workers, %d native goroutines (GOMAXPROCS %d)\n",
			fig.Constraints, fig.Responses, fig.Workers, fig.NativeGoroutines, fig.GOMAXPROCS)
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
		start = time.Now()
		if err := scoreNativeUnshared(ctx, w.Native, w.Responses, fig.Workers); err != nil {
			return nil, err
		}
		fig.NativeUnsharedEvalsPerS = max(fig.NativeUnsharedEvalsPerS, evals/time.Since(start).Seconds())
	}
	fig.NativeOverSandbox = fig.NativeEvalsPerS / fig.SandboxEvalsPerS
	fig.NativeUnsharedOverSandbox = fig.NativeUnsharedEvalsPerS / fig.SandboxEvalsPerS
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
		fmt.Fprintf(opts.Progress, "ifeval: sandbox %.0f evals/s, native %.0f evals/s (%.1fx; %.0f evals/s, %.1fx, with nothing shared among constraints), verdicts agree %.4f\n",
			fig.SandboxEvalsPerS, fig.NativeEvalsPerS, fig.NativeOverSandbox, fig.NativeUnsharedEvalsPerS, fig.NativeUnsharedOverSandbox, fig.VerdictAgreement)
	}
	return fig, nil
}

// scoreNative scores every function on every response natively, the responses shared among
// workers goroutines. Each goroutine checks all functions on its responses in one Score call,
// as a rollout checks all of a prompt's constraints on each of its responses, so what a
// response costs (its case-folded text, word count and so on) is worked out once per
// response and shared by the constraints.
func scoreNative(ctx context.Context, funcs, responses []string, workers int) (*reward.Result, error) {
	res := &reward.Result{Evals: make([][]reward.Eval, len(funcs))}
	for f := range res.Evals {
		res.Evals[f] = make([]reward.Eval, len(responses))
	}
	s := reward.WithNative(nil)
	err := forEach(len(responses), workers, func(r int) error {
		got, err := s.Score(ctx, funcs, responses[r:r+1])
		if err != nil {
			return err
		}
		for f := range funcs {
			res.Evals[f][r] = got.Evals[f][0]
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return res, nil
}

// scoreNativeUnshared scores each function on all responses in a call of its own, the
// functions shared among workers goroutines as the sandbox pool shares them among its workers.
func scoreNativeUnshared(ctx context.Context, funcs, responses []string, workers int) error {
	s := reward.WithNative(nil)
	return forEach(len(funcs), workers, func(f int) error {
		_, err := s.Score(ctx, funcs[f:f+1], responses)
		return err
	})
}

// forEach calls do(i) for every i below n on workers goroutines, each taking the next i as it
// finishes one; a goroutine stops at its first error, and the errors are returned joined.
func forEach(n, workers int, do func(i int) error) error {
	errs := make([]error, workers)
	var wg sync.WaitGroup
	var next atomic.Int64
	for g := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1) - 1)
				if i >= n {
					return
				}
				if err := do(i); err != nil {
					errs[g] = err
					return
				}
			}
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}
