package trainer

import (
	"math"
	"sync"
)

// attnSpec is the shape of a fused causal self-attention: S sequences of T positions laid out
// token-major ([S·T, heads·hd] rows, as the projections produce them), H query heads sharing
// KV key/value heads (query head h reads kv head h/(H/KV)), RoPE at positions 0..T-1 applied
// inside (HF's rotate_half pairing i with i+hd/2).
type attnSpec struct {
	S, T, H, KV, hd int
	cos, sin        []float64 // [T, hd/2], float32-rounded like model.ropeTables
	// scratch holds each forGroups worker's per-head buffers ([]T), reused by every forward
	// and backward of this spec (a graph runs one op at a time).
	scratch []any
}

// scratchFor returns worker w's scratch of n elements (contents unspecified).
func scratchFor[T num](a *attnSpec, w, n int) []T {
	buf, ok := a.scratch[w].([]T)
	if !ok || len(buf) < n {
		buf = make([]T, n)
		a.scratch[w] = buf
	}
	return buf[:n]
}

func newAttnSpec(S, T, H, KV, hd int, invFreq []float32) *attnSpec {
	half := hd / 2
	a := &attnSpec{S: S, T: T, H: H, KV: KV, hd: hd, cos: make([]float64, T*half), sin: make([]float64, T*half)}
	for p := range T {
		for i, f := range invFreq {
			ang := float64(float32(p) * f)
			a.cos[p*half+i] = float64(float32(math.Cos(ang)))
			a.sin[p*half+i] = float64(float32(math.Sin(ang)))
		}
	}
	return a
}

// gatherHead copies one head's [T, hd] block of sequence s out of a token-major matrix with
// `heads` heads, rotating it by RoPE when rope is set (in T's arithmetic, like model's
// applyRope).
func gatherHead[T num](a *attnSpec, dst, src []T, s, head, heads int, rope bool) {
	hd, half := a.hd, a.hd/2
	for t := range a.T {
		off := ((s*a.T+t)*heads + head) * hd
		row := dst[t*hd : (t+1)*hd]
		copy(row, src[off:off+hd])
		if rope {
			c, sn := a.cos[t*half:(t+1)*half], a.sin[t*half:(t+1)*half]
			for i := range half {
				x1, x2 := row[i], row[i+half]
				row[i] = x1*T(c[i]) - x2*T(sn[i])
				row[i+half] = x2*T(c[i]) + x1*T(sn[i])
			}
		}
	}
}

// unrope applies the transpose of the rotation (the gradient of rope) in place.
func unrope[T num](a *attnSpec, g []T) {
	hd, half := a.hd, a.hd/2
	for t := range a.T {
		c, sn := a.cos[t*half:(t+1)*half], a.sin[t*half:(t+1)*half]
		row := g[t*hd : (t+1)*hd]
		for i := range half {
			d1, d2 := row[i], row[i+half]
			row[i] = d1*T(c[i]) + d2*T(sn[i])
			row[i+half] = -d1*T(sn[i]) + d2*T(c[i])
		}
	}
}

// scatter writes a [T, hd] block into head `head` of sequence s of a token-major matrix with
// `width` columns, starting at column col0.
func scatter[T num](dst, src []T, a *attnSpec, s, col0, width int) {
	hd := a.hd
	for t := range a.T {
		copy(dst[(s*a.T+t)*width+col0:(s*a.T+t)*width+col0+hd], src[t*hd:(t+1)*hd])
	}
}

// probs fills p ([T, T]) with the causal softmax of q·kᵀ·scale; exponentials and sums in
// float64 like model's attention.
func probs[T num](a *attnSpec, p, q, k []T) {
	n, hd := a.T, a.hd
	// Causal: rows [0, n/2) need only columns [0, n/2); the block above is cleared below.
	h := n / 2
	scale := T(1 / math.Sqrt(float64(hd)))
	gemm(false, true, h, h, hd, scale, q, hd, k, hd, 0, p, n)
	gemm(false, true, n-h, n, hd, scale, q[h*hd:], hd, k, hd, 0, p[h*n:], n)
	if cKernels && kernelsAVX2 {
		if p32, ok := any(p).([]float32); ok {
			causalSoftmax32(p32, n, n) // the loop below in C (kernels_openblas.c)
			return
		}
	}
	for i := range n {
		row := p[i*n : (i+1)*n]
		mx := math.Inf(-1)
		for _, v := range row[:i+1] {
			mx = max(mx, float64(v))
		}
		z := expShift(row[:i+1], row[:i+1], mx, 1) // row[j] = e^(row[j]-mx)
		for j := range row[:i+1] {
			row[j] = T(float64(row[j]) / z)
		}
		clear(row[i+1:])
	}
}

// causalPV sets out = alpha·P·X for a lower-triangular [n, n] P and [n, hd] X (row strides
// ldx, ldo): rows [0, n/2) of P are zero from column n/2 on, so they multiply only X's first
// n/2 rows.
func causalPV[T num](n, hd int, alpha T, p, x []T, ldx int, out []T, ldo int) {
	h := n / 2
	gemm(false, false, h, hd, h, alpha, p, n, x, ldx, 0, out, ldo)
	gemm(false, false, n-h, hd, n, alpha, p[h*n:], n, x, ldx, 0, out[h*ldo:], ldo)
}

