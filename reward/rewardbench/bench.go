// Package rewardbench measures the reward sandbox against the two obvious alternatives on the
// same workload of real AutoIF verification functions and responses: in-process exec in one
// Python process (the reference scripts' way, unsandboxed) and one fresh Python process per
// evaluation; and against the floor of its own design, a bare fork per function.
package rewardbench

import (
	"bufio"
	"bytes"
	"context"
	"embed"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/autoif/autoif/reward"
)

//go:embed inprocess.py
var inprocessScript string

//go:embed oneshot.py
var oneshotScript string

// bundled is the AutoIF reference repository's sample data the benchmark reads (see
// data/autoif/PROVENANCE.md), built in so that the benchmark runs from any directory.
//
//go:embed data/autoif/*.jsonl
var bundled embed.FS

// Bundled returns the built-in AutoIF sample data as a directory for LoadWorkload.
func Bundled() fs.FS {
	sub, err := fs.Sub(bundled, "data/autoif")
	if err != nil {
		panic(err) // a constant, valid path: unreachable
	}
	return sub
}

// Workload is every function run on every response.
type Workload struct {
	Funcs     []string
	Responses []string
}

// LoadWorkload collects the distinct verification functions and sampled responses of the
// AutoIF reference data in dir (os.DirFS of a directory, or Bundled()): query_rft.jsonl and
// dpo_query_w_funcs.jsonl (functions and responses) and back_trans.jsonl (cross-validated
// functions).
func LoadWorkload(dir fs.FS) (*Workload, error) {
	w := &Workload{}
	seenF, seenR := map[string]bool{}, map[string]bool{}
	addF := func(s string) {
		if s != "" && !seenF[s] {
			seenF[s] = true
			w.Funcs = append(w.Funcs, s)
		}
	}
	addR := func(s string) {
		if !seenR[s] {
			seenR[s] = true
			w.Responses = append(w.Responses, s)
		}
	}
	for _, name := range []string{"query_rft.jsonl", "dpo_query_w_funcs.jsonl", "back_trans.jsonl"} {
		f, err := dir.Open(name)
		if err != nil {
			return nil, fmt.Errorf("workload: %w", err)
		}
		sc := bufio.NewScanner(f)
		sc.Buffer(make([]byte, 1<<20), 64<<20)
		for sc.Scan() {
			var row struct {
				EvalFunc json.RawMessage `json:"eval_func"`
				Answers  []string        `json:"gpt-answer"`
			}
			if err := json.Unmarshal(sc.Bytes(), &row); err != nil {
				f.Close()
				return nil, fmt.Errorf("workload %s: %w", name, err)
			}
			var entries []json.RawMessage
			_ = json.Unmarshal(row.EvalFunc, &entries)
			for _, e := range entries {
				var s string
				if json.Unmarshal(e, &s) == nil {
					addF(s)
					continue
				}
				var pair []json.RawMessage
				if json.Unmarshal(e, &pair) == nil && len(pair) > 0 && json.Unmarshal(pair[0], &s) == nil {
					addF(s)
				}
			}
			for _, a := range row.Answers {
				addR(a)
			}
		}
		err = sc.Err()
		f.Close()
		if err != nil {
			return nil, fmt.Errorf("workload %s: %w", name, err)
		}
	}
	if len(w.Funcs) == 0 || len(w.Responses) == 0 {
		return nil, fmt.Errorf("workload: %d functions, %d responses (want both)", len(w.Funcs), len(w.Responses))
	}
	return w, nil
}

// Options configure a run.
type Options struct {
	Pool reward.Options
	// ProcessSample is how many evaluations the process-per-evaluation baseline runs. Default 64.
	ProcessSample int
	// Rounds repeats the whole workload for the sandbox and in-process runs, so that they
	// last long enough to measure on a noisy machine. Default 10.
	Rounds int
	// Trials measures the sandbox, in-process and fork-floor ways this many times in turn and
	// keeps each one's best (Run only). Default 3.
	Trials int
	// Progress receives human-readable progress lines. Default io.Discard.
	Progress io.Writer
}

