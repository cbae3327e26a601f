package rewardbench

import (
	"context"
	"testing"
	"time"

	"github.com/autoif/autoif/reward"
)

// A small run of the whole benchmark: every figure is measured and the sandbox agrees with
// the in-process baseline on every verdict of the real functions.
func TestBenchmarkOnRealData(t *testing.T) {
	w, err := LoadWorkload(Bundled())
	if err != nil {
		t.Fatal(err)
	}
	if len(w.Funcs) < 20 || len(w.Responses) < 400 {
		t.Errorf("workload %d functions × %d responses, want thousands of evaluations", len(w.Funcs), len(w.Responses))
	}
	w.Responses = w.Responses[:40]
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	fig, err := Run(ctx, w, Options{Pool: reward.Options{Workers: 2}, ProcessSample: 4, Rounds: 2, Trials: 2})
	if err != nil {
		t.Fatal(err)
	}
	if fig.SandboxEvalsPerS <= 0 || fig.InprocessEvalsPerS <= 0 || fig.ProcessPerEvalEvalsPerS <= 0 ||
		fig.Sandbox1EvalsPerS <= 0 || fig.Inprocess1EvalsPerS <= 0 || fig.Fork1EvalsPerS <= 0 ||
		fig.ForkEvalsPerS <= 0 || fig.SandboxOverFork <= 0 {
		t.Errorf("figures %+v", fig)
	}
	if fig.VerdictAgreement != 1 {
		t.Errorf("sandbox and in-process verdicts agree on %.4f of evaluations, want all", fig.VerdictAgreement)
	}
	t.Logf("%+v", fig)
}

// A small run of the IFEval benchmark: both sides on the same number of threads, every rate
// measured, and the native verdicts equal to the Python functions' in the sandbox.
func TestIFEvalBenchmark(t *testing.T) {
	w, err := reward.LoadIFEvalWorkload("../../ifeval/testdata/official_gpt4/input_response_data_gpt4_20231107_145030.jsonl", 4)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	fig, err := RunIFEval(ctx, w, Options{Pool: reward.Options{Workers: 2}, Rounds: 1})
	if err != nil {
		t.Fatal(err)
	}
	if fig.Responses != 4 || fig.Constraints < 600 || fig.Workers != 2 || fig.NativeGoroutines != fig.Workers {
		t.Errorf("workload and threads %+v", fig)
	}
	if fig.SandboxEvalsPerS <= 0 || fig.NativeEvalsPerS <= 0 || fig.NativeUnsharedEvalsPerS <= 0 {
		t.Errorf("rates %+v", fig)
	}
	if fig.VerdictAgreement != 1 {
		t.Errorf("native and sandbox verdicts agree on %.4f of evaluations, want all", fig.VerdictAgreement)
	}
	t.Logf("%+v", fig)
}
