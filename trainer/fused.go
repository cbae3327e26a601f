package trainer

import (
	"fmt"
	"hash"
	"hash/fnv"
	"math"
	"runtime"
	"sync"
	"sync/atomic"

	"github.com/chewxy/hm"
	"gonum.org/v1/gonum/blas"
	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"
)

// The model's layers as fused gorgonia ops: a linear layer, RMSNorm, SwiGLU, causal
// attention with RoPE and GQA, and the log-prob of target tokens. Each has a hand-written
// backward (its own grad ops) and a finite-difference check in fused_test.go; gorgonia chains
// them, differentiates the residual adds and the embedding gather, and runs the tape. Built
// from gorgonia's generic element-wise ops the same model spends most of its time copying,
// transposing and allocating (see graph.go's history in the report); fused, its time goes to
// BLAS.

type num interface{ float32 | float64 }

// fusedOp is a gorgonia Op defined by a forward function over dense inputs of one dtype and,
// for a differentiable op, a function building its gradient nodes.
type fusedOp struct {
	name   string
	inDims []int
	out    tensor.Shape
	fwd    func(in []*tensor.Dense, ob *outBuf) (*tensor.Dense, error)
	diff   func(inputs G.Nodes, output, grad *G.Node) (G.Nodes, error)
	id     uint64
	// ob is the output buffer reused run after run: each op runs once per run and the tape
	// reads its value only later in the same run, so the next run may overwrite it.
	ob outBuf
}

// outBuf keeps a fused op's output tensor from one run to the next, so a step allocates (and
// the kernel page-faults in) no fresh activation memory.
type outBuf struct{ d *tensor.Dense }

// outDense returns ob's tensor when it has this dtype and shape (cleared when zero is set;
// otherwise the kernel must overwrite every element), else a new zeroed one that ob keeps.
func outDense[T num](ob *outBuf, zero bool, shape ...int) *tensor.Dense {
	if ob != nil && ob.d != nil {
		if d, ok := ob.d.Data().([]T); ok && ob.d.Shape().Eq(tensor.Shape(shape)) {
			if zero {
				clear(d)
			}
			return ob.d
		}
	}
	d := newDense[T](shape...)
	if ob != nil {
		ob.d = d
	}
	return d
}

var fusedIDs atomic.Uint64

func applyFused(name string, out tensor.Shape, fwd func([]*tensor.Dense, *outBuf) (*tensor.Dense, error),
	diff func(G.Nodes, *G.Node, *G.Node) (G.Nodes, error), inputs ...*G.Node) (*G.Node, error) {
	op := &fusedOp{name: name, out: out.Clone(), fwd: fwd, diff: diff, id: fusedIDs.Add(1)}
	for _, n := range inputs {
		op.inDims = append(op.inDims, n.Shape().Dims())
	}
	return G.ApplyOp(op, inputs...)
}

func (op *fusedOp) Arity() int { return len(op.inDims) }
func (op *fusedOp) Type() hm.Type {
	a := hm.TypeVariable('a')
	ts := make([]hm.Type, 0, len(op.inDims)+1)
	for _, d := range op.inDims {
		ts = append(ts, G.TensorType{Dims: d, Of: a})
	}
	ts = append(ts, G.TensorType{Dims: op.out.Dims(), Of: a})
	return hm.NewFnType(ts...)
}
func (op *fusedOp) InferShape(...G.DimSizer) (tensor.Shape, error) { return op.out.Clone(), nil }
func (op *fusedOp) Do(vals ...G.Value) (G.Value, error) {
	in := make([]*tensor.Dense, len(vals))
	for i, v := range vals {
		d, ok := v.(*tensor.Dense)
		if !ok {
			return nil, fmt.Errorf("%s: input %d is %T, want a dense tensor", op.name, i, v)
		}
		in[i] = d
	}
	return op.fwd(in, &op.ob)
}
func (op *fusedOp) ReturnsPtr() bool      { return false }
func (op *fusedOp) CallsExtern() bool     { return false }
func (op *fusedOp) OverwritesInput() int  { return -1 }
func (op *fusedOp) WriteHash(h hash.Hash) { fmt.Fprintf(h, "%s#%d", op.name, op.id) }
func (op *fusedOp) Hashcode() uint32 {
	h := fnv.New32a()
	op.WriteHash(h)
	return h.Sum32()
}
func (op *fusedOp) String() string { return op.name }
func (op *fusedOp) DiffWRT(n int) []bool {
	w := make([]bool, n)
	for i := range w {
		w[i] = op.diff != nil
	}
	return w
}
func (op *fusedOp) SymDiff(inputs G.Nodes, output, grad *G.Node) (G.Nodes, error) {
	if op.diff == nil {
		return nil, fmt.Errorf("%s is not differentiable", op.name)
	}
	return op.diff(inputs, output, grad)
}

