package trainer

import (
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"testing"

	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"

	"github.com/autoif/autoif/model"
)

// checkGrad compares analytic gradients with central differences on float64 data.
func checkGrad(t *testing.T, name string, analytic []float64, x []float64, f func() float64, idx []int) {
	t.Helper()
	const h = 1e-6
	for _, i := range idx {
		orig := x[i]
		x[i] = orig + h
		fp := f()
		x[i] = orig - h
		fm := f()
		x[i] = orig
		num := (fp - fm) / (2 * h)
		if d := math.Abs(num - analytic[i]); d > 1e-6+1e-4*math.Abs(num) {
			t.Errorf("%s[%d]: analytic %.9g, numeric %.9g", name, i, analytic[i], num)
		}
	}
}

func randData(rng *rand.Rand, n int) []float64 {
	d := make([]float64, n)
	for i := range d {
		d[i] = rng.NormFloat64()
	}
	return d
}

// randParam is a float64 param of shape with N(mean, sd²) values and a gradient sink.
func randParam(rng *rand.Rand, mean, sd float64, shape ...int) *param {
	n := tensor.Shape(shape).TotalSize()
	p := &param{shape: shape, f64: make([]float64, n), grad64: make([]float64, n)}
	for i := range p.f64 {
		p.f64[i] = mean + sd*rng.NormFloat64()
	}
	return p
}

// checkOpGradients checks a fused op's gradients — with respect to its input x and, through
// the sinks, to every element of every param — against central differences in float64:
// cost = Σ op(x)·r for a random r.
func checkOpGradients(t *testing.T, rng *rand.Rand, xShape []int, params []*param, op func(x *G.Node) (*G.Node, error)) {
	t.Helper()
	g := G.NewGraph()
	xd := randData(rng, tensor.Shape(xShape).TotalSize())
	x := G.NodeFromAny(g, tensor.New(tensor.WithShape(xShape...), tensor.WithBacking(xd)), G.WithName("x"))
	y, err := op(x)
	if err != nil {
		t.Fatal(err)
	}
	r := G.NodeFromAny(g, makeTensor(tensor.Float64, y.Shape(), randData(rng, y.Shape().TotalSize())))
	prod, err := G.HadamardProd(y, r)
	if err != nil {
		t.Fatal(err)
	}
	cost, err := G.Sum(prod)
	if err != nil {
		t.Fatal(err)
	}
	var costVal G.Value
	G.Read(cost, &costVal)
	if _, err := G.Grad(cost, x); err != nil {
		t.Fatal(err)
	}
	vm := G.NewTapeMachine(g, G.BindDualValues(x))
	defer vm.Close()
	run := func() float64 {
		for _, p := range params {
			clear(p.grad64)
		}
		vm.Reset()
		if err := vm.RunAll(); err != nil {
			t.Fatal(err)
		}
		return toFloat64(costVal.Data())[0]
	}
	run()
	gv, err := x.Grad()
	if err != nil {
		t.Fatal(err)
	}
	dx := toFloat64(gv.Data())
	dparams := make([][]float64, len(params))
	for i, p := range params {
		dparams[i] = append([]float64(nil), p.grad64...)
	}
	all := func(n int) []int {
		idx := make([]int, n)
		for i := range idx {
			idx[i] = i
		}
		return idx
	}
	checkGrad(t, "x", dx, xd, run, all(len(xd)))
	for i, p := range params {
		checkGrad(t, fmt.Sprint("param ", i, " ", p.shape), dparams[i], p.f64, run, all(len(p.f64)))
	}
}

