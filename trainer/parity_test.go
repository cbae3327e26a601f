package trainer

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/autoif/autoif/model"
)

// TestDPOStepMatchesPyTorch replays scripts/torch_dpo.py's step: the same model, reference and
// pairs, sigmoid DPO with beta 0.1, one SGD step without clipping, as `autoif train dpo
// --optim sgd --steps 1 --max-grad-norm 0` runs it (micro-batches of 2: the step accumulates
// two of them). The loss must match within 1e-6 and every weight within 1e-5 relative.
func TestDPOStepMatchesPyTorch(t *testing.T) {
	fx := filepath.Join("testdata", "dpo_parity")
	var exp map[string]any
	data, err := os.ReadFile(filepath.Join(fx, "expected.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(data, &exp); err != nil {
		t.Fatal(err)
	}
	pairs, err := LoadPairs(filepath.Join(fx, "pairs.jsonl"), TextOptions{})
	if err != nil {
		t.Fatal(err)
	}
	opts := DefaultOptions()
	opts.Loss.Beta = exp["beta"].(float64)
	opts.Optim = OptimOptions{Name: "sgd", LR: exp["lr"].(float64), MaxGradNorm: 0}
	opts.BatchSize = 2
	out := t.TempDir()
	_, m, err := RunDPO(context.Background(), RunOptions{
		ModelDir: filepath.Join(fx, "policy"), RefDir: filepath.Join(fx, "reference"), OutDir: out,
		Trainer: opts, GradAccum: 2, Steps: 1, NoShuffle: true, Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
	}, pairs)
	if err != nil {
		t.Fatal(err)
	}
	if d := math.Abs(m.Loss - exp["loss"].(float64)); d > 1e-6 {
		t.Errorf("loss %.9f, torch %.9f (diff %.2g)", m.Loss, exp["loss"], d)
	}
	for _, k := range []string{"rewards/chosen", "rewards/rejected", "rewards/accuracies", "logps/chosen", "logps/rejected", "grad_norm"} {
		if d := math.Abs(m.Map()[k] - exp[k].(float64)); d > 1e-5*max(1, math.Abs(exp[k].(float64))) {
			t.Errorf("%s %.7g, torch %.7g", k, m.Map()[k], exp[k])
		}
	}
	got, err := model.Load(out)
	if err != nil {
		t.Fatal(err)
	}
	st, err := model.OpenSafetensors(filepath.Join(fx, "expected.safetensors"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	want := map[string][]float32{}
	for _, ti := range st.Tensors {
		if want[ti.Name], err = st.Read(ti); err != nil {
			t.Fatal(err)
		}
	}
	start, err := model.Load(filepath.Join(fx, "policy"))
	if err != nil {
		t.Fatal(err)
	}
	var worst, moved float64
	var where string
	for i, p := range got.Tensors() {
		w, ok := want[p.Name]
		if !ok || len(w) != len(p.Data) {
			t.Fatalf("tensor %s missing or resized in torch's weights", p.Name)
		}
		for j := range w {
			// Relative to the weight, floored at 0.01 (the weights' std is 0.2): a weight the
			// step moved to ~0 keeps the float32 rounding of its update (~1e-8), which is
			// not a 1e-5 fraction of nothing in any implementation.
			rel := math.Abs(float64(p.Data[j]-w[j])) / max(math.Abs(float64(w[j])), 1e-2)
			if rel > worst {
				worst, where = rel, fmt.Sprintf("%s[%d]: go %.9g, torch %.9g", p.Name, j, p.Data[j], w[j])
			}
			moved = max(moved, math.Abs(float64(w[j]-start.Tensors()[i].Data[j])))
		}
	}
	t.Logf("loss %.9f vs torch %.9f (diff %.2g); max relative weight diff %.3g at %s; largest update %.3g", m.Loss, exp["loss"], math.Abs(m.Loss-exp["loss"].(float64)), worst, where, moved)
	if worst > 1e-5 {
		t.Errorf("max relative weight difference %.3g > 1e-5", worst)
	}
	if moved < 1e-3 {
		t.Errorf("the step barely moved the weights (%g): the comparison proves nothing", moved)
	}
}

// TestLoRADPOStepMatchesPyTorch replays scripts/torch_dpo.py --lora's step: a LoRA adapter of
// rank 4, alpha 6 on all seven projections of a frozen policy, the reference being the policy
// with the adapter off, sigmoid DPO with beta 0.1 and one SGD step without clipping, taken here
// in two accumulated micro-batches. The loss must match within 1e-6 and every adapter weight
// within 1e-5 relative.
func TestLoRADPOStepMatchesPyTorch(t *testing.T) {
	fx := filepath.Join("testdata", "dpo_lora_parity")
	var exp map[string]any
	data, err := os.ReadFile(filepath.Join(fx, "expected.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(data, &exp); err != nil {
		t.Fatal(err)
	}
	pairs, err := LoadPairs(filepath.Join(fx, "pairs.jsonl"), TextOptions{})
	if err != nil {
		t.Fatal(err)
	}
	start, err := model.LoadAdapter(filepath.Join(fx, "adapter"))
	if err != nil {
		t.Fatal(err)
	}
	base, err := model.LoadWeights(filepath.Join(fx, "policy"), model.LoadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	opts := DefaultOptions()
	opts.Loss.Beta = exp["beta"].(float64)
	opts.Optim = OptimOptions{Name: "sgd", LR: exp["lr"].(float64), MaxGradNorm: 0}
	opts.BatchSize = 2
	opts.LoRA = &start.Config
	opts.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	if start.Config.Rank != int(exp["rank"].(float64)) || start.Config.Alpha != exp["alpha"].(float64) {
		t.Fatalf("fixture adapter %+v does not match expected.json", start.Config)
	}
	tr, err := New(base, opts)
	if err != nil {
		t.Fatal(err)
	}
	for i, p := range tr.Adapter().Tensors() {
		copy(p.Data, start.Tensors()[i].Data)
	}
	m, err := tr.Step(pairs)
	if err != nil {
		t.Fatal(err)
	}
	if d := math.Abs(m.Loss - exp["loss"].(float64)); d > 1e-6 {
		t.Errorf("loss %.9f, torch %.9f (diff %.2g)", m.Loss, exp["loss"], d)
	}
	for _, k := range []string{"rewards/chosen", "rewards/rejected", "rewards/accuracies", "logps/chosen", "logps/rejected", "grad_norm"} {
		if d := math.Abs(m.Map()[k] - exp[k].(float64)); d > 1e-5*max(1, math.Abs(exp[k].(float64))) {
			t.Errorf("%s %.7g, torch %.7g", k, m.Map()[k], exp[k])
		}
	}
	st, err := model.OpenSafetensors(filepath.Join(fx, "expected.safetensors"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	want := map[string][]float32{}
	for _, ti := range st.Tensors {
		if want[ti.Name], err = st.Read(ti); err != nil {
			t.Fatal(err)
		}
	}
	var worst, movedA, movedB float64
	var where string
	for i, p := range tr.Adapter().Tensors() {
		w, ok := want[p.Name]
		if !ok || len(w) != len(p.Data) {
			t.Fatalf("tensor %s missing or resized in torch's adapter", p.Name)
		}
		for j := range w {
			// Relative to the weight, floored at 0.01 as in TestDPOStepMatchesPyTorch.
			rel := math.Abs(float64(p.Data[j]-w[j])) / max(math.Abs(float64(w[j])), 1e-2)
			if rel > worst {
				worst, where = rel, fmt.Sprintf("%s[%d]: go %.9g, torch %.9g", p.Name, j, p.Data[j], w[j])
			}
			moved := math.Abs(float64(w[j] - start.Tensors()[i].Data[j]))
			if strings.HasSuffix(p.Name, "lora_A.weight") {
				movedA = max(movedA, moved)
			} else {
				movedB = max(movedB, moved)
			}
		}
	}
	t.Logf("loss %.9f vs torch %.9f; max relative adapter diff %.3g at %s; largest update A %.3g, B %.3g", m.Loss, exp["loss"], worst, where, movedA, movedB)
	if worst > 1e-5 {
		t.Errorf("max relative adapter weight difference %.3g > 1e-5", worst)
	}
	if movedA < 1e-3 || movedB < 1e-3 {
		t.Errorf("the step barely moved the adapter (A %g, B %g): the comparison proves nothing", movedA, movedB)
	}
}