// threadLimit caps the goroutines one kernel uses (0: GOMAXPROCS); see SetThreads.
var threadLimit atomic.Int32

// SetThreads caps the goroutines each training kernel (GEMM halves, element-wise loops,
// attention groups) runs on, process-wide like torch.set_num_threads; n <= 0 lifts the cap.
// A trainer sharing a machine with rollout workers keeps to its share of the cores with it.
func SetThreads(n int) { threadLimit.Store(int32(max(n, 0))) }

// threads is the goroutines a kernel may use.
func threads() int {
	n := runtime.GOMAXPROCS(0)
	if l := int(threadLimit.Load()); l > 0 {
		n = min(n, l)
	}
	return n
}

// parallelBlocks runs fn over [0, n) in threads() contiguous blocks (block b is [i0, i1);
// blocks are the same for the same n and threads, and a short n is one block) — for the
// optimiser's and the gradient bookkeeping's passes over every parameter.
func parallelBlocks(n int, fn func(b, i0, i1 int)) { splitBlocks(n, n, fn) }

// parallelRows runs fn over [0, R) split into threads() contiguous blocks when there is
// enough work (cols per row times R) to pay for the goroutines; block i is [r0, r1).
func parallelRows(R, cols int, fn func(r0, r1 int)) {
	splitBlocks(R, R*cols, func(_, r0, r1 int) { fn(r0, r1) })
}

// splitBlocks cuts [0, n) into up to threads() equal contiguous blocks and runs fn on each in
// its own goroutine, or on all of it at once when work (elements touched) is too little to
// pay for the goroutines.
func splitBlocks(n, work int, fn func(b, i0, i1 int)) {
	workers := min(threads(), n)
	if workers < 2 || work < 1<<15 {
		fn(0, 0, n)
		return
	}
	var wg sync.WaitGroup
	step := (n + workers - 1) / workers
	for b := 0; b*step < n; b++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			fn(b, b*step, min((b+1)*step, n))
		}()
	}
	wg.Wait()
}

// data returns a dense tensor's backing slice as []T.
func data[T num](d *tensor.Dense) []T { return d.Data().([]T) }

func newDense[T num](shape ...int) *tensor.Dense {
	return tensor.New(tensor.WithShape(shape...), tensor.WithBacking(make([]T, tensor.Shape(shape).TotalSize())))
}

// byDtype runs the float32 or float64 instance of a generic kernel.
func byDtype(in []*tensor.Dense, ob *outBuf, f32, f64 func([]*tensor.Dense, *outBuf) (*tensor.Dense, error)) (*tensor.Dense, error) {
	switch in[0].Dtype() {
	case tensor.Float32:
		return f32(in, ob)
	case tensor.Float64:
		return f64(in, ob)
	}
	return nil, fmt.Errorf("dtype %v not supported", in[0].Dtype())
}

// gemm is row-major C = alpha·op(A)·op(B) + beta·C through the BLAS gorgonia uses.
func gemm[T num](tA, tB bool, m, n, k int, alpha T, a []T, lda int, b []T, ldb int, beta T, c []T, ldc int) {
	if m == 0 || n == 0 {
		return // an empty block (the causal attention split of a 1-token sequence)
	}
	gemmWith(tensor.WhichBLAS(), tA, tB, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc)
}