// TestLayerOpGradients checks the fused decoder layer (RMSNorm, projections with and without
// biases, attention with RoPE and GQA, SwiGLU, residuals), with and without checkpointing.
func TestLayerOpGradients(t *testing.T) {
	cases := []struct {
		name               string
		S, T, H, KV, hd, D int
		bias, checkpoint   bool
	}{
		{"GQA with biases, 2 sequences", 2, 3, 4, 2, 4, 6, true, false},
		{"GQA with biases, checkpointed", 2, 3, 4, 2, 4, 6, true, true},
		{"MHA without biases", 1, 4, 2, 2, 6, 5, false, false},
		{"1-token sequences", 2, 1, 4, 2, 4, 6, true, true},
		{"9 positions (odd causal split)", 1, 9, 2, 2, 6, 4, false, false},
	}
	for ci, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			rng := rand.New(rand.NewPCG(uint64(ci), 1))
			D, I, qw, kvw := tc.D, 5, tc.H*tc.hd, tc.KV*tc.hd
			var params []*param
			p := func(mean, sd float64, shape ...int) *param {
				pr := randParam(rng, mean, sd, shape...)
				params = append(params, pr)
				return pr
			}
			lin := func(out, in int, bias bool) linParams {
				l := linParams{w: p(0, 0.5, out, in)}
				if bias {
					l.b = p(0, 0.3, out)
				}
				return l
			}
			sp := &layerSpec{
				inNorm: p(1, 0.2, D), q: lin(qw, D, tc.bias), k: lin(kvw, D, tc.bias), v: lin(kvw, D, tc.bias),
				o: lin(D, qw, false), postNorm: p(1, 0.2, D), gate: lin(I, D, false), up: lin(I, D, false), down: lin(D, I, false),
				attn: newAttnSpec(tc.S, tc.T, tc.H, tc.KV, tc.hd, model.RopeInvFreq(&model.Config{HeadDim: tc.hd, RopeTheta: 1e4})),
				eps:  1e-5, D: D, I: I, qw: qw, kvw: kvw, checkpoint: tc.checkpoint, keep: true, ar: newArena(),
			}
			checkOpGradients(t, rng, []int{tc.S * tc.T, D}, params, func(x *G.Node) (*G.Node, error) { return layerOp(sp, x) })
		})
	}
}

// TestHeadOpGradients checks the fused final norm + lm_head + token log-probs, in blocks of
// one row, of a few, and of all of them, with a padding slot.
func TestHeadOpGradients(t *testing.T) {
	const N, D, V = 5, 4, 7
	for _, chunk := range []int{1, 2, 4} {
		t.Run(fmt.Sprint("chunk ", chunk), func(t *testing.T) {
			rng := rand.New(rand.NewPCG(uint64(chunk), 3))
			st := &batchState{dt: tensor.Float64, M: 5, cur: &packed{
				rows: []int{0, 2, 3, 4, 0}, toks: []int{3, 0, 6, 6, 0}, seqOf: []int{0, 0, 1, 1, -1}}}
			norm, head := randParam(rng, 1, 0.2, D), randParam(rng, 0, 0.7, V, D)
			sp := &headSpec{norm: norm, head: head, eps: 1e-6, D: D, V: V, chunk: chunk, st: st, ar: newArena()}
			checkOpGradients(t, rng, []int{N, D}, []*param{norm, head}, func(x *G.Node) (*G.Node, error) { return headOp(sp, x) })
		})
	}
}

