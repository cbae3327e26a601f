package trainer

import (
	"fmt"
	"math"

	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"
)

// param is one weight tensor as a graph's ops read it, and where they add its gradient. The
// ops take their weights from params rather than from graph input nodes: each backward op adds
// its weight gradients straight into the sink, so a step holds the gradient once (gorgonia's
// dual values, an output buffer per weight-gradient op and the trainer's accumulators held it
// three times, 6 GB at the 0.5B shape), and a tied embedding's two gradient paths never meet
// in a vocab-sized Add.
type param struct {
	shape []int
	// The values: f32 (aliasing the policy's own slice, so an optimiser step is seen by the
	// next run), f64 (gradient checks) or bf16 (the frozen reference, widened as it is read).
	f32  []float32
	f64  []float64
	bf16 []uint16
	// grad32 or grad64 accumulates the gradient; nil: not wanted. graph.run sets them.
	grad32 []float32
	grad64 []float64
}

func (p *param) cols() int {
	if len(p.shape) == 2 {
		return p.shape[1]
	}
	return 1
}

// rowsOf returns rows [lo, hi) of p (a vector's rows are its elements) in T, widening BF16
// into *scratch.
func rowsOf[T num](p *param, lo, hi int, scratch *[]T) []T {
	c := p.cols()
	switch d := any(scratch).(type) {
	case *[]float32:
		if p.f32 != nil {
			return any(p.f32[lo*c : hi*c]).([]T)
		}
		src := p.bf16[lo*c : hi*c]
		if cap(*d) < len(src) {
			*d = make([]float32, len(src))
		}
		dst := (*d)[:len(src)]
		parallelBlocks(len(src), func(_, i0, i1 int) {
			for i, b := range src[i0:i1] {
				dst[i0+i] = math.Float32frombits(uint32(b) << 16)
			}
		})
		return any(dst).([]T)
	default:
		return any(p.f64[lo*c : hi*c]).([]T)
	}
}

// valsOf is the whole of p in T.
func valsOf[T num](p *param, scratch *[]T) []T { return rowsOf(p, 0, p.shape[0], scratch) }

// gradOf is p's gradient sink in T, nil when none.
func gradOf[T num](p *param) []T {
	if p == nil {
		return nil
	}
	var z T
	if _, ok := any(z).(float32); ok {
		if p.grad32 == nil {
			return nil
		}
		return any(p.grad32).([]T)
	}
	if p.grad64 == nil {
		return nil
	}
	return any(p.grad64).([]T)
}

// arena hands out buffers by (owner, slot), kept from run to run: the saved activations of
// decoder layer i (owner i), and the scratch every layer shares (negative owners) because only
// one layer's forward or backward runs at a time. The trainer's policy graphs share one arena
// (a step runs one graph at a time, so the memory is that of the largest shape, not the sum
// over the cached shapes) and its reference graphs another (they run alongside).
//
// The ops' outputs come from it too (not from a buffer per op), so a graph the trainer's
// shape cache evicts leaves no activation memory behind for the collector to find: with
// ~10 GB of weights and optimiser state live, Go's collector would let that much garbage
// pile up before it ran.
type arena struct {
	bufs  map[[2]int]any
	dense map[[2]int]*tensor.Dense
}

func newArena() *arena { return &arena{bufs: map[[2]int]any{}, dense: map[[2]int]*tensor.Dense{}} }

// Shared owners.
const (
	ownShared  = -1 // a layer's forward internals when they are not kept (checkpointing, no backward)
	ownBack    = -2 // a layer's backward temporaries
	ownWiden   = -3 // BF16 weights widened for one layer
	ownHead    = -4 // the lm_head blocks
	ownCompute = -5 // a layer's y when the backward recomputes the forward
	ownOut     = -6 // a forward-only graph's layer outputs, alternating between two slots
	ownInput   = -7 // the batch's embeddings
)

// buf returns the arena's n-element buffer for (owner, slot); its contents are whatever the
// last user left.
func buf[T num](a *arena, owner, slot, n int) []T {
	k := [2]int{owner, slot}
	b, ok := a.bufs[k].([]T)
	if !ok || cap(b) < n {
		b = make([]T, n)
		a.bufs[k] = b
	}
	return b[:n]
}