func gemmWith[T num](bl interface {
	blas.Float32Level3
	blas.Float64Level3
}, tA, tB bool, m, n, k int, alpha T, a []T, lda int, b []T, ldb int, beta T, c []T, ldc int) {
	ta, tb := blas.NoTrans, blas.NoTrans
	if tA {
		ta = blas.Trans
	}
	if tB {
		tb = blas.Trans
	}
	switch av := any(a).(type) {
	case []float32:
		bl.Sgemm(ta, tb, m, n, k, float32(alpha), av, lda, any(b).([]float32), ldb, float32(beta), any(c).([]float32), ldc)
	case []float64:
		bl.Dgemm(ta, tb, m, n, k, float64(alpha), av, lda, any(b).([]float64), ldb, float64(beta), any(c).([]float64), ldc)
	}
}

// ---- linear: y = x·Wᵀ + b, W in HF's [out, in] layout ----

func linearOp(x, w, b *G.Node) (*G.Node, error) {
	R, in, out := x.Shape()[0], x.Shape()[1], w.Shape()[0]
	if w.Shape()[1] != in {
		return nil, fmt.Errorf("linear: x %v, weight %v", x.Shape(), w.Shape())
	}
	fwd := func(t []*tensor.Dense, ob *outBuf) (*tensor.Dense, error) {
		return byDtype(t, ob, linearFwd[float32], linearFwd[float64])
	}
	diff := func(inputs G.Nodes, _, grad *G.Node) (G.Nodes, error) {
		dx, err := applyFused("linear.dx", tensor.Shape{R, in}, func(t []*tensor.Dense, ob *outBuf) (*tensor.Dense, error) {
			return byDtype(t, ob, linearDX[float32], linearDX[float64])
		}, nil, grad, inputs[1])
		if err != nil {
			return nil, err
		}
		dw, err := applyFused("linear.dw", tensor.Shape{out, in}, func(t []*tensor.Dense, ob *outBuf) (*tensor.Dense, error) {
			return byDtype(t, ob, linearDW[float32], linearDW[float64])
		}, nil, grad, inputs[0])
		if err != nil {
			return nil, err
		}
		if len(inputs) == 2 {
			return G.Nodes{dx, dw}, nil
		}
		db, err := applyFused("linear.db", tensor.Shape{out}, func(t []*tensor.Dense, ob *outBuf) (*tensor.Dense, error) {
			return byDtype(t, ob, colSum[float32], colSum[float64])
		}, nil, grad)
		if err != nil {
			return nil, err
		}
		return G.Nodes{dx, dw, db}, nil
	}
	inputs := []*G.Node{x, w}
	if b != nil {
		inputs = append(inputs, b)
	}
	return applyFused("linear", tensor.Shape{R, out}, fwd, diff, inputs...)
}

func linearFwd[T num](t []*tensor.Dense, ob *outBuf) (*tensor.Dense, error) {
	x, w := t[0], t[1]
	R, in, out := x.Shape()[0], x.Shape()[1], w.Shape()[0]
	y := outDense[T](ob, false, R, out)
	yd := data[T](y)
	if len(t) == 3 {
		b := data[T](t[2])
		for r := range R {
			copy(yd[r*out:(r+1)*out], b)
		}
		gemm(false, true, R, out, in, 1, data[T](x), in, data[T](w), in, 1, yd, out)
		return y, nil
	}
	gemm(false, true, R, out, in, 1, data[T](x), in, data[T](w), in, 0, yd, out)
	return y, nil
}

// dX = dY·W
func linearDX[T num](t []*tensor.Dense, ob *outBuf) (*tensor.Dense, error) {
	dy, w := t[0], t[1]
	R, out, in := dy.Shape()[0], dy.Shape()[1], w.Shape()[1]
	dx := outDense[T](ob, false, R, in)
	gemm(false, false, R, in, out, 1, data[T](dy), out, data[T](w), in, 0, data[T](dx), in)
	return dx, nil
}

