package trainer

import (
	"context"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"gorgonia.org/tensor"

	"github.com/autoif/autoif/model"
)

// tinyAdapter is an adapter on targets whose B is random too (PEFT starts it at zero, which
// would leave A without a gradient and the adapter without an effect).
func tinyAdapter(t testing.TB, cfg *model.Config, lc model.LoRAConfig, seed uint64) *model.Adapter {
	t.Helper()
	a, err := model.NewAdapter(cfg, lc, seed)
	if err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(seed, 9))
	for _, l := range a.Layers {
		for _, target := range model.LoRATargets { // in order: the same seed, the same adapter
			if p := l[target]; p != nil {
				for i := range p.B.Data {
					p.B.Data[i] = float32(rng.NormFloat64() * 0.3)
				}
			}
		}
	}
	return a
}

// A LoRA graph's gradients of every adapter tensor match finite differences in float64, with
// dropout on (the seed fixed, so every evaluation draws the same masks), on a model with
// biases and tied embeddings and on one without.
func TestLoRAModelGradientsMatchFiniteDifferences(t *testing.T) {
	for _, tc := range []struct {
		name            string
		gqa, bias, tied bool
		targets         []string
		dropout         float64
	}{
		{"gqa_bias_tied all seven, dropout 0.2", true, true, true, model.LoRATargets, 0.2},
		{"mha_untied q,v, no dropout", false, false, false, []string{"q_proj", "v_proj"}, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := tinyWeights(t, tinyConfig(tc.gqa, tc.bias, tc.tied), 5)
			a := tinyAdapter(t, w.Config, model.LoRAConfig{Rank: 3, Alpha: 5, Dropout: tc.dropout, Targets: tc.targets}, 2)
			seqs := tinySeqs()
			T, M := graphShape(seqs)
			seed := uint64(77)
			gr, err := newGraph(w, len(seqs), T, M, graphOptions{dt: tensor.Float64, withGrad: true, adapter: a, dropSeed: &seed})
			if err != nil {
				t.Fatal(err)
			}
			p, err := pack(seqs, []float64{1, 0.5, 1}, len(seqs), T, M, w.Config.VocabSize)
			if err != nil {
				t.Fatal(err)
			}
			f := func() float64 {
				_, c, err := gr.run(p, linearLoss([]float64{0.7, -1.3, 0.4}), nil)
				if err != nil {
					t.Fatal(err)
				}
				return c
			}
			f()
			last, err := gr.gradsF64()
			if err != nil {
				t.Fatal(err)
			}
			// A copy: gradsF64 is the last run's, and checkGrad's runs overwrite it.
			grads := make([][]float64, len(last))
			for i, g := range last {
				grads[i] = slices.Clone(g)
			}
			ts := a.Tensors()
			if len(grads) != len(ts) {
				t.Fatalf("%d gradients for %d adapter tensors", len(grads), len(ts))
			}
			rng := rand.New(rand.NewPCG(1, 2))
			for i, n := range ts {
				idx := make([]int, 8)
				for k := range idx {
					idx[k] = rng.IntN(len(gr.f64[i]))
				}
				checkGrad(t, n.Name, grads[i], gr.f64[i], f, idx)
			}
			for _, p := range gr.params {
				if p.grad64 != nil {
					t.Fatal("a base weight has a gradient sink: the base must stay frozen")
				}
			}
		})
	}
}

// A forward-only LoRA graph (no dropout) scores sequences as the sampler does with the same
// adapter applied (model.Model.WithAdapter), and a graph without the adapter as the base.
func TestLoRAGraphLogProbsMatchInferencePath(t *testing.T) {
	w := tinyWeights(t, tinyConfig(true, true, true), 3)
	a := tinyAdapter(t, w.Config, model.LoRAConfig{Rank: 4, Alpha: 8, Dropout: 0.5, Targets: model.LoRATargets}, 4)
	seqs := tinySeqs()
	T, M := graphShape(seqs)
	ones := []float64{1, 1, 1}
	p, err := pack(seqs, ones, len(seqs), T, M, w.Config.VocabSize)
	if err != nil {
		t.Fatal(err)
	}
	adapted, err := model.New(w).WithAdapter(a)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name    string
		adapter *model.Adapter
		m       *model.Model
	}{{"adapter", a, adapted}, {"base", nil, model.New(w)}} {
		t.Run(tc.name, func(t *testing.T) {
			gr, err := newGraph(w, len(seqs), T, M, graphOptions{dt: tensor.Float32, adapter: tc.adapter})
			if err != nil {
				t.Fatal(err)
			}
			got, _, err := gr.run(p, linearLoss(ones), nil)
			if err != nil {
				t.Fatal(err)
			}
			for i, s := range seqs {
				lp, err := tc.m.LogProbs(s.Prompt, s.Completion)
				if err != nil {
					t.Fatal(err)
				}
				var want float64
				for _, v := range lp {
					want += float64(v)
				}
				if d := math.Abs(got[i] - want); d > 1e-4*max(1, math.Abs(want)) {
					t.Errorf("seq %d: graph %.7f, model %.7f", i, got[i], want)
				}
			}
		})
	}
	// The adapter changes the scores (else the comparison above proves nothing).
	base, _, _ := runGraph(t, w, seqs, graphOptions{dt: tensor.Float32})
	withA, _, _ := runGraph(t, w, seqs, graphOptions{dt: tensor.Float32, adapter: a})
	if d := maxRelDiff(base, withA); d < 1e-3 {
		t.Errorf("the adapter moved the log-probs by only %.2g", d)
	}
}

