package trainer

import (
	"math"
	"math/rand/v2"
	"runtime"
	"testing"
	"weak"

	"gorgonia.org/tensor"

	"github.com/autoif/autoif/model"
)

// tinyConfig is small enough for finite differences over every parameter.
func tinyConfig(gqa, bias, tied bool) *model.Config {
	bos := 1
	c := &model.Config{
		Architecture: model.ArchLlama, HiddenSize: 16, IntermediateSize: 24, NumHiddenLayers: 2,
		NumAttentionHeads: 4, NumKeyValueHeads: 4, HeadDim: 4, RMSNormEps: 1e-6, RopeTheta: 1e4,
		VocabSize: 32, MaxPositionEmbeddings: 64, TieWordEmbeddings: tied,
		BOSTokenID: &bos, EOSTokenIDs: []int{2}, InitializerRange: 0.3,
	}
	if gqa {
		c.NumKeyValueHeads = 2
	}
	if bias {
		c.Architecture = model.ArchQwen2
		c.QKVBias = true
	}
	return c
}

func tinyWeights(t testing.TB, cfg *model.Config, seed uint64) *model.Weights {
	t.Helper()
	w, err := model.Init(cfg, seed)
	if err != nil {
		t.Fatal(err)
	}
	// Non-trivial norms and biases so their gradients are exercised.
	rng := rand.New(rand.NewPCG(seed, 7))
	for _, p := range w.Tensors() {
		if len(p.Shape) == 1 {
			for i := range p.Data {
				p.Data[i] += float32(rng.NormFloat64() * 0.2)
			}
		}
	}
	return w
}

func tinySeqs() []Seq {
	return []Seq{
		{Prompt: []int{1, 5, 9}, Completion: []int{3, 7, 11, 2}},
		{Prompt: []int{1, 4}, Completion: []int{30, 2}},
		{Prompt: []int{1, 8, 8, 6, 12}, Completion: []int{13}},
	}
}

func TestGraphLogProbsMatchInferencePath(t *testing.T) {
	for _, tc := range []struct {
		name            string
		gqa, bias, tied bool
	}{{"mha_tied", false, false, true}, {"gqa_untied", true, false, false}, {"gqa_bias", true, true, true}} {
		t.Run(tc.name, func(t *testing.T) {
			w := tinyWeights(t, tinyConfig(tc.gqa, tc.bias, tc.tied), 3)
			seqs := tinySeqs()
			T, M := graphShape(seqs)
			gr, err := buildGraph(w, len(seqs), T, M, tensor.Float32)
			if err != nil {
				t.Fatal(err)
			}
			ones := []float64{1, 1, 1}
			p, err := pack(seqs, ones, len(seqs), T, M, w.Config.VocabSize)
			if err != nil {
				t.Fatal(err)
			}
			got, _, err := gr.run(p, linearLoss(ones), nil)
			if err != nil {
				t.Fatal(err)
			}
			m := model.New(w)
			var worst float64
			defer func() { t.Logf("largest |graph - model| summed log-prob difference: %.2g", worst) }()
			for i, s := range seqs {
				lp, err := m.LogProbs(s.Prompt, s.Completion)
				if err != nil {
					t.Fatal(err)
				}
				var want float64
				for _, v := range lp {
					want += float64(v)
				}
				d := math.Abs(got[i] - want)
				worst = max(worst, d)
				if d > 1e-4*max(1, math.Abs(want)) {
					t.Errorf("seq %d: graph %.7f, model %.7f", i, got[i], want)
				}
			}
		})
	}
}

// linearLoss is Σ seed·logp: its gradient with respect to the log-probs is seed.
func linearLoss(seed []float64) lossFunc {
	return func(lp []float64) (float64, []float64) {
		var c float64
		d := make([]float64, len(lp))
		for i := range seed {
			c += seed[i] * lp[i]
			d[i] = seed[i]
		}
		return c, d
	}
}

// gorgonia's tape machine adds a run's parameter gradients onto the previous run's; the graph
// must hand out each run's own.
func TestRepeatedRunsGiveTheSameGradients(t *testing.T) {
	w := tinyWeights(t, tinyConfig(true, true, false), 3)
	seqs := tinySeqs()
	T, M := graphShape(seqs)
	gr, err := buildGraph(w, len(seqs), T, M, tensor.Float32)
	if err != nil {
		t.Fatal(err)
	}
	p, err := pack(seqs, []float64{1, 1, 1}, len(seqs), T, M, w.Config.VocabSize)
	if err != nil {
		t.Fatal(err)
	}
	var norms []float64
	for range 3 {
		grads := make([][]float32, len(gr.params))
		for i, t := range w.Tensors() {
			grads[i] = make([]float32, len(t.Data))
		}
		if _, _, err := gr.run(p, linearLoss([]float64{1, -1, 1}), grads); err != nil {
			t.Fatal(err)
		}
		norms = append(norms, gradNorm(grads))
	}
	if norms[0] == 0 || norms[1] != norms[0] || norms[2] != norms[0] {
		t.Errorf("gradient norms over three identical runs: %v", norms)
	}
}

// A graph the trainer drops (its shape cache evicts it, or the trainer goes away) must be
// garbage: gorgonia's tape machine has a finalizer, so any reference from the graph's ops back
// to the graph forms a cycle Go never collects, and every batch shape leaked its activations.
func TestDiscardedGraphIsCollected(t *testing.T) {
	w := tinyWeights(t, tinyConfig(true, true, false), 3)
	seqs := tinySeqs()
	T, M := graphShape(seqs)
	for _, withGrad := range []bool{true, false} {
		gr, err := newGraph(w, len(seqs), T, M, graphOptions{dt: tensor.Float32, withGrad: withGrad})
		if err != nil {
			t.Fatal(err)
		}
		p, err := pack(seqs, []float64{1, 1, 1}, len(seqs), T, M, w.Config.VocabSize)
		if err != nil {
			t.Fatal(err)
		}
		if _, _, err := gr.run(p, linearLoss([]float64{1, -1, 1}), nil); err != nil {
			t.Fatal(err)
		}
		state := weak.Make(gr.batchState)
		machine := weak.Make(&gr.vm)
		gr = nil
		// The first collection runs the machine's finalizer, a later one frees the rest.
		for i := 0; i < 10 && (state.Value() != nil || machine.Value() != nil); i++ {
			runtime.GC()
		}
		if state.Value() != nil || machine.Value() != nil {
			t.Errorf("withGrad=%v: a dropped graph is still reachable after 10 collections", withGrad)
		}
	}
}
