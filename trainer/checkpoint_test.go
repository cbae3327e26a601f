package trainer

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/autoif/autoif/atomicfile"
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

// crashSaveEnv names the checkpoint directory that TestACrashMidSaveKeepsTheNewestCheckpoint's
// child process saves again and dies in.
const crashSaveEnv = "AUTOIF_TRAINER_CRASH_SAVE"

// A process killed between the two renames of a checkpoint save (the old directory moved aside,
// the new one not yet in) loses nothing: Checkpoints still lists the newest complete checkpoint,
// it loads, the run resumes from it, and the next save clears what the crash left.
func TestACrashMidSaveKeepsTheNewestCheckpoint(t *testing.T) {
	opts := DefaultOptions()
	opts.Optim.LR = 1e-3
	opts.BatchSize = 2
	if dir := os.Getenv(crashSaveEnv); dir != "" {
		// The child: save the same step again and die by SIGKILL where a crash hurts most.
		w, err := model.Load(filepath.Join(filepath.Dir(filepath.Dir(dir)), "start"))
		if err != nil {
			t.Fatal(err)
		}
		tr, err := New(w, opts)
		if err != nil {
			t.Fatal(err)
		}
		st, err := tr.LoadCheckpoint(dir)
		if err != nil {
			t.Fatal(err)
		}
		atomicfile.BetweenRenames = func(string) { syscall.Kill(os.Getpid(), syscall.SIGKILL) }
		tr.SaveCheckpoint(dir, st, "")
		t.Fatal("SaveCheckpoint returned: the crash hook did not run")
	}

	start := tinyModelDir(t)
	ro := RunOptions{ModelDir: start, Trainer: opts, SaveEvery: 2, KeepLast: 2, Seed: 7, Logger: quietLogger(),
		OutDir: filepath.Join(filepath.Dir(start), "out"), Steps: 2}
	if _, _, err := RunDPO(context.Background(), ro, loadFixedPairs(t, 6)); err != nil {
		t.Fatal(err)
	}
	ckpt := CheckpointDir(ro.OutDir, 2)
	cmd := exec.Command(os.Args[0], "-test.run=^TestACrashMidSaveKeepsTheNewestCheckpoint$")
	cmd.Env = append(os.Environ(), crashSaveEnv+"="+ckpt)
	out, err := cmd.CombinedOutput()
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
		t.Fatalf("child ended with %v, want killed mid-save; output:\n%s", err, out)
	}
	if _, err := os.Stat(ckpt); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("after the crash %s: %v, want it missing (moved aside)", ckpt, err)
	}

	dirs, err := Checkpoints(ro.OutDir)
	if err != nil || len(dirs) != 1 {
		t.Fatalf("Checkpoints after the crash: %v, %v; want the step-2 checkpoint's old copy", dirs, err)
	}
	if _, err := model.Load(ckpt); err != nil {
		t.Fatalf("model.Load(%s) after the crash: %v", ckpt, err)
	}
	ro.Steps = 4
	tr, _, err := RunDPO(context.Background(), ro, loadFixedPairs(t, 6))
	if err != nil {
		t.Fatal(err)
	}
	if tr.StepCount() != 4 {
		t.Fatalf("resumed run ended at step %d, want 4", tr.StepCount())
	}
	ents, err := os.ReadDir(ro.OutDir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), ".") {
			t.Errorf("%s left in %s after later saves", e.Name(), ro.OutDir)
		}
	}
}