// denseOf is the arena's buffer (owner, slot) as a [rows, cols] tensor, the same tensor run
// after run while the shape stays.
func denseOf[T num](a *arena, owner, slot, rows, cols int) *tensor.Dense {
	k := [2]int{owner, slot}
	if d, ok := a.dense[k]; ok {
		if _, same := d.Data().([]T); same && d.Shape()[0] == rows && d.Shape()[1] == cols {
			return d
		}
	}
	d := tensor.New(tensor.WithShape(rows, cols), tensor.WithBacking(buf[T](a, owner, slot, rows*cols)))
	a.dense[k] = d
	return d
}

// scratchPtr is the arena's widening scratch (owner, slot) as a pointer for rowsOf.
func scratchPtr[T num](a *arena, owner, slot int) *[]T {
	k := [2]int{owner, slot}
	p, ok := a.bufs[k].(*[]T)
	if !ok {
		p = new([]T)
		a.bufs[k] = p
	}
	return p
}

// linParams is one linear layer y = x·Wᵀ + b (W in HF's [out, in] layout, b optional),
// plus scale·(drop(x)·Aᵀ)·Bᵀ when it carries a LoRA adapter.
type linParams struct {
	w, b *param
	lora *loraParams
}

// loraParams is one projection's LoRA adapter: A [r, in], B [out, r]. The base weight of an
// adapted projection is frozen (its param has no gradient sink), so the backward adds only
// the adapter's gradients.
type loraParams struct {
	a, b  *param
	scale float64
	// dropout is PEFT's lora_dropout on the adapter's input; it applies in training graphs
	// (keep) only. Its mask is a pure function of (seed, layer, projection, element), so the
	// backward (and a checkpointed recompute) regenerates it instead of keeping it.
	dropout float64
	seed    *uint64 // the graph's per-run dropout seed
}

// layerSpec is one decoder layer as a single fused op (model/config.go has the forward):
// x + attn(rms(x)) then + mlp(rms(·)). Without checkpointing the forward keeps its internals
// in the arena under the layer's own owner for the backward; with checkpointing it keeps only
// its input (the previous op's output) and the backward runs the layer's forward again into
// shared scratch, so a model's saved activations are one [positions, hidden] matrix per
// layer. Either way the backward's temporaries are one layer's worth, shared.
type layerSpec struct {
	idx                        int
	inNorm, postNorm           *param
	q, k, v, o, gate, up, down linParams
	attn                       *attnSpec
	eps                        float64
	D, I, qw, kvw              int
	checkpoint, keep           bool // keep: a backward follows (else nothing is saved)
	ar                         *arena
}

// Layer slots.
const (
	sH1 = iota
	sQ
	sK
	sV
	sProbs
	sA
	sX1
	sH2
	sGate
	sUp
	sSig
	sAct
	// backward
	sDAct
	sDGate
	sDUp
	sDH2
	sDX1
	sDA
	sPacked
	sDH1
	// outputs
	sY
	sDX
)

func layerOp(sp *layerSpec, x *G.Node) (*G.Node, error) {
	N := x.Shape()[0]
	shape := tensor.Shape{N, sp.D}
	fwd := func(t []*tensor.Dense, ob *outBuf) (*tensor.Dense, error) {
		return byDtype(t, ob, func(t []*tensor.Dense, ob *outBuf) (*tensor.Dense, error) { return layerFwd[float32](sp, t, ob) },
			func(t []*tensor.Dense, ob *outBuf) (*tensor.Dense, error) { return layerFwd[float64](sp, t, ob) })
	}
	diff := func(inputs G.Nodes, _, grad *G.Node) (G.Nodes, error) {
		dx, err := applyFused(fmt.Sprintf("layer%d.d", sp.idx), shape, func(t []*tensor.Dense, ob *outBuf) (*tensor.Dense, error) {
			return byDtype(t, ob, func(t []*tensor.Dense, ob *outBuf) (*tensor.Dense, error) { return layerBack[float32](sp, t, ob) },
				func(t []*tensor.Dense, ob *outBuf) (*tensor.Dense, error) { return layerBack[float64](sp, t, ob) })
		}, nil, inputs[0], grad)
		if err != nil {
			return nil, err
		}
		return G.Nodes{dx}, nil
	}
	return applyFused(fmt.Sprintf("layer%d", sp.idx), shape, fwd, diff, x)
}

func layerFwd[T num](sp *layerSpec, t []*tensor.Dense, _ *outBuf) (*tensor.Dense, error) {
	N := t[0].Shape()[0]
	owner := ownShared
	if sp.keep && !sp.checkpoint {
		owner = sp.idx
	}
	// A backward reads every layer's input; without one, only the next layer reads it.
	y := denseOf[T](sp.ar, ownOut, sp.idx%2, N, sp.D)
	if sp.keep {
		y = denseOf[T](sp.ar, sp.idx, sY, N, sp.D)
	}
	layerForward(sp, data[T](t[0]), data[T](y), owner)
	return y, nil
}