// dW = dYᵀ·X
func linearDW[T num](t []*tensor.Dense, ob *outBuf) (*tensor.Dense, error) {
	dy, x := t[0], t[1]
	R, out, in := dy.Shape()[0], dy.Shape()[1], x.Shape()[1]
	dw := outDense[T](ob, false, out, in)
	gemm(true, false, out, in, R, 1, data[T](dy), out, data[T](x), in, 0, data[T](dw), in)
	return dw, nil
}

func colSum[T num](t []*tensor.Dense, ob *outBuf) (*tensor.Dense, error) {
	R, C := t[0].Shape()[0], t[0].Shape()[1]
	d := data[T](t[0])
	out := outDense[T](ob, true, C)
	o := data[T](out)
	parallelRows(C, R, func(c0, c1 int) {
		for r := range R {
			row := d[r*C : (r+1)*C]
			for c := c0; c < c1; c++ {
				o[c] += row[c]
			}
		}
	})
	return out, nil
}

// ---- RMSNorm: y = w ⊙ x / sqrt(mean(x²) + eps), per row ----

func rmsNormOp(x, w *G.Node, eps float64) (*G.Node, error) {
	shape := x.Shape().Clone()
	fwd := func(t []*tensor.Dense, ob *outBuf) (*tensor.Dense, error) {
		return byDtype(t, ob, func(t []*tensor.Dense, ob *outBuf) (*tensor.Dense, error) { return rmsNormFwd[float32](t, ob, eps) },
			func(t []*tensor.Dense, ob *outBuf) (*tensor.Dense, error) { return rmsNormFwd[float64](t, ob, eps) })
	}
	diff := func(inputs G.Nodes, _, grad *G.Node) (G.Nodes, error) {
		dx, err := applyFused("rmsnorm.dx", shape, func(t []*tensor.Dense, ob *outBuf) (*tensor.Dense, error) {
			return byDtype(t, ob, func(t []*tensor.Dense, ob *outBuf) (*tensor.Dense, error) { return rmsNormDX[float32](t, ob, eps) },
				func(t []*tensor.Dense, ob *outBuf) (*tensor.Dense, error) { return rmsNormDX[float64](t, ob, eps) })
		}, nil, inputs[0], inputs[1], grad)
		if err != nil {
			return nil, err
		}
		dw, err := applyFused("rmsnorm.dw", inputs[1].Shape(), func(t []*tensor.Dense, ob *outBuf) (*tensor.Dense, error) {
			return byDtype(t, ob, func(t []*tensor.Dense, ob *outBuf) (*tensor.Dense, error) { return rmsNormDW[float32](t, ob, eps) },
				func(t []*tensor.Dense, ob *outBuf) (*tensor.Dense, error) { return rmsNormDW[float64](t, ob, eps) })
		}, nil, inputs[0], grad)
		if err != nil {
			return nil, err
		}
		return G.Nodes{dx, dw}, nil
	}
	return applyFused("rmsnorm", shape, fwd, diff, x, w)
}

// rmsScale is 1/sqrt(mean(row²)+eps), accumulated in float64 like model's rmsNorm.
func rmsScale[T num](row []T, eps float64) T {
	var ss float64
	for _, v := range row {
		ss += float64(v) * float64(v)
	}
	return T(1 / math.Sqrt(ss/float64(len(row))+eps))
}

func rmsNormFwd[T num](t []*tensor.Dense, ob *outBuf, eps float64) (*tensor.Dense, error) {
	R, D := t[0].Shape()[0], t[0].Shape()[1]
	x, w := data[T](t[0]), data[T](t[1])
	y := outDense[T](ob, false, R, D)
	yd := data[T](y)
	parallelRows(R, D, func(r0, r1 int) {
		for r := r0; r < r1; r++ {
			row := x[r*D : (r+1)*D]
			s := rmsScale(row, eps)
			out := yd[r*D : (r+1)*D]
			for i, v := range row {
				out[i] = w[i] * (v * s)
			}
		}
	})
	return y, nil
}