// Figures are the run's results; the CLI prints them as its last line. Each sandbox figure
// is compared with in-process exec given the same number of cores: one sandbox worker against
// one unsandboxed interpreter, and Workers sandbox workers against as many interpreters, each
// taking a share of the functions.
type Figures struct {
	Functions int    `json:"functions"`
	Responses int    `json:"responses"`
	Rounds    int    `json:"rounds"`
	Trials    int    `json:"trials"`
	Evals     int    `json:"evals"` // per way and trial, all rounds (process per eval: sampled)
	Workers   int    `json:"workers"`
	Python    string `json:"python"`
	// One worker against one interpreter.
	Sandbox1EvalsPerS   float64 `json:"sandbox_1_evals_per_s"`
	Inprocess1EvalsPerS float64 `json:"inprocess_1_evals_per_s"`
	SandboxOverInproc1  float64 `json:"sandbox_over_inprocess_1"`
	// Workers workers against Workers interpreters.
	SandboxSeconds            float64 `json:"sandbox_s"`
	SandboxEvalsPerS          float64 `json:"sandbox_evals_per_s"`
	InprocessSeconds          float64 `json:"inprocess_s"`
	InprocessEvalsPerS        float64 `json:"inprocess_evals_per_s"`
	ProcessPerEvalSampled     int     `json:"process_per_eval_sampled"`
	ProcessPerEvalSeconds     float64 `json:"process_per_eval_s"`
	ProcessPerEvalEvalsPerS   float64 `json:"process_per_eval_evals_per_s"`
	SandboxOverInprocess      float64 `json:"sandbox_over_inprocess"`
	SandboxOverProcessPerEval float64 `json:"sandbox_over_process_per_eval"`
	// The floor of any design that gives each function a process of its own: an unsandboxed
	// interpreter that imports what the zygote imports and runs each function in a fresh fork
	// of itself (no sandbox, no protocol, no Go), against in-process exec on as many cores. How
	// far the sandbox is from it is what its own machinery costs.
	Fork1EvalsPerS     float64      `json:"fork_1_evals_per_s"`
	ForkEvalsPerS      float64      `json:"fork_evals_per_s"`
	ForkOverInprocess1 float64      `json:"fork_over_inprocess_1"`
	ForkOverInprocess  float64      `json:"fork_over_inprocess"`
	SandboxOverFork1   float64      `json:"sandbox_over_fork_1"`
	SandboxOverFork    float64      `json:"sandbox_over_fork"`
	VerdictAgreement   float64      `json:"verdict_agreement"` // sandbox vs in-process
	SandboxStats       reward.Stats `json:"sandbox_stats"`
}

