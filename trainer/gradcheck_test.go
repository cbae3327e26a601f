package trainer

import (
	"fmt"
	"math"
	"math/rand/v2"
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

// TestOpGradients checks every op the model graph is built from — gorgonia's gather
// (ByIndices along axis 0) and Add, and the fused ops with their hand-written backward passes
// — against central differences in float64: cost = Σ op(inputs)·r for a random r, every
// element of every input.
func TestOpGradients(t *testing.T) {
	idx := func(g *G.ExprGraph, ids ...int) *G.Node {
		return G.NodeFromAny(g, tensor.New(tensor.WithShape(len(ids)), tensor.WithBacking(ids)))
	}
	toks := []int{3, 0, 4, 4}
	attnGQA := newAttnSpec(2, 3, 4, 2, 4, model.RopeInvFreq(&model.Config{HeadDim: 4, RopeTheta: 1e4}))
	attnMHA := newAttnSpec(1, 4, 2, 2, 6, model.RopeInvFreq(&model.Config{HeadDim: 6, RopeTheta: 100}))
	attn1 := newAttnSpec(2, 1, 4, 2, 4, model.RopeInvFreq(&model.Config{HeadDim: 4, RopeTheta: 1e4}))
	attn9 := newAttnSpec(1, 9, 2, 2, 6, model.RopeInvFreq(&model.Config{HeadDim: 6, RopeTheta: 100}))
	cases := []struct {
		name   string
		shapes [][]int
		op     func(g *G.ExprGraph, in []*G.Node) (*G.Node, error)
	}{
		{"ByIndices axis 0 (embedding gather, repeated rows)", [][]int{{5, 3}}, func(g *G.ExprGraph, in []*G.Node) (*G.Node, error) {
			return G.ByIndices(in[0], idx(g, 4, 0, 0, 2, 4, 1), 0)
		}},
		{"Add (residual)", [][]int{{3, 4}, {3, 4}}, func(g *G.ExprGraph, in []*G.Node) (*G.Node, error) {
			return G.Add(in[0], in[1])
		}},
		{"linear with bias", [][]int{{3, 4}, {5, 4}, {5}}, func(g *G.ExprGraph, in []*G.Node) (*G.Node, error) {
			return linearOp(in[0], in[1], in[2])
		}},
		{"linear without bias", [][]int{{3, 4}, {2, 4}}, func(g *G.ExprGraph, in []*G.Node) (*G.Node, error) {
			return linearOp(in[0], in[1], nil)
		}},
		{"rmsnorm", [][]int{{3, 5}, {5}}, func(g *G.ExprGraph, in []*G.Node) (*G.Node, error) {
			return rmsNormOp(in[0], in[1], 1e-5)
		}},
		{"swiglu", [][]int{{3, 4}, {3, 4}}, func(g *G.ExprGraph, in []*G.Node) (*G.Node, error) {
			return swigluOp(in[0], in[1])
		}},
		{"token log-probs", [][]int{{4, 6}}, func(g *G.ExprGraph, in []*G.Node) (*G.Node, error) {
			return tokenLogpOp(in[0], func() []int { return toks })
		}},
		{"attention GQA with RoPE, 2 sequences", [][]int{{6, 16}, {6, 8}, {6, 8}}, func(g *G.ExprGraph, in []*G.Node) (*G.Node, error) {
			return attentionOp(attnGQA, in[0], in[1], in[2])
		}},
		{"attention MHA", [][]int{{4, 12}, {4, 12}, {4, 12}}, func(g *G.ExprGraph, in []*G.Node) (*G.Node, error) {
			return attentionOp(attnMHA, in[0], in[1], in[2])
		}},
		{"attention, 1-token sequences", [][]int{{2, 16}, {2, 8}, {2, 8}}, func(g *G.ExprGraph, in []*G.Node) (*G.Node, error) {
			return attentionOp(attn1, in[0], in[1], in[2])
		}},
		{"attention, 9 positions (odd causal split)", [][]int{{9, 12}, {9, 12}, {9, 12}}, func(g *G.ExprGraph, in []*G.Node) (*G.Node, error) {
			return attentionOp(attn9, in[0], in[1], in[2])
		}},
	}
	for ci, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			rng := rand.New(rand.NewPCG(uint64(ci), 1))
			g := G.NewGraph()
			var nodes []*G.Node
			var datas [][]float64
			for i, s := range tc.shapes {
				d := randData(rng, tensor.Shape(s).TotalSize())
				datas = append(datas, d)
				nodes = append(nodes, G.NodeFromAny(g, tensor.New(tensor.WithShape(s...), tensor.WithBacking(d)), G.WithName(fmt.Sprint("x", i))))
			}
			y, err := tc.op(g, nodes)
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
			if _, err := G.Grad(cost, nodes...); err != nil {
				t.Fatal(err)
			}
			vm := G.NewTapeMachine(g, G.BindDualValues(nodes...))
			defer vm.Close()
			run := func() float64 {
				vm.Reset()
				if err := vm.RunAll(); err != nil {
					t.Fatal(err)
				}
				return toFloat64(costVal.Data())[0]
			}
			run()
			var analytic [][]float64
			for _, n := range nodes {
				gv, err := n.Grad()
				if err != nil {
					t.Fatal(err)
				}
				analytic = append(analytic, toFloat64(gv.Data()))
				clear(gv.Data().([]float64)) // the tape machine accumulates across runs
			}
			for i, d := range datas {
				all := make([]int, len(d))
				for j := range all {
					all[j] = j
				}
				checkGrad(t, fmt.Sprint("input ", i), analytic[i], d, run, all)
			}
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
			grads, err := gr.gradsF64()
			if err != nil {
				t.Fatal(err)
			}
			rng := rand.New(rand.NewPCG(1, 2))
			for i, n := range gr.params {
				idx := make([]int, 12)
				for k := range idx {
					idx[k] = rng.IntN(len(gr.f64[i]))
				}
				checkGrad(t, fmt.Sprint(n.Name()), grads[i], gr.f64[i], f, idx)
			}
		})
	}
}