// dx = s·(w⊙g) - s³/D · x · Σ(w⊙g⊙x)
func rmsNormDX[T num](t []*tensor.Dense, ob *outBuf, eps float64) (*tensor.Dense, error) {
	R, D := t[0].Shape()[0], t[0].Shape()[1]
	x, w, g := data[T](t[0]), data[T](t[1]), data[T](t[2])
	dx := outDense[T](ob, false, R, D)
	dd := data[T](dx)
	parallelRows(R, D, func(r0, r1 int) {
		for r := r0; r < r1; r++ {
			row, gr := x[r*D:(r+1)*D], g[r*D:(r+1)*D]
			s := float64(rmsScale(row, eps))
			var dot float64
			for i, v := range row {
				dot += float64(w[i]) * float64(gr[i]) * float64(v)
			}
			c := s * s * s / float64(D) * dot
			out := dd[r*D : (r+1)*D]
			for i, v := range row {
				out[i] = T(s*float64(w[i])*float64(gr[i]) - c*float64(v))
			}
		}
	})
	return dx, nil
}

// dw = Σ_rows g ⊙ x·s
func rmsNormDW[T num](t []*tensor.Dense, ob *outBuf, eps float64) (*tensor.Dense, error) {
	R, D := t[0].Shape()[0], t[0].Shape()[1]
	x, g := data[T](t[0]), data[T](t[1])
	dw := outDense[T](ob, false, D)
	acc := make([]float64, D)
	var mu sync.Mutex
	parallelRows(R, D, func(r0, r1 int) {
		part := make([]float64, D)
		for r := r0; r < r1; r++ {
			row, gr := x[r*D:(r+1)*D], g[r*D:(r+1)*D]
			s := float64(rmsScale(row, eps))
			for i, v := range row {
				part[i] += float64(gr[i]) * float64(v) * s
			}
		}
		mu.Lock()
		for i, v := range part {
			acc[i] += v
		}
		mu.Unlock()
	})
	out := data[T](dw)
	for i, v := range acc {
		out[i] = T(v)
	}
	return dw, nil
}

// ---- SwiGLU: silu(gate) ⊙ up ----

// sigmoids carries σ(gate) ([]T) from a swiglu forward to its backward in the same run, which
// then needs no exponentials of its own.
type sigmoids struct{ s any }

func swigluOp(gate, up *G.Node) (*G.Node, error) {
	shape := gate.Shape().Clone()
	cache := &sigmoids{}
	fwd := func(t []*tensor.Dense, ob *outBuf) (*tensor.Dense, error) {
		return byDtype(t, ob, func(t []*tensor.Dense, ob *outBuf) (*tensor.Dense, error) { return swigluFwd[float32](t, ob, cache) },
			func(t []*tensor.Dense, ob *outBuf) (*tensor.Dense, error) { return swigluFwd[float64](t, ob, cache) })
	}
	// Two backward ops, one per input: each writes its gradient straight into its own output
	// (no packed [dgate | dup] tensor to split by copying).
	diff := func(inputs G.Nodes, _, grad *G.Node) (G.Nodes, error) {
		var out G.Nodes
		for which, name := range []string{"swiglu.dgate", "swiglu.dup"} {
			d, err := applyFused(name, shape, func(t []*tensor.Dense, ob *outBuf) (*tensor.Dense, error) {
				return byDtype(t, ob, func(t []*tensor.Dense, ob *outBuf) (*tensor.Dense, error) {
					return swigluBack[float32](t, ob, cache, which)
				},
					func(t []*tensor.Dense, ob *outBuf) (*tensor.Dense, error) {
						return swigluBack[float64](t, ob, cache, which)
					})
			}, nil, inputs[0], inputs[1], grad)
			if err != nil {
				return nil, err
			}
			out = append(out, d)
		}
		return out, nil
	}
	return applyFused("swiglu", shape, fwd, diff, gate, up)
}

func sigm(x float64) float64 { return 1 / (1 + expFast(-x)) }