// Run measures the three ways on w.
func Run(ctx context.Context, w *Workload, opts Options) (*Figures, error) {
	if opts.ProcessSample <= 0 {
		opts.ProcessSample = 64
	}
	if opts.Rounds <= 0 {
		opts.Rounds = 10
	}
	if opts.Trials <= 0 {
		opts.Trials = 3
	}
	if opts.Progress == nil {
		opts.Progress = io.Discard
	}
	if opts.Pool.Deadline == 0 {
		opts.Pool.Deadline = 5 * time.Second // the reference scripts' alarm
	}
	one := opts.Pool
	one.Workers = 1
	pool1, err := reward.NewPool(ctx, one)
	if err != nil {
		return nil, err
	}
	defer pool1.Close()
	pool, err := reward.NewPool(ctx, opts.Pool)
	if err != nil {
		return nil, err
	}
	defer pool.Close()
	fig := &Figures{Functions: len(w.Funcs), Responses: len(w.Responses), Rounds: opts.Rounds, Trials: opts.Trials,
		Evals:   opts.Rounds * len(w.Funcs) * len(w.Responses),
		Workers: pool.Options().Workers, Python: pool.Python()}
	fmt.Fprintf(opts.Progress, "workload: %d functions × %d responses × %d rounds = %d evaluations, python %s\n",
		fig.Functions, fig.Responses, fig.Rounds, fig.Evals, fig.Python)

	// Each trial measures every way once, in turn; each way keeps its best trial. On a shared
	// machine a burst of load then costs one trial, not one way's whole figure.
	evals := float64(fig.Evals)
	keep := func(best *float64, secs float64) float64 {
		*best = max(*best, evals/secs)
		return evals / secs
	}
	var res *reward.Result
	var verdicts []string
	for trial := 1; trial <= opts.Trials; trial++ {
		secs, _, err := runSandbox(ctx, pool1, w, opts.Rounds)
		if err != nil {
			return nil, err
		}
		s1 := keep(&fig.Sandbox1EvalsPerS, secs)
		if _, secs, err = runInprocess(ctx, pool.Python(), w, opts.Pool.Deadline, opts.Rounds, 1, false); err != nil {
			return nil, err
		}
		i1 := keep(&fig.Inprocess1EvalsPerS, secs)
		if secs, res, err = runSandbox(ctx, pool, w, opts.Rounds); err != nil {
			return nil, err
		}
		sn := keep(&fig.SandboxEvalsPerS, secs)
		if verdicts, secs, err = runInprocess(ctx, pool.Python(), w, opts.Pool.Deadline, opts.Rounds, fig.Workers, false); err != nil {
			return nil, err
		}
		in := keep(&fig.InprocessEvalsPerS, secs)
		var f1, fn float64
		for _, procs := range slices.Compact([]int{1, fig.Workers}) {
			forked, secs, err := runInprocess(ctx, pool.Python(), w, opts.Pool.Deadline, opts.Rounds, procs, true)
			if err != nil {
				return nil, err
			}
			if !slices.Equal(forked, verdicts) {
				return nil, fmt.Errorf("fork floor: its verdicts differ from in-process exec's")
			}
			if procs == 1 {
				f1 = keep(&fig.Fork1EvalsPerS, secs)
			}
			if procs == fig.Workers {
				fn = keep(&fig.ForkEvalsPerS, secs)
			}
		}
		fmt.Fprintf(opts.Progress, "trial %d/%d, evaluations/s: 1 worker: sandbox %.0f, in-process %.0f, fork floor %.0f; %d workers: sandbox %.0f, in-process %.0f, fork floor %.0f\n",
			trial, opts.Trials, s1, i1, f1, fig.Workers, sn, in, fn)
	}
	fig.SandboxSeconds = evals / fig.SandboxEvalsPerS
	fig.InprocessSeconds = evals / fig.InprocessEvalsPerS
	fig.SandboxStats = pool.Stats()
	fig.SandboxOverInproc1 = fig.Sandbox1EvalsPerS / fig.Inprocess1EvalsPerS
	fig.SandboxOverInprocess = fig.SandboxEvalsPerS / fig.InprocessEvalsPerS
	fig.ForkOverInprocess1 = fig.Fork1EvalsPerS / fig.Inprocess1EvalsPerS
	fig.ForkOverInprocess = fig.ForkEvalsPerS / fig.InprocessEvalsPerS
	fig.SandboxOverFork1 = fig.Sandbox1EvalsPerS / fig.Fork1EvalsPerS
	fig.SandboxOverFork = fig.SandboxEvalsPerS / fig.ForkEvalsPerS
	fmt.Fprintf(opts.Progress, "best of %d: 1 worker: sandbox %.2fx in-process, fork floor %.2fx; %d workers: sandbox %.2fx, fork floor %.2fx; the sandbox reaches %.2f and %.2f of the floor\n",
		opts.Trials, fig.SandboxOverInproc1, fig.ForkOverInprocess1, fig.Workers, fig.SandboxOverInprocess,
		fig.ForkOverInprocess, fig.SandboxOverFork1, fig.SandboxOverFork)
	agree := 0
	for f, row := range res.Evals {
		for r, e := range row {
			if f < len(verdicts) && r < len(verdicts[f]) && verdictChar(e) == verdicts[f][r] {
				agree++
			}
		}
	}
	fig.VerdictAgreement = float64(agree) / float64(len(w.Funcs)*len(w.Responses))

	fmt.Fprintf(opts.Progress, "process per evaluation: %d sampled evaluations...\n", opts.ProcessSample)
	n, secs, err := runProcessPerEval(ctx, pool.Python(), w, opts.ProcessSample, fig.Workers)
	if err != nil {
		return nil, err
	}
	fig.ProcessPerEvalSampled = n
	fig.ProcessPerEvalSeconds = secs
	fig.ProcessPerEvalEvalsPerS = float64(n) / secs
	fmt.Fprintf(opts.Progress, "process per evaluation: %.1f evals/s\n", fig.ProcessPerEvalEvalsPerS)
	fig.SandboxOverProcessPerEval = fig.SandboxEvalsPerS / fig.ProcessPerEvalEvalsPerS
	return fig, nil
}

