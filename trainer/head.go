package trainer

import (
	"fmt"

	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"
)

// The model's head as one fused op, "fused linear cross-entropy": for each scored slot m of
// the packed batch, lp[m] = log_softmax(rms(x[rows[m]])·Wᵀ)[toks[m]]. A batch's
// [scored positions × vocab] logits are never held: the forward runs lm_head over blocks of
// at most `chunk` scored rows and keeps per row only the log-sum-exp; the backward recomputes
// each block's logits, turns them into dlp·(onehot - softmax) in place, and from that block
// alone adds dW += Gᵀ·h into the head's sink and sets dh = G·W. At the 0.5B shape (vocab
// 151,646) the full logits of 8 pairs of 64-token responses were 620 MB, and their gradient
// as much again; a block of 64 rows is 39 MB.

// headChunkBytes bounds one block's logits.
const headChunkBytes = 64 << 20

// headSpec is the final norm and lm_head of one graph.
type headSpec struct {
	norm, head *param
	eps        float64
	D, V       int
	chunk      int // scored rows per block
	st         *batchState
	ar         *arena
	lse        []float64 // per scored slot, from a run's forward to its backward
}

// defaultHeadChunk is the rows per block that keeps a block's logits under headChunkBytes.
func defaultHeadChunk(V, elemBytes int) int { return max(1, headChunkBytes/(V*elemBytes)) }

// Head arena slots (owner ownHead).
const (
	hNormed = iota // [M, D] normalised scored rows, kept from forward to backward
	hLogits        // [chunk, V]
	hRows          // [chunk, D] a block's normalised rows (backward)
	hDRows         // [chunk, D] their gradient
	hWiden         // a block of BF16 head rows widened
	hDX            // [N, D] the backward's output
)

// headWidenRows is the BF16 head rows widened at a time (about 16 MB of float32).
const headWidenRows = 4096

func headOp(sp *headSpec, x *G.Node) (*G.Node, error) {
	N := x.Shape()[0]
	M := sp.st.M
	fwd := func(t []*tensor.Dense, ob *outBuf) (*tensor.Dense, error) {
		return byDtype(t, ob, func(t []*tensor.Dense, ob *outBuf) (*tensor.Dense, error) { return headFwd[float32](sp, t, ob) },
			func(t []*tensor.Dense, ob *outBuf) (*tensor.Dense, error) { return headFwd[float64](sp, t, ob) })
	}
	diff := func(inputs G.Nodes, _, grad *G.Node) (G.Nodes, error) {
		dx, err := applyFused("head.d", tensor.Shape{N, sp.D}, func(t []*tensor.Dense, ob *outBuf) (*tensor.Dense, error) {
			return byDtype(t, ob, func(t []*tensor.Dense, ob *outBuf) (*tensor.Dense, error) { return headBack[float32](sp, t, ob) },
				func(t []*tensor.Dense, ob *outBuf) (*tensor.Dense, error) { return headBack[float64](sp, t, ob) })
		}, nil, inputs[0], grad)
		if err != nil {
			return nil, err
		}
		return G.Nodes{dx}, nil
	}
	return applyFused("head", tensor.Shape{M}, fwd, diff, x)
}

// scored is the number of real scored slots: pack fills slots from 0 and pads at the end.
func (p *packed) scored() int {
	n := 0
	for n < len(p.seqOf) && p.seqOf[n] >= 0 {
		n++
	}
	return n
}

func headFwd[T num](sp *headSpec, t []*tensor.Dense, ob *outBuf) (*tensor.Dense, error) {
	p := sp.st.cur
	x := data[T](t[0])
	M, D, V := len(p.rows), sp.D, sp.V
	if M != sp.st.M {
		return nil, fmt.Errorf("head: %d scored slots in a graph of %d", M, sp.st.M)
	}
	out := outDense[T](ob, true, M) // padding slots score 0
	o := data[T](out)
	if len(sp.lse) != M {
		sp.lse = make([]float64, M)
	}
	n := p.scored()
	normed := buf[T](sp.ar, ownHead, hNormed, M*D)
	w := valsOf(sp.norm, scratchPtr[T](sp.ar, ownHead, hWiden+1))
	parallelRows(n, D, func(m0, m1 int) {
		for m := m0; m < m1; m++ {
			r := p.rows[m]
			rmsRow(x[r*D:(r+1)*D], w, normed[m*D:(m+1)*D], sp.eps)
		}
	})
	for m0 := 0; m0 < n; m0 += sp.chunk {
		m1 := min(m0+sp.chunk, n)
		logits := headLogits(sp, normed[m0*D:m1*D], m1-m0)
		parallelRows(m1-m0, V, func(j0, j1 int) {
			for j := j0; j < j1; j++ {
				m := m0 + j
				row := logits[j*V : (j+1)*V]
				sp.lse[m] = logSumExp(row)
				o[m] = T(float64(row[p.toks[m]]) - sp.lse[m])
			}
		})
	}
	return out, nil
}