// layerInternals are a layer forward's intermediate values, in the arena under one owner.
type layerInternals[T num] struct {
	h1, q, k, v, probs, a, x1, h2, gate, up []T
}

func internals[T num](sp *layerSpec, owner, N int) layerInternals[T] {
	a, at := sp.ar, sp.attn
	return layerInternals[T]{
		h1: buf[T](a, owner, sH1, N*sp.D), q: buf[T](a, owner, sQ, N*sp.qw),
		k: buf[T](a, owner, sK, N*sp.kvw), v: buf[T](a, owner, sV, N*sp.kvw),
		probs: buf[T](a, owner, sProbs, at.S*at.H*at.T*at.T), a: buf[T](a, owner, sA, N*sp.qw),
		x1: buf[T](a, owner, sX1, N*sp.D), h2: buf[T](a, owner, sH2, N*sp.D),
		gate: buf[T](a, owner, sGate, N*sp.I), up: buf[T](a, owner, sUp, N*sp.I),
	}
}

// Widening scratch slots (ownWiden) of a layer's weights; biases use wBias+slot.
const (
	wInNorm = iota
	wQ
	wK
	wV
	wO
	wPostNorm
	wGate
	wUp
	wDown
	wBias = 16
)

// layerForward computes y from x, keeping its internals under owner. The float operations are
// those of the graph of separate ops it replaced (bias rows then the product, x + branch), so
// the log-probs are what they were.
func layerForward[T num](sp *layerSpec, x, y []T, owner int) layerInternals[T] {
	N := len(x) / sp.D
	in := internals[T](sp, owner, N)
	sig, act := buf[T](sp.ar, ownShared, sSig, N*sp.I), buf[T](sp.ar, ownShared, sAct, N*sp.I)
	rmsRows(x, valsOf(sp.inNorm, scratchPtr[T](sp.ar, ownWiden, wInNorm)), in.h1, sp.D, sp.eps)
	linearInto(sp, sp.q, in.h1, in.q, wQ)
	linearInto(sp, sp.k, in.h1, in.k, wK)
	linearInto(sp, sp.v, in.h1, in.v, wV)
	attnForward(sp.attn, in.q, in.k, in.v, in.a, in.probs)
	linearInto(sp, sp.o, in.a, in.x1, wO)
	addInto(in.x1, x)
	rmsRows(in.x1, valsOf(sp.postNorm, scratchPtr[T](sp.ar, ownWiden, wPostNorm)), in.h2, sp.D, sp.eps)
	linearInto(sp, sp.gate, in.h2, in.gate, wGate)
	linearInto(sp, sp.up, in.h2, in.up, wUp)
	parallelRows(len(in.gate), 1, func(i0, i1 int) {
		swigluFwdRows(in.gate[i0:i1], in.up[i0:i1], sig[i0:i1], act[i0:i1])
	})
	linearInto(sp, sp.down, act, y, wDown)
	addInto(y, in.x1)
	return in
}