func swigluFwd[T num](t []*tensor.Dense, ob *outBuf, cache *sigmoids) (*tensor.Dense, error) {
	g, u := data[T](t[0]), data[T](t[1])
	y := outDense[T](ob, false, t[0].Shape()...)
	yd := data[T](y)
	sg, ok := cache.s.([]T)
	if !ok || len(sg) != len(g) {
		sg = make([]T, len(g))
		cache.s = sg
	}
	parallelRows(len(g), 1, func(i0, i1 int) {
		swigluFwdRows(g[i0:i1], u[i0:i1], sg[i0:i1], yd[i0:i1])
	})
	return y, nil
}

// swigluFwdRows is swigluFwd's loop: sg = σ(g), yd = T(g·σ)·u; the C kernel for float32 with
// -tags openblas.
func swigluFwdRows[T num](g, u, sg, yd []T) {
	if cKernels && kernelsAVX2 {
		if g32, ok := any(g).([]float32); ok {
			swigluFwd32(g32, any(u).([]float32), any(yd).([]float32), any(sg).([]float32))
			return
		}
	}
	swigluFwdGo(g, u, sg, yd)
}

// swigluFwdGo is swigluFwdRows' Go loop.
func swigluFwdGo[T num](g, u, sg, yd []T) {
	u, sg, yd = u[:len(g)], sg[:len(g)], yd[:len(g)] // no bounds checks below
	for i := range g {
		v := float64(g[i])
		// s = sigm(v) = 1/(1+e^-v), with expFast written out here: the call does not
		// inline and this is the model's largest element-wise loop.
		x := -v
		var e float64
		if x > -708 && x < 709 {
			t := x*expScale + expRound
			n := math.Float64bits(t) - math.Float64bits(expRound)
			kf := t - expRound
			r := x - kf*expLn2Hi - kf*expLn2Lo
			p := 1 + r*(1+r*(1.0/2+r*(1.0/6+r*(1.0/24))))
			e = p * math.Float64frombits(expTab[n&63]+uint64(int64(n)>>6)<<52)
		} else {
			e = math.Exp(x)
		}
		s := 1 / (1 + e)
		sg[i] = T(s)
		yd[i] = T(v*s) * u[i]
	}
}

// d/dgate = dy·up·σ(g)(1 + g(1-σ(g))) (which 0) or d/dup = dy·silu(g) (which 1).
func swigluBack[T num](t []*tensor.Dense, ob *outBuf, cache *sigmoids, which int) (*tensor.Dense, error) {
	R, C := t[0].Shape()[0], t[0].Shape()[1]
	g, u, dy := data[T](t[0]), data[T](t[1]), data[T](t[2])
	sg, ok := cache.s.([]T)
	if !ok || len(sg) != len(g) {
		return nil, fmt.Errorf("swiglu backward: no forward sigmoids for %d values", len(g))
	}
	d := outDense[T](ob, false, R, C)
	dd := data[T](d)
	parallelRows(R*C, 1, func(i0, i1 int) {
		swigluBackRows(which, g[i0:i1], u[i0:i1], dy[i0:i1], sg[i0:i1], dd[i0:i1])
	})
	return d, nil
}

// swigluBackRows is swigluBack's loop; the C kernel for float32 with -tags openblas.
func swigluBackRows[T num](which int, g, u, dy, sg, dd []T) {
	if cKernels && kernelsAVX2 {
		if g32, ok := any(g).([]float32); ok {
			swigluBack32(which, g32, any(u).([]float32), any(dy).([]float32), any(sg).([]float32), any(dd).([]float32))
			return
		}
	}
	swigluBackGo(which, g, u, dy, sg, dd)
}

// swigluBackGo is swigluBackRows' Go loop.
func swigluBackGo[T num](which int, g, u, dy, sg, dd []T) {
	if which == 0 {
		for i := range g {
			gv, dyv := float64(g[i]), float64(dy[i])
			s := float64(sg[i])
			dd[i] = T(dyv * float64(u[i]) * s * (1 + gv*(1-s)))
		}
		return
	}
	for i := range g {
		dd[i] = T(float64(dy[i]) * float64(g[i]) * float64(sg[i]))
	}
}

// ---- token log-probs: lp[m] = logits[m, tok[m]] - logsumexp(logits[m]) ----