// headLogits returns the [rows, V] logits h·Wᵀ of rows normalised rows h, in the arena.
func headLogits[T num](sp *headSpec, h []T, rows int) []T {
	D, V := sp.D, sp.V
	logits := buf[T](sp.ar, ownHead, hLogits, rows*V)
	if sp.head.bf16 == nil {
		gemm(false, true, rows, V, D, 1, h, D, valsOf(sp.head, (*[]T)(nil)), D, 0, logits, V)
		return logits
	}
	for v0 := 0; v0 < V; v0 += headWidenRows {
		v1 := min(v0+headWidenRows, V)
		w := rowsOf(sp.head, v0, v1, scratchPtr[T](sp.ar, ownHead, hWiden))
		gemm(false, true, rows, v1-v0, D, 1, h, D, w, D, 0, logits[v0:], V)
	}
	return logits
}

// headBack is dx (zero but at scored rows) from the gradient g of the slots' log-probs; the
// head's and the norm's weight gradients go into their sinks.
func headBack[T num](sp *headSpec, t []*tensor.Dense, _ *outBuf) (*tensor.Dense, error) {
	p := sp.st.cur
	x, g := data[T](t[0]), data[T](t[1])
	D, V := sp.D, sp.V
	dxT := denseOf[T](sp.ar, ownHead, hDX, len(x)/D, D)
	dx := data[T](dxT)
	clear(dx)
	if len(sp.lse) != len(p.rows) {
		return nil, fmt.Errorf("head backward: no forward log-sum-exps for %d slots", len(p.rows))
	}
	// Only slots with a gradient (not padding, not masked) cost a row of lm_head.
	var live []int
	for m := range p.scored() {
		if g[m] != 0 {
			live = append(live, m)
		}
	}
	normed := buf[T](sp.ar, ownHead, hNormed, len(p.rows)*D)
	wn := valsOf(sp.norm, scratchPtr[T](sp.ar, ownHead, hWiden+1))
	dwn := gradOf[T](sp.norm)
	dW := gradOf[T](sp.head)
	for c0 := 0; c0 < len(live); c0 += sp.chunk {
		part := live[c0:min(c0+sp.chunk, len(live))]
		rows := len(part)
		h := buf[T](sp.ar, ownHead, hRows, rows*D)
		for j, m := range part {
			copy(h[j*D:(j+1)*D], normed[m*D:(m+1)*D])
		}
		gl := headLogits(sp, h, rows)
		// gl[j] = g·(onehot(tok) - softmax): the gradient of g·log_softmax(logits)[tok].
		parallelRows(rows, V, func(j0, j1 int) {
			for j := j0; j < j1; j++ {
				m := part[j]
				gm := float64(g[m])
				row := gl[j*V : (j+1)*V]
				expShift(row, row, sp.lse[m], -gm) // row[v] = -gm·e^(logit[v]-lse)
				row[p.toks[m]] += T(gm)
			}
		})
		if dW != nil {
			gemm(true, false, V, D, rows, 1, gl, V, h, D, 1, dW, D)
		}
		dh := buf[T](sp.ar, ownHead, hDRows, rows*D)
		if sp.head.bf16 == nil {
			gemm(false, false, rows, D, V, 1, gl, V, valsOf(sp.head, (*[]T)(nil)), D, 0, dh, D)
		} else {
			for v0 := 0; v0 < V; v0 += headWidenRows {
				v1 := min(v0+headWidenRows, V)
				w := rowsOf(sp.head, v0, v1, scratchPtr[T](sp.ar, ownHead, hWiden))
				beta := T(0)
				if v0 > 0 {
					beta = 1
				}
				gemm(false, false, rows, D, v1-v0, 1, gl[v0:], V, w, D, beta, dh, D)
			}
		}
		// The norm's backward, row by row into dx (each scored slot has its own row).
		var part64 []float64
		if dwn != nil {
			part64 = make([]float64, D)
		}
		for j, m := range part {
			r := p.rows[m]
			rmsBackRow(x[r*D:(r+1)*D], wn, dh[j*D:(j+1)*D], dx[r*D:(r+1)*D], part64, sp.eps)
		}
		for i, v := range part64 {
			dwn[i] += T(v)
		}
	}
	return dxT, nil
}
