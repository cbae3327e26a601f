package model

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
)

// BenchGenerate measures both batch sizes on a real checkpoint and compares the batch-1 weight
// stream with the machine's read rate; without an interpreter it skips the torch side, and it
// refuses a decode longer than the model's context before loading anything.
func TestBenchGenerateMeasuresEveryBatchAndChecksTheContext(t *testing.T) {
	cfg := tinyConfig(ArchLlama)
	w, err := Init(cfg, 1)
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(t.TempDir(), "policy")
	if err := w.Save(dir, SaveOptions{}); err != nil {
		t.Fatal(err)
	}
	var progress strings.Builder
	o := GenerateBenchOptions{Dir: dir, Threads: 1, PromptLen: 4, NewTokens: 3, Rounds: 2, Seed: 1, Progress: &progress}
	r, err := BenchGenerate(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	for _, b := range BenchGenerateBatches {
		if r.GoTokensPerS[b] <= 0 || r.GoTokensPerCPUS[b] <= 0 || r.TorchTokensPerS[b] != 0 {
			t.Errorf("batch %d: go %g tokens/s (%g per CPU-s), torch %g without a Python", b, r.GoTokensPerS[b], r.GoTokensPerCPUS[b], r.TorchTokensPerS[b])
		}
	}
	if r.WeightBytes <= 0 || r.WeightGBPerS <= 0 || r.ReadGBPerS <= 0 || r.MemcpyGBPerS <= 0 {
		t.Errorf("figures %+v", r)
	}
	if got := strings.Count(progress.String(), " go    batch "); got != 2*len(BenchGenerateBatches) {
		t.Errorf("%d go round lines, want one per round and batch:\n%s", got, progress.String())
	}
	o.NewTokens = cfg.MaxPositionEmbeddings
	if _, err := BenchGenerate(context.Background(), o); err == nil || !strings.Contains(err.Error(), "context") {
		t.Errorf("a decode past the context: got %v", err)
	}
}
