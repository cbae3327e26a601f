package trainer

import (
	"fmt"
	"math"
	"testing"

	"gorgonia.org/tensor"

	"github.com/autoif/autoif/model"
)

// runGraph builds a graph of seqs with o and returns its log-probs, loss and float64 gradients.
func runGraph(t *testing.T, w *model.Weights, seqs []Seq, o graphOptions) ([]float64, float64, [][]float64) {
	t.Helper()
	T, M := graphShape(seqs)
	gr, err := newGraph(w, len(seqs), T, M, o)
	if err != nil {
		t.Fatal(err)
	}
	p, err := pack(seqs, []float64{1, 0.5, 1}, len(seqs), T, M, w.Config.VocabSize)
	if err != nil {
		t.Fatal(err)
	}
	var grads [][]float32
	if o.withGrad && o.dt == tensor.Float32 {
		for _, t := range w.Tensors() {
			grads = append(grads, make([]float32, len(t.Data)))
		}
	}
	lp, cost, err := gr.run(p, linearLoss([]float64{0.7, -1.3, 0.4}), grads)
	if err != nil {
		t.Fatal(err)
	}
	var g64 [][]float64
	if o.withGrad {
		if gr.last != nil {
			g64 = gr.last
		} else {
			for _, g := range grads {
				g64 = append(g64, toFloat64(g))
			}
		}
	}
	return append([]float64(nil), lp...), cost, g64
}

func maxRelDiff(a, b []float64) float64 {
	var scale, d float64
	for i := range a {
		scale = max(scale, math.Abs(a[i]))
		d = max(d, math.Abs(a[i]-b[i]))
	}
	return d / max(scale, 1e-30)
}

// The head in blocks of 1 or 3 scored rows gives the log-probs and gradients of one block
// holding every row (the unchunked computation), in float64 and float32.
func TestHeadChunksGiveTheUnchunkedLogProbsAndGradients(t *testing.T) {
	for _, tied := range []bool{true, false} {
		w := tinyWeights(t, tinyConfig(true, true, tied), 9)
		seqs := tinySeqs()
		for _, dt := range []tensor.Dtype{tensor.Float64, tensor.Float32} {
			lpAll, cAll, gAll := runGraph(t, w, seqs, graphOptions{dt: dt, withGrad: true, headChunk: 1 << 20})
			for _, chunk := range []int{1, 3} {
				lp, c, g := runGraph(t, w, seqs, graphOptions{dt: dt, withGrad: true, headChunk: chunk})
				if d := maxRelDiff(lpAll, lp); d > 1e-6 || math.Abs(c-cAll) > 1e-6*math.Abs(cAll) {
					t.Errorf("tied=%v %v chunk %d: log-probs %v, unchunked %v", tied, dt, chunk, lp, lpAll)
				}
				for i := range g {
					if d := maxRelDiff(gAll[i], g[i]); d > 1e-6 {
						t.Errorf("tied=%v %v chunk %d: gradient of %s differs by %.3g (relative to its largest)", tied, dt, chunk, w.Tensors()[i].Name, d)
					}
				}
			}
		}
	}
}

// Checkpointing recomputes the very same forward: the same log-probs and gradients.
func TestCheckpointingChangesNoGradient(t *testing.T) {
	w := tinyWeights(t, tinyConfig(true, true, true), 4)
	lp, _, g := runGraph(t, w, tinySeqs(), graphOptions{dt: tensor.Float32, withGrad: true})
	lpc, _, gc := runGraph(t, w, tinySeqs(), graphOptions{dt: tensor.Float32, withGrad: true, checkpoint: true})
	if fmt.Sprint(lp) != fmt.Sprint(lpc) {
		t.Errorf("log-probs %v, checkpointed %v", lp, lpc)
	}
	for i := range g {
		if fmt.Sprint(g[i]) != fmt.Sprint(gc[i]) {
			t.Errorf("gradient of %s differs with checkpointing", w.Tensors()[i].Name)
		}
	}
}

// A reference whose values are BF16 is kept as BF16 and scores exactly as the float32 graph
// of the same values; one with a value that is not stays float32.
func TestBF16ReferenceScoresExactlyAsFloat32(t *testing.T) {
	w := tinyWeights(t, tinyConfig(true, true, true), 6)
	for _, p := range w.Tensors() {
		for i, v := range p.Data {
			p.Data[i] = math.Float32frombits(math.Float32bits(v) &^ 0xffff)
		}
	}
	ref := newFrozen(w)
	for i, b := range ref.bf16 {
		if b == nil {
			t.Fatalf("tensor %s: BF16 values kept as float32", ref.names[i])
		}
	}
	if want := 2 * w.Config.NumParams(); int64(ref.bytes()) != want {
		t.Errorf("reference takes %d bytes, want %d (2 per parameter)", ref.bytes(), want)
	}
	seqs := tinySeqs()
	lp32, c32, _ := runGraph(t, w, seqs, graphOptions{dt: tensor.Float32})
	lpRef, cRef, _ := runGraph(t, w, seqs, graphOptions{dt: tensor.Float32, vals: ref})
	if fmt.Sprint(lp32) != fmt.Sprint(lpRef) || c32 != cRef {
		t.Errorf("BF16 reference log-probs %v, float32 graph %v", lpRef, lp32)
	}
	w.Norm.Data[0] += 1e-3
	ref.set(len(ref.names)-1, w.Norm.Data)
	if ref.bf16[len(ref.names)-1] != nil || ref.f32[len(ref.names)-1][0] != w.Norm.Data[0] {
		t.Errorf("a value that is not a BF16 must keep its tensor in float32")
	}
}

// A step whose micro-batch is split to fit a small activation budget takes the same update
// as the unsplit step.
func TestSplitMicroBatchesTakeTheSameStep(t *testing.T) {
	var results [][]float32
	var losses []float64
	for _, budget := range []int64{1 << 40, 1} {
		w := tinyWeights(t, tinyConfig(true, false, true), 21)
		opts := DefaultOptions()
		opts.Optim.LR = 1e-2
		opts.BatchSize = 8
		opts.ActivationBudget = budget
		tr, err := New(w, opts)
		if err != nil {
			t.Fatal(err)
		}
		pairs := fixedPairs(8, w.Config.VocabSize, 1)
		if got, want := tr.pairMicroBatch(pairs), map[bool]int{true: 8, false: 1}[budget > 1]; got != want {
			t.Fatalf("budget %d: micro-batches of %d pairs, want %d", budget, got, want)
		}
		m, err := tr.Step(pairs)
		if err != nil {
			t.Fatal(err)
		}
		losses = append(losses, m.Loss)
		var flat []float32
		for _, p := range w.Tensors() {
			flat = append(flat, p.Data...)
		}
		results = append(results, flat)
	}
	if math.Abs(losses[0]-losses[1]) > 1e-9 {
		t.Errorf("loss %g unsplit, %g split", losses[0], losses[1])
	}
	for i := range results[0] {
		if d := math.Abs(float64(results[0][i] - results[1][i])); d > 1e-6 {
			t.Fatalf("weight %d: %g unsplit, %g split", i, results[0][i], results[1][i])
		}
	}
}