// causalPtX adds alpha·Pᵀ·X into out for a lower-triangular [n, n] P: rows [n/2, n) of Pᵀ
// (P's columns) are zero in P's rows [0, n/2).
func causalPtX[T num](n, hd int, alpha T, p, x []T, ldx int, out []T, ldo int) {
	h := n / 2
	gemm(true, false, h, hd, n, alpha, p, n, x, ldx, 1, out, ldo)
	gemm(true, false, n-h, hd, n-h, alpha, p[h*n+h:], n, x[h*ldx:], ldx, 1, out[h*ldo:], ldo)
}

// forGroups runs fn over (sequence, kv head) pairs on threads() goroutines; groups write
// disjoint outputs.
func (a *attnSpec) forGroups(fn func(w, s, kvh int)) {
	n := a.S * a.KV
	workers := min(threads(), n)
	if len(a.scratch) < workers {
		a.scratch = append(a.scratch, make([]any, workers-len(a.scratch))...)
	}
	var wg sync.WaitGroup
	next := make(chan int, n)
	for i := range n {
		next <- i
	}
	close(next)
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for g := range next {
				fn(w, g/a.KV, g%a.KV)
			}
		}()
	}
	wg.Wait()
}

// The kernels work in the graph's dtype (float32 matmuls through Sgemm), with softmax
// normalisers and score-gradient sums in float64.
// attnForward sets out = softmax(rope(q)·rope(k)ᵀ/√hd, causal)·v and keeps the attention
// probabilities ([S·H, T, T]) in probs for the backward.
func attnForward[T num](a *attnSpec, q, k, v, o, all []T) {
	T_, hd, grp := a.T, a.hd, a.H/a.KV
	a.forGroups(func(w, s, kvh int) {
		b, n := scratchFor[T](a, w, 2*T_*hd), T_*hd // every buffer is overwritten before use
		kr, qr := b[:n], b[n:]
		gatherHead(a, kr, k, s, kvh, a.KV, true)
		// V and the output need no rotation: the products read and write them in place,
		// strided by the token-major row width.
		vs := v[(s*T_*a.KV+kvh)*hd:]
		for h := kvh * grp; h < (kvh+1)*grp; h++ {
			gatherHead(a, qr, q, s, h, a.H, true)
			p := all[(s*a.H+h)*T_*T_ : (s*a.H+h+1)*T_*T_]
			probs(a, p, qr, kr)
			causalPV(T_, hd, 1, p, vs, a.KV*hd, o[(s*T_*a.H+h)*hd:], a.H*hd)
		}
	})
}

// attnBackward computes dq, dk and dv from the output gradient dout and the forward's
// probabilities, packed as [S·T, (H+2KV)·hd] rows in pd: every column is written.
func attnBackward[T num](a *attnSpec, q, k, v, dout, all, pd []T) {
	T_, hd, grp := a.T, a.hd, a.H/a.KV
	scale := 1 / math.Sqrt(float64(hd))
	width := (a.H + 2*a.KV) * hd
	a.forGroups(func(w, s, kvh int) {
		b, n := scratchFor[T](a, w, 5*T_*hd+T_*T_), T_*hd
		kr, qr, dq, dk, dv, dp := b[:n], b[n:2*n], b[2*n:3*n], b[3*n:4*n], b[4*n:5*n], b[5*n:]
		clear(dk) // dk and dv accumulate over the group's query heads
		clear(dv)
		gatherHead(a, kr, k, s, kvh, a.KV, true)
		// V and dO need no rotation: the products read them in place, strided.
		vs, ldv, ldo := v[(s*T_*a.KV+kvh)*hd:], a.KV*hd, a.H*hd
		for h := kvh * grp; h < (kvh+1)*grp; h++ {
			gatherHead(a, qr, q, s, h, a.H, true)
			do := dout[(s*T_*a.H+h)*hd:]
			p := all[(s*a.H+h)*T_*T_ : (s*a.H+h+1)*T_*T_]
			causalPtX(T_, hd, 1, p, do, ldo, dv, hd) // dV += Pᵀ·dO
			// dP = dO·Vᵀ on and below the diagonal (rows [0, T/2) only up to column T/2)
			half := T_ / 2
			gemm(false, true, half, half, hd, 1, do, ldo, vs, ldv, 0, dp, T_)
			gemm(false, true, T_-half, T_, hd, 1, do[half*ldo:], ldo, vs, ldv, 0, dp[half*T_:], T_)
			for i := range T_ {
				pr, dr := p[i*T_:(i+1)*T_], dp[i*T_:(i+1)*T_]
				var dot float64
				for j := range i + 1 {
					dot += float64(pr[j]) * float64(dr[j])
				}
				for j := range i + 1 {
					dr[j] = T(float64(pr[j]) * (float64(dr[j]) - dot)) // dScores
				}
				clear(dr[i+1:]) // zero above the diagonal (P is)
			}
			causalPV(T_, hd, T(scale), dp, kr, hd, dq, hd)  // dQr = dS·Kr
			causalPtX(T_, hd, T(scale), dp, qr, hd, dk, hd) // dKr += dSᵀ·Qr
			unrope(a, dq)
			scatter(pd, dq, a, s, h*hd, width)
		}
		unrope(a, dk)
		scatter(pd, dk, a, s, a.H*hd+kvh*hd, width)
		scatter(pd, dv, a, s, (a.H+a.KV)*hd+kvh*hd, width)
	})
}