// tokenLogpOp reads the target tokens from toks() at run time (the packed batch).
func tokenLogpOp(logits *G.Node, toks func() []int) (*G.Node, error) {
	M := logits.Shape()[0]
	shape := logits.Shape().Clone()
	lse := &[]float64{} // per-row log-sum-exp, from the forward to the backward of a run
	fwd := func(t []*tensor.Dense, ob *outBuf) (*tensor.Dense, error) {
		return byDtype(t, ob, func(t []*tensor.Dense, ob *outBuf) (*tensor.Dense, error) {
			return tokenLogpFwd[float32](t, ob, toks(), lse)
		},
			func(t []*tensor.Dense, ob *outBuf) (*tensor.Dense, error) {
				return tokenLogpFwd[float64](t, ob, toks(), lse)
			})
	}
	diff := func(inputs G.Nodes, _, grad *G.Node) (G.Nodes, error) {
		d, err := applyFused("tokenlogp.d", shape, func(t []*tensor.Dense, ob *outBuf) (*tensor.Dense, error) {
			return byDtype(t, ob, func(t []*tensor.Dense, ob *outBuf) (*tensor.Dense, error) {
				return tokenLogpBack[float32](t, ob, toks(), *lse)
			},
				func(t []*tensor.Dense, ob *outBuf) (*tensor.Dense, error) {
					return tokenLogpBack[float64](t, ob, toks(), *lse)
				})
		}, nil, inputs[0], grad)
		if err != nil {
			return nil, err
		}
		return G.Nodes{d}, nil
	}
	return applyFused("tokenlogp", tensor.Shape{M}, fwd, diff, logits)
}

// logSumExp of a row, in float64 like model's logSoftmaxAt.
func logSumExp[T num](row []T) float64 {
	if cKernels && kernelsAVX2 {
		if r, ok := any(row).([]float32); ok {
			mx, z := lseParts32(r)
			return mx + math.Log(z)
		}
	}
	mx := math.Inf(-1)
	for _, v := range row {
		mx = max(mx, float64(v))
	}
	return mx + math.Log(expShift[T](nil, row, mx, 0))
}

func tokenLogpFwd[T num](t []*tensor.Dense, ob *outBuf, toks []int, lse *[]float64) (*tensor.Dense, error) {
	M, V := t[0].Shape()[0], t[0].Shape()[1]
	if len(toks) != M {
		return nil, fmt.Errorf("token log-probs: %d targets for %d rows", len(toks), M)
	}
	x := data[T](t[0])
	out := outDense[T](ob, false, M)
	o := data[T](out)
	if len(*lse) != M {
		*lse = make([]float64, M)
	}
	ls := *lse
	parallelRows(M, V, func(m0, m1 int) {
		for m := m0; m < m1; m++ {
			row := x[m*V : (m+1)*V]
			ls[m] = logSumExp(row)
			o[m] = T(float64(row[toks[m]]) - ls[m])
		}
	})
	return out, nil
}

// dlogits[m, j] = dlp[m]·(1[j = tok] - softmax_j)
func tokenLogpBack[T num](t []*tensor.Dense, ob *outBuf, toks []int, lses []float64) (*tensor.Dense, error) {
	M, V := t[0].Shape()[0], t[0].Shape()[1]
	if len(lses) != M {
		return nil, fmt.Errorf("token log-probs backward: no forward log-sum-exps for %d rows", M)
	}
	x, g := data[T](t[0]), data[T](t[1])
	d := outDense[T](ob, false, M, V)
	dd := data[T](d)
	parallelRows(M, V, func(m0, m1 int) {
		for m := m0; m < m1; m++ {
			if g[m] == 0 {
				clear(dd[m*V : (m+1)*V]) // padding slots and masked tokens
				continue
			}
			row := x[m*V : (m+1)*V]
			lse := lses[m] // the forward's logSumExp(row)
			gm := float64(g[m])
			out := dd[m*V : (m+1)*V]
			expShift(out, row, lse, -gm) // out[j] = -gm·e^(row[j]-lse)
			out[toks[m]] += T(gm)
		}
	})
	return d, nil
}