func loraOptions(dropout float64) Options {
	opts := DefaultOptions()
	opts.Optim.LR = 1e-2
	opts.BatchSize = 2
	opts.LoRA = &model.LoRAConfig{Rank: 4, Alpha: 8, Dropout: dropout, Targets: model.LoRATargets}
	opts.Seed = 3
	return opts
}

func loadAdapterT(t *testing.T, dir string) *model.Adapter {
	t.Helper()
	a, err := model.LoadAdapter(dir)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// A LoRA run writes PEFT adapters (checkpoints and the final output), never the base, and an
// interrupted run resumed from its checkpoint ends with exactly the adapter of an
// uninterrupted one: adapter, AdamW moments, step, data position and dropout masks survive.
func TestLoRAResumedRunMatchesUninterruptedRun(t *testing.T) {
	start := tinyModelDir(t)
	base := RunOptions{ModelDir: start, Trainer: loraOptions(0.1), Epochs: 3, SaveEvery: 2, KeepLast: 2, Seed: 7, Logger: quietLogger()}
	full := base
	full.OutDir = filepath.Join(t.TempDir(), "full")
	tr, _, err := RunDPO(context.Background(), full, loadFixedPairs(t, 6))
	if err != nil {
		t.Fatal(err)
	}
	part := base
	part.OutDir = filepath.Join(t.TempDir(), "part")
	part.Steps = 4
	if _, _, err := RunDPO(context.Background(), part, loadFixedPairs(t, 6)); err != nil {
		t.Fatal(err)
	}
	part.Steps = 0
	if _, _, err := RunDPO(context.Background(), part, loadFixedPairs(t, 6)); err != nil {
		t.Fatal(err)
	}
	a, b := loadAdapterT(t, full.OutDir), loadAdapterT(t, part.OutDir)
	live := tr.Adapter().Tensors()
	var moved float64
	for i, p := range a.Tensors() {
		q := b.Tensors()[i]
		for j := range p.Data {
			if p.Data[j] != q.Data[j] || p.Data[j] != live[i].Data[j] {
				t.Fatalf("%s[%d]: uninterrupted %g, resumed %g, trainer %g", p.Name, j, p.Data[j], q.Data[j], live[i].Data[j])
			}
			if strings.HasSuffix(p.Name, "lora_B.weight") {
				moved = max(moved, math.Abs(float64(p.Data[j])))
			}
		}
	}
	if moved == 0 {
		t.Fatal("B is still zero: the adapter did not train")
	}
	if want, _ := filepath.Abs(start); a.BaseModel != want {
		t.Errorf("base_model_name_or_path %q, want %q", a.BaseModel, want)
	}
	dirs, err := Checkpoints(part.OutDir)
	if err != nil || len(dirs) != 2 {
		t.Fatalf("checkpoints %v (%v)", dirs, err)
	}
	for _, dir := range []string{full.OutDir, dirs[1]} {
		if !model.IsAdapter(dir) {
			t.Errorf("%s holds no adapter", dir)
		}
		for _, f := range []string{"model.safetensors", "config.json"} {
			if _, err := os.Stat(filepath.Join(dir, f)); err == nil {
				t.Errorf("%s holds %s: a LoRA run must not write the base", dir, f)
			}
		}
	}
	// The base stays as it was.
	w0, err := model.Load(start)
	if err != nil {
		t.Fatal(err)
	}
	for i, p := range tr.Policy.Tensors() {
		if !slices.Equal(p.Data, w0.Tensors()[i].Data) {
			t.Fatalf("base tensor %s changed", p.Name)
		}
	}
	// A full fine-tuning run cannot resume from an adapter checkpoint, nor the reverse.
	ft := part
	ft.Trainer = DefaultOptions()
	ft.Steps = 20
	if _, _, err := RunDPO(context.Background(), ft, loadFixedPairs(t, 6)); err == nil || !strings.Contains(err.Error(), "LoRA adapter") {
		t.Errorf("full fine-tuning resumed from an adapter checkpoint: %v", err)
	}
	other := part
	other.Trainer = loraOptions(0.1)
	other.Trainer.LoRA.Rank = 8
	other.Steps = 20
	if _, _, err := RunDPO(context.Background(), other, loadFixedPairs(t, 6)); err == nil || !strings.Contains(err.Error(), "rank 4") {
		t.Errorf("a rank-8 run resumed from a rank-4 adapter: %v", err)
	}
}

// The first LoRA step starts at the reference (B = 0: the policy is the base), so its loss is
// ln 2; the base's BF16 values, kept as BF16, train the adapter exactly as their float32
// widening does.
func TestLoRAOnABF16BaseEqualsItsFloat32Widening(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "bf16")
	if err := tinyWeights(t, tinyConfig(true, true, true), 8).Save(dir, model.SaveOptions{DType: model.BF16}); err != nil {
		t.Fatal(err)
	}
	run := func(w *model.Weights) (*Trainer, []Metrics) {
		tr, err := New(w, loraOptions(0.2))
		if err != nil {
			t.Fatal(err)
		}
		pairs := fixedPairs(4, 32, 5)
		var ms []Metrics
		for range 3 {
			m, err := tr.Step(pairs)
			if err != nil {
				t.Fatal(err)
			}
			ms = append(ms, m)
		}
		return tr, ms
	}
	half, err := model.LoadWeights(dir, model.LoadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if h, _ := half.Layers[0].QProj.Weight.Half(); h == nil {
		t.Fatal("LoadWeights widened the BF16 checkpoint: nothing to compare")
	}
	f32, err := model.Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	trH, mH := run(half)
	trF, mF := run(f32)
	if math.Abs(mH[0].Loss-math.Ln2) > 1e-6 {
		t.Errorf("first step's loss %.9f, want ln 2 (the adapter starts as a no-op)", mH[0].Loss)
	}
	for i := range mH {
		if math.Abs(mH[i].Loss-mF[i].Loss) > 1e-6 || math.Abs(mH[i].GradNorm-mF[i].GradNorm) > 1e-6*mF[i].GradNorm {
			t.Errorf("step %d: BF16 base loss %.9f grad norm %.9g, float32 %.9f %.9g", i+1, mH[i].Loss, mH[i].GradNorm, mF[i].Loss, mF[i].GradNorm)
		}
	}
	if mH[2].Loss == mH[0].Loss {
		t.Error("the loss did not move in 3 steps")
	}
	for i, p := range trH.Adapter().Tensors() {
		q := trF.Adapter().Tensors()[i]
		for j := range p.Data {
			if d := math.Abs(float64(p.Data[j] - q.Data[j])); d > 1e-6 {
				t.Fatalf("%s[%d]: BF16 base %g, float32 %g", p.Name, j, p.Data[j], q.Data[j])
			}
		}
	}
	// Full fine-tuning cannot update BF16 bits in place.
	if _, err := New(half, DefaultOptions()); err == nil || !strings.Contains(err.Error(), "half-precision") {
		t.Errorf("full fine-tuning on half weights: %v", err)
	}
}

// widenF16 is exact on normal, subnormal, signed-zero and infinite values.
func TestWidenF16(t *testing.T) {
	for _, c := range []struct {
		bits uint16
		want float32
	}{{0x3c00, 1}, {0xc000, -2}, {0x7bff, 65504}, {0x0001, 0x1p-24}, {0x03ff, 1023 * 0x1p-24}, {0x0400, 0x1p-14},
		{0x3555, 0x1.554p-2}, {0x7c00, float32(math.Inf(1))}, {0xfc00, float32(math.Inf(-1))}, {0x0000, 0}} {
		if got := widenF16([]uint16{c.bits})[0]; got != c.want {
			t.Errorf("%#04x: %g, want %g", c.bits, got, c.want)
		}
	}
	if got := widenF16([]uint16{0x8000})[0]; math.Float32bits(got) != 1<<31 {
		t.Errorf("0x8000: %g, want -0", got)
	}
}
