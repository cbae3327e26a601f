package trainer

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/autoif/autoif/model"
)

func quietLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// writePairs saves pairs as a token-id JSONL file.
func writePairs(t *testing.T, path string, pairs []*Pair) {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	enc := json.NewEncoder(f)
	for _, p := range pairs {
		enc.Encode(map[string]any{"pair_id": p.ID, "prompt_ids": p.Prompt, "chosen_ids": p.Chosen, "rejected_ids": p.Rejected})
	}
}

func tinyModelDir(t *testing.T) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "start")
	if err := tinyWeights(t, tinyConfig(true, true, false), 8).Save(dir, model.SaveOptions{}); err != nil {
		t.Fatal(err)
	}
	return dir
}

func loadFixedPairs(t *testing.T, n int) []*Pair {
	t.Helper()
	path := filepath.Join(t.TempDir(), "pairs.jsonl")
	writePairs(t, path, fixedPairs(n, 32, 5))
	pairs, err := LoadPairs(path, TextOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return pairs
}

// A run interrupted after a checkpoint and resumed ends with exactly the weights of an
// uninterrupted run: weights, AdamW moments, step and the shuffled data position all survive.
func TestResumedRunMatchesUninterruptedRun(t *testing.T) {
	start := tinyModelDir(t)
	opts := DefaultOptions()
	opts.Optim.LR = 1e-3
	opts.BatchSize = 2
	base := RunOptions{ModelDir: start, Trainer: opts, Epochs: 3, SaveEvery: 2, KeepLast: 2, Seed: 7, Logger: quietLogger()}

	full := base
	full.OutDir = filepath.Join(t.TempDir(), "full")
	_, _, err := RunDPO(context.Background(), full, loadFixedPairs(t, 6)) // 3 steps per epoch, 9 in all
	if err != nil {
		t.Fatal(err)
	}

	part := base
	part.OutDir = filepath.Join(t.TempDir(), "part")
	part.Steps = 4 // "crashes" after step 4's checkpoint
	if _, _, err := RunDPO(context.Background(), part, loadFixedPairs(t, 6)); err != nil {
		t.Fatal(err)
	}
	part.Steps = 0
	tr, _, err := RunDPO(context.Background(), part, loadFixedPairs(t, 6))
	if err != nil {
		t.Fatal(err)
	}
	if tr.StepCount() != 9 {
		t.Fatalf("resumed run ended at step %d, want 9", tr.StepCount())
	}
	a, err := model.Load(full.OutDir)
	if err != nil {
		t.Fatal(err)
	}
	b, err := model.Load(part.OutDir)
	if err != nil {
		t.Fatal(err)
	}
	for i, p := range a.Tensors() {
		q := b.Tensors()[i]
		for j := range p.Data {
			if p.Data[j] != q.Data[j] {
				t.Fatalf("%s[%d]: uninterrupted %g, resumed %g", p.Name, j, p.Data[j], q.Data[j])
			}
		}
	}
	dirs, err := Checkpoints(part.OutDir)
	if err != nil {
		t.Fatal(err)
	}
	if len(dirs) != 2 || filepath.Base(dirs[1]) != "checkpoint-00000009" {
		t.Errorf("kept checkpoints %v, want the newest 2 ending at step 9", dirs)
	}
	var st State
	data, _ := os.ReadFile(filepath.Join(dirs[1], stateFile))
	if err := json.Unmarshal(data, &st); err != nil || st.GlobalStep != 9 || st.Epoch != 2 || st.Offset != 6 || st.Seed != 7 {
		t.Errorf("trainer_state.json %+v (err %v)", st, err)
	}
}

// A checkpoint the trainer writes loads in model/ and in the PyTorch reference reader
// (scripts/torch_golden.py --check) with the same logits. Skipped without python3-torch.
func TestCheckpointLoadsInModelAndPyTorch(t *testing.T) {
	start := tinyModelDir(t)
	opts := DefaultOptions()
	opts.Optim.LR = 1e-2
	out := filepath.Join(t.TempDir(), "out")
	tr, _, err := RunDPO(context.Background(), RunOptions{ModelDir: start, OutDir: out, Trainer: opts, Steps: 2, Logger: quietLogger()}, loadFixedPairs(t, 4))
	if err != nil {
		t.Fatal(err)
	}
	dir := CheckpointDir(out, 2)
	w, err := model.Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	for i, p := range w.Tensors() {
		for j, v := range p.Data {
			if v != tr.Policy.Tensors()[i].Data[j] {
				t.Fatalf("%s differs from the trainer's weights after loading", p.Name)
			}
		}
	}
	tokens := []int{1, 5, 9, 3, 7, 11, 2, 30}
	m := model.New(w)
	got, err := m.Forward(m.NewCache(1, len(tokens)), [][]int{tokens}, true)
	if err != nil {
		t.Fatal(err)
	}
	py := "/usr/bin/python3"
	if err := exec.Command(py, "-c", "import torch").Run(); err != nil {
		t.Skipf("no python3-torch at %s: %v", py, err)
	}
	tj, _ := json.Marshal(tokens)
	if err := os.WriteFile(filepath.Join(dir, "tokens.json"), tj, 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(py, filepath.Join("..", "scripts", "torch_golden.py"), "--check", dir)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("torch_golden.py --check: %v: %s", err, out)
	}
	st, err := model.OpenSafetensors(filepath.Join(dir, "torch_logits.safetensors"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	want, err := st.Read(st.Tensors[0])
	if err != nil {
		t.Fatal(err)
	}
	var worst float64
	for i := range want {
		worst = max(worst, math.Abs(float64(got[0][i]-want[i])))
	}
	if len(want) != len(got[0]) || worst > 1e-4 {
		t.Errorf("logits of the trained checkpoint: model/ and torch differ by %g", worst)
	}
}
