package trainer

import (
	"bytes"
	"context"
	"path/filepath"
	"strings"
	"testing"

	"github.com/autoif/autoif/model"
	"github.com/autoif/autoif/torchref"
)

func savedTinyModel(t *testing.T) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "policy")
	if err := tinyWeights(t, tinyConfig(true, false, false), 3).Save(dir, model.SaveOptions{}); err != nil {
		t.Fatal(err)
	}
	return dir
}

// Without an interpreter the bench runs the Go side only: a line per round, the best step
// of them, a profile of the first round, and no torch figures.
func TestBenchAgainstTorchWithoutPython(t *testing.T) {
	var progress, prof bytes.Buffer
	o := TorchBenchOptions{Dir: savedTinyModel(t), Threads: 1, Rounds: 2, Progress: &progress, CPUProfile: &prof,
		Bench: BenchOptions{PairsPerStep: 2, PromptLen: 4, ResponseLen: 3, Steps: 1, Seed: 1}}
	r, err := BenchAgainstTorch(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	if r.Go.StepSeconds <= 0 || r.GoStepCPUSeconds <= 0 || r.GoPeakRSSMB <= 0 || r.PeakGFLOPs <= 0 {
		t.Errorf("Go figures %+v", r)
	}
	if r.TorchStepSeconds != 0 || r.TorchPeakRSSMB != 0 {
		t.Errorf("torch figures without a Python: %+v", r)
	}
	if got := strings.Count(progress.String(), " go:    "); got != 2 || strings.Contains(progress.String(), "torch") {
		t.Errorf("want one Go line per round and no torch line:\n%s", progress.String())
	}
	if prof.Len() == 0 {
		t.Error("no CPU profile")
	}
	for _, bad := range []TorchBenchOptions{{Dir: o.Dir, Threads: 1}, {Dir: o.Dir, Rounds: 1}, {Dir: o.Dir, Threads: 1, Rounds: 1, TorchMicroBatch: -1}} {
		if _, err := BenchAgainstTorch(context.Background(), bad); err == nil {
			t.Errorf("%+v accepted", bad)
		}
	}
	if _, err := BenchAgainstTorch(context.Background(), TorchBenchOptions{Dir: t.TempDir(), Threads: 1, Rounds: 1}); err == nil {
		t.Error("a directory without a checkpoint accepted")
	}
}

// With PyTorch the same steps run in scripts/torch_train_bench.py, each round after the Go
// one, and its best step and peak RSS come back.
func TestBenchAgainstTorchRunsTheTorchBaseline(t *testing.T) {
	py, why := torchref.FindPython(context.Background(), "")
	if py == "" {
		t.Skip(why)
	}
	var progress bytes.Buffer
	o := TorchBenchOptions{Dir: savedTinyModel(t), Threads: 1, Rounds: 1, Python: py, Progress: &progress,
		Bench: BenchOptions{PairsPerStep: 2, PromptLen: 4, ResponseLen: 3, Steps: 1, Seed: 1}}
	r, err := BenchAgainstTorch(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	if r.TorchStepSeconds <= 0 || r.TorchStepCPUSeconds <= 0 || r.TorchPeakRSSMB <= 0 {
		t.Errorf("torch figures %+v", r)
	}
	if !strings.Contains(progress.String(), "round 1 torch: ") {
		t.Errorf("no torch round line:\n%s", progress.String())
	}
}
