package trainer

import (
	"math"
	"math/rand/v2"
	"slices"
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
