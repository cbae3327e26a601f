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

// The fused-op machinery and the kernels the model's fused ops (a decoder layer, layer.go;
// the head, head.go) are built from: linear layers through BLAS, RMSNorm, SwiGLU (causal
// attention with RoPE and GQA is in attention.go). Each fused op has a hand-written backward
// (its own grad op) and a finite-difference check in gradcheck_test.go; gorgonia chains them
// and runs the tape. Built from gorgonia's generic element-wise ops the same model spends most
// of its time copying, transposing and allocating; fused, its time goes to BLAS.

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

// ---- RMSNorm: y = w ⊙ x / sqrt(mean(x²) + eps), per row ----

// rmsScale is 1/sqrt(mean(row²)+eps), accumulated in float64 like model's rmsNorm.
func rmsScale[T num](row []T, eps float64) T {
	var ss float64
	for _, v := range row {
		ss += float64(v) * float64(v)
	}
	return T(1 / math.Sqrt(ss/float64(len(row))+eps))
}

// rmsRows normalises each D-wide row of x into y.
func rmsRows[T num](x, w, y []T, D int, eps float64) {
	parallelRows(len(x)/D, D, func(r0, r1 int) {
		for r := r0; r < r1; r++ {
			rmsRow(x[r*D:(r+1)*D], w, y[r*D:(r+1)*D], eps)
		}
	})
}

func rmsRow[T num](row, w, out []T, eps float64) {
	s := rmsScale(row, eps)
	for i, v := range row {
		out[i] = w[i] * (v * s)
	}
}

// rmsBack adds the input gradient of rmsRows for output gradient g into dx, and Σ_rows g⊙x·s
// into the weight's sink dw when there is one:
// dx += s·(w⊙g) - s³/D · x · Σ(w⊙g⊙x).
func rmsBack[T num](x, w, g, dx, dw []T, D int, eps float64) {
	var acc []float64
	var mu sync.Mutex
	if dw != nil {
		acc = make([]float64, D)
	}
	parallelRows(len(x)/D, D, func(r0, r1 int) {
		var part []float64
		if dw != nil {
			part = make([]float64, D)
		}
		for r := r0; r < r1; r++ {
			rmsBackRow(x[r*D:(r+1)*D], w, g[r*D:(r+1)*D], dx[r*D:(r+1)*D], part, eps)
		}
		if dw != nil {
			mu.Lock()
			for i, v := range part {
				acc[i] += v
			}
			mu.Unlock()
		}
	})
	for i, v := range acc {
		dw[i] += T(v)
	}
}

// rmsBackRow is rmsBack for one row, adding the weight gradient into part (nil: none).
func rmsBackRow[T num](row, w, gr, out []T, part []float64, eps float64) {
	s := float64(rmsScale(row, eps))
	var dot float64
	for i, v := range row {
		dot += float64(w[i]) * float64(gr[i]) * float64(v)
	}
	c := s * s * s / float64(len(row)) * dot
	for i, v := range row {
		out[i] += T(s*float64(w[i])*float64(gr[i]) - c*float64(v))
	}
	for i, v := range part {
		part[i] = v + float64(gr[i])*float64(row[i])*s
	}
}

// ---- SwiGLU: silu(gate) ⊙ up ----

func sigm(x float64) float64 { return 1 / (1 + expFast(-x)) }

// swigluFwdRows is SwiGLU's forward loop: sg = σ(g), yd = T(g·σ)·u; the C kernel for float32 with
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

// swigluBackRows is d/dgate = dy·up·σ(g)(1 + g(1-σ(g))) (which 0) or d/dup = dy·silu(g)
// (which 1), from σ(g) = sg; the C kernel for float32 with -tags openblas.
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