// layerBack is dx from the layer's input x and the gradient dy of its output; the weight
// gradients go into their sinks.
func layerBack[T num](sp *layerSpec, t []*tensor.Dense, _ *outBuf) (*tensor.Dense, error) {
	x, dy := data[T](t[0]), data[T](t[1])
	D, I, qw, kvw := sp.D, sp.I, sp.qw, sp.kvw
	N := len(x) / D
	dxT := denseOf[T](sp.ar, sp.idx, sDX, N, D)
	dx := data[T](dxT)
	a := sp.ar
	var in layerInternals[T]
	if sp.checkpoint {
		in = layerForward(sp, x, buf[T](a, ownCompute, 0, N*D), ownShared)
	} else {
		in = internals[T](sp, sp.idx, N)
	}
	// σ(gate) and the activation are cheaper to recompute than to keep per layer.
	sig, act := buf[T](a, ownShared, sSig, N*I), buf[T](a, ownShared, sAct, N*I)
	if !sp.checkpoint {
		parallelRows(len(in.gate), 1, func(i0, i1 int) {
			swigluFwdRows(in.gate[i0:i1], in.up[i0:i1], sig[i0:i1], act[i0:i1])
		})
	}
	dact := buf[T](a, ownBack, sDAct, N*I)
	linearBack(sp, sp.down, act, dy, D, dact, false, wDown)
	dgate, dup := buf[T](a, ownBack, sDGate, N*I), buf[T](a, ownBack, sDUp, N*I)
	parallelRows(N*I, 1, func(i0, i1 int) {
		swigluBackRows(0, in.gate[i0:i1], in.up[i0:i1], dact[i0:i1], sig[i0:i1], dgate[i0:i1])
		swigluBackRows(1, in.gate[i0:i1], in.up[i0:i1], dact[i0:i1], sig[i0:i1], dup[i0:i1])
	})
	dh2 := buf[T](a, ownBack, sDH2, N*D)
	linearBack(sp, sp.gate, in.h2, dgate, I, dh2, false, wGate)
	linearBack(sp, sp.up, in.h2, dup, I, dh2, true, wUp)
	dx1 := buf[T](a, ownBack, sDX1, N*D)
	copy(dx1, dy)
	rmsBack(in.x1, valsOf(sp.postNorm, scratchPtr[T](a, ownWiden, wPostNorm)), dh2, dx1, gradOf[T](sp.postNorm), D, sp.eps)
	da := buf[T](a, ownBack, sDA, N*qw)
	linearBack(sp, sp.o, in.a, dx1, D, da, false, wO)
	width := qw + 2*kvw
	packed := buf[T](a, ownBack, sPacked, N*width)
	attnBackward(sp.attn, in.q, in.k, in.v, da, in.probs, packed)
	dh1 := buf[T](a, ownBack, sDH1, N*D)
	linearBack(sp, sp.q, in.h1, packed, width, dh1, false, wQ)
	linearBack(sp, sp.k, in.h1, packed[qw:], width, dh1, true, wK)
	linearBack(sp, sp.v, in.h1, packed[qw+kvw:], width, dh1, true, wV)
	copy(dx, dx1)
	rmsBack(x, valsOf(sp.inNorm, scratchPtr[T](a, ownWiden, wInNorm)), dh1, dx, gradOf[T](sp.inNorm), D, sp.eps)
	return dxT, nil
}

// linearInto sets y = x·Wᵀ + b for x's rows.
func linearInto[T num](sp *layerSpec, l linParams, x, y []T, slot int) {
	out, in := l.w.shape[0], l.w.shape[1]
	R := len(x) / in
	w := valsOf(l.w, scratchPtr[T](sp.ar, ownWiden, slot))
	var beta T
	if l.b != nil {
		b := valsOf(l.b, scratchPtr[T](sp.ar, ownWiden, wBias+slot))
		for r := range R {
			copy(y[r*out:(r+1)*out], b)
		}
		beta = 1
	}
	gemm(false, true, R, out, in, 1, x, in, w, in, beta, y, out)
	if l.lora != nil {
		loraForward(sp, l.lora, x, y, R, in, out, slot)
	}
}

// linearBack adds dW += dyᵀ·x and db += Σ_rows dy into the sinks, and sets dx = dy·W (adds
// it when accumulate); dy's rows are ldy apart (the packed attention gradient).
func linearBack[T num](sp *layerSpec, l linParams, x, dy []T, ldy int, dx []T, accumulate bool, slot int) {
	out, in := l.w.shape[0], l.w.shape[1]
	R := len(x) / in
	if dw := gradOf[T](l.w); dw != nil {
		gemm(true, false, out, in, R, 1, dy, ldy, x, in, 1, dw, in)
	}
	if db := gradOf[T](l.b); db != nil {
		parallelRows(out, R, func(c0, c1 int) {
			for r := range R {
				row := dy[r*ldy : r*ldy+out]
				for c := c0; c < c1; c++ {
					db[c] += row[c]
				}
			}
		})
	}
	var beta T
	if accumulate {
		beta = 1
	}
	w := valsOf(l.w, scratchPtr[T](sp.ar, ownWiden, slot))
	gemm(false, false, R, in, out, 1, dy, ldy, w, in, beta, dx, in)
	if l.lora != nil {
		loraBackward(sp, l.lora, x, dy, ldy, dx, R, in, out, slot)
	}
}

// addInto sets dst = src + dst element-wise.
func addInto[T num](dst, src []T) {
	parallelBlocks(len(dst), func(_, i0, i1 int) {
		d, s := dst[i0:i1], src[i0:i1]
		for i := range d {
			d[i] = s[i] + d[i]
		}
	})
}