// TestModelGradientsMatchFiniteDifferences checks the whole graph, every parameter tensor of
// tiny GQA/bias/tied and MHA/untied models, in float64.
func TestModelGradientsMatchFiniteDifferences(t *testing.T) {
	for _, tc := range []struct {
		name            string
		gqa, bias, tied bool
	}{{"gqa_bias_tied", true, true, true}, {"mha_untied", false, false, false}} {
		t.Run(tc.name, func(t *testing.T) {
			w := tinyWeights(t, tinyConfig(tc.gqa, tc.bias, tc.tied), 5)
			seqs := tinySeqs()
			T, M := graphShape(seqs)
			gr, err := buildGraph(w, len(seqs), T, M, tensor.Float64)
			if err != nil {
				t.Fatal(err)
			}
			p, err := pack(seqs, []float64{1, 0.5, 1}, len(seqs), T, M, w.Config.VocabSize)
			if err != nil {
				t.Fatal(err)
			}
			seed := []float64{0.7, -1.3, 0.4}
			f := func() float64 {
				_, c, err := gr.run(p, linearLoss(seed), nil)
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
			rng := rand.New(rand.NewPCG(1, 2))
			for i, n := range w.Tensors() {
				idx := make([]int, 12)
				for k := range idx {
					idx[k] = rng.IntN(len(gr.f64[i]))
				}
				checkGrad(t, n.Name, grads[i], gr.f64[i], f, idx)
			}
		})
	}
}

// TestLoRALayerOpGradients checks the fused decoder layer with a LoRA adapter on every
// projection and the base weights frozen: the gradients of the input and of every A and B
// element, with dropout off and on (a fixed seed, so every evaluation draws the same mask),
// with and without checkpointing (the recompute must regenerate the mask).
func TestLoRALayerOpGradients(t *testing.T) {
	cases := []struct {
		name       string
		dropout    float64
		checkpoint bool
	}{
		{"no dropout", 0, false},
		{"no dropout, checkpointed", 0, true},
		{"dropout 0.3", 0.3, false},
		{"dropout 0.3, checkpointed", 0.3, true},
	}
	for ci, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			rng := rand.New(rand.NewPCG(uint64(ci), 7))
			const S, T, H, KV, hd, D, I, r = 2, 3, 4, 2, 4, 6, 5, 3
			qw, kvw := H*hd, KV*hd
			frozen := func(mean, sd float64, shape ...int) *param {
				p := randParam(rng, mean, sd, shape...)
				p.grad64 = nil
				return p
			}
			var params []*param
			seed := uint64(42)
			lin := func(out, in int, bias bool) linParams {
				l := linParams{w: frozen(0, 0.5, out, in)}
				if bias {
					l.b = frozen(0, 0.3, out)
				}
				// B is not PEFT's zero start: a zero B would make A's gradient zero.
				a, b := randParam(rng, 0, 0.5, r, in), randParam(rng, 0, 0.5, out, r)
				params = append(params, a, b)
				l.lora = &loraParams{a: a, b: b, scale: 1.7, dropout: tc.dropout, seed: &seed}
				return l
			}
			sp := &layerSpec{
				inNorm: frozen(1, 0.2, D), q: lin(qw, D, true), k: lin(kvw, D, true), v: lin(kvw, D, true),
				o: lin(D, qw, false), postNorm: frozen(1, 0.2, D), gate: lin(I, D, false), up: lin(I, D, false), down: lin(D, I, false),
				attn: newAttnSpec(S, T, H, KV, hd, model.RopeInvFreq(&model.Config{HeadDim: hd, RopeTheta: 1e4})),
				eps:  1e-5, D: D, I: I, qw: qw, kvw: kvw, checkpoint: tc.checkpoint, keep: true, ar: newArena(),
			}
			checkOpGradients(t, rng, []int{S * T, D}, params, func(x *G.Node) (*G.Node, error) { return layerOp(sp, x) })
		})
	}
}

// The dropout mask keeps about 1-p of the elements, scales them by 1/(1-p), is the same for
// the same key and differs between keys.
func TestLoRADropoutMask(t *testing.T) {
	const n, p = 100000, 0.25
	src := make([]float64, n)
	for i := range src {
		src[i] = 1
	}
	a, b, c := make([]float64, n), make([]float64, n), make([]float64, n)
	dropInto(a, src, p, dropKey(1, 3, wQ))
	dropInto(b, src, p, dropKey(1, 3, wQ))
	dropInto(c, src, p, dropKey(1, 3, wK))
	kept, same, diff := 0, true, 0
	for i := range a {
		if a[i] != 0 {
			kept++
			if a[i] != 1/(1-p) {
				t.Fatalf("kept element %d is %g, want %g", i, a[i], 1/(1-p))
			}
		}
		same = same && a[i] == b[i]
		if a[i] != c[i] {
			diff++
		}
	}
	if f := float64(kept) / n; math.Abs(f-(1-p)) > 0.01 {
		t.Errorf("kept fraction %.4f, want %.2f", f, 1-p)
	}
	if !same {
		t.Error("the same key gave two masks")
	}
	if diff < n/4 {
		t.Errorf("another projection's mask differs in only %d of %d elements", diff, n)
	}
}