// runSandbox scores the workload rounds times, after one warm-up call per function (a
// long-running service is warm), and returns the seconds and the last round's result.
func runSandbox(ctx context.Context, pool *reward.Pool, w *Workload, rounds int) (float64, *reward.Result, error) {
	if _, err := pool.Score(ctx, w.Funcs, w.Responses[:1]); err != nil {
		return 0, nil, err
	}
	start := time.Now()
	var res *reward.Result
	var err error
	for range rounds {
		if res, err = pool.Score(ctx, w.Funcs, w.Responses); err != nil {
			return 0, nil, err
		}
	}
	return time.Since(start).Seconds(), res, nil
}

func verdictChar(e reward.Eval) byte {
	switch e.Outcome {
	case reward.Pass:
		return 'p'
	case reward.Fail:
		return 'f'
	}
	return 'e'
}

// runInprocess runs the workload in procs unsandboxed interpreters at once, each taking every
// procs-th function, and returns the verdicts (one string per function) and the seconds the
// slowest spent on its share. With fork, each interpreter runs each function in a fresh fork
// of itself, loaded with the zygote's modules.
func runInprocess(ctx context.Context, python string, w *Workload, deadline time.Duration, rounds, procs int, fork bool) ([]string, float64, error) {
	verdicts := make([]string, len(w.Funcs))
	elapsed := make([]float64, procs)
	errs := make([]error, procs)
	var wg sync.WaitGroup
	for p := range procs {
		var idx []int
		var funcs []string
		for f := p; f < len(w.Funcs); f += procs {
			idx = append(idx, f)
			funcs = append(funcs, w.Funcs[f])
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			v, secs, err := runInprocessOne(ctx, python, funcs, w.Responses, deadline, rounds, fork)
			if err != nil {
				errs[p] = err
				return
			}
			elapsed[p] = secs
			for j, f := range idx {
				if j < len(v) {
					verdicts[f] = v[j]
				}
			}
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return nil, 0, err
	}
	return verdicts, slices.Max(elapsed), nil
}

func runInprocessOne(ctx context.Context, python string, funcs, responses []string, deadline time.Duration, rounds int, fork bool) ([]string, float64, error) {
	in, err := json.Marshal(map[string]any{"funcs": funcs, "responses": responses,
		"timeout": max(1, int(deadline/time.Second)), "rounds": rounds,
		"fork": fork, "preload": reward.ZygoteModules()})
	if err != nil {
		return nil, 0, err
	}
	cmd := exec.CommandContext(ctx, python, "-I", "-B", "-c", inprocessScript)
	cmd.Stdin = bytes.NewReader(in)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	cmd.Dir = os.TempDir()
	if err := cmd.Run(); err != nil {
		return nil, 0, fmt.Errorf("in-process baseline: %w: %s", err, stderr.String())
	}
	var out struct {
		Elapsed  float64  `json:"elapsed_s"`
		Verdicts []string `json:"verdicts"`
	}
	if err := json.Unmarshal(stdout.Bytes(), &out); err != nil {
		return nil, 0, fmt.Errorf("in-process baseline output: %w", err)
	}
	return out.Verdicts, out.Elapsed, nil
}

// runProcessPerEval runs n evaluations spread evenly over the workload, each in a fresh
// interpreter, parallel across the same number of workers as the pool.
func runProcessPerEval(ctx context.Context, python string, w *Workload, n, parallel int) (int, float64, error) {
	total := len(w.Funcs) * len(w.Responses)
	n = min(n, total)
	jobs := make(chan int)
	var firstErr atomic.Value
	var wg sync.WaitGroup
	start := time.Now()
	for range parallel {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for k := range jobs {
				f, r := k/len(w.Responses), k%len(w.Responses)
				in, _ := json.Marshal(map[string]string{"func": w.Funcs[f], "response": w.Responses[r]})
				cmd := exec.CommandContext(ctx, python, "-I", "-B", "-c", oneshotScript)
				cmd.Stdin = bytes.NewReader(in)
				cmd.Dir = os.TempDir()
				if err := cmd.Run(); err != nil {
					firstErr.CompareAndSwap(nil, fmt.Errorf("process-per-eval baseline: %w", err))
				}
			}
		}()
	}
	for i := range n {
		select {
		case jobs <- i * total / n:
		case <-ctx.Done():
		}
	}
	close(jobs)
	wg.Wait()
	if err, _ := firstErr.Load().(error); err != nil {
		return 0, 0, err
	}
	if err := ctx.Err(); err != nil {
		return 0, 0, err
	}
	return n, time.Since(start).Seconds(), nil
}
