//go:build openblas && cgo && amd64

package trainer

/*
#cgo CFLAGS: -O3 -Wno-psabi
#include "kernels_openblas.h"
*/
import "C"

import "unsafe"

// cKernels says that the C kernels of kernels_openblas.c exist: with kernelsAVX2 the float32
// element-wise loops (swigluFwdRows, swigluBackRows, expShift, the attention softmax, logSumExp) run
// them instead of the Go loops, which remain for float64, for builds without -tags openblas
// and for CPUs without AVX2+FMA (where the kernels' SSE2 copy is slower than the Go loops; it
// is kept so that the C entry points are safe on any x86-64, and tested).
const cKernels = true

// kernelsAVX2 says whether the C kernels run their AVX2+FMA copy (the CPU has AVX2 and FMA).
var kernelsAVX2 = C.ak_init(1) != 0

// setKernelsAVX2 picks the AVX2+FMA copy (when the CPU has it) or the baseline one, for
// tests; it returns whether the AVX2 copy is in use.
func setKernelsAVX2(on bool) bool {
	a := 0
	if on {
		a = 1
	}
	kernelsAVX2 = C.ak_init(C.int(a)) != 0
	return kernelsAVX2
}

func f32p(s []float32) *C.float { return (*C.float)(unsafe.Pointer(unsafe.SliceData(s))) }

// swigluFwd32 sets s[i] = σ(g[i]) and y[i] = float32(g[i]·σ)·u[i] for i < len(g).
func swigluFwd32(g, u, y, s []float32) {
	n := len(g)
	_, _, _ = u[:n], y[:n], s[:n]
	C.ak_swiglu_fwd(C.long(n), f32p(g), f32p(u), f32p(y), f32p(s))
}

// swigluBack32 is swigluBackRows' loop over g, u, dy, σ = s into d (u unused when which is 1).
func swigluBack32(which int, g, u, dy, s, d []float32) {
	n := len(g)
	_, _, _ = dy[:n], s[:n], d[:n]
	if which == 0 {
		_ = u[:n]
	}
	C.ak_swiglu_back(C.long(n), C.int(which), f32p(g), f32p(u), f32p(dy), f32p(s), f32p(d))
}

// expShift32 is expShift for float32 (dst nil or at least as long as src).
func expShift32(dst, src []float32, shift, scale float64) float64 {
	var d *C.float
	if dst != nil {
		d = f32p(dst[:len(src)])
	}
	return float64(C.ak_exp_shift(C.long(len(src)), f32p(src), C.double(shift), C.double(scale), d))
}

// causalSoftmax32 turns each row i of the [n, n] block p (row stride ld) into the softmax of
// its first i+1 entries, zeros after: probs' loop.
func causalSoftmax32(p []float32, n, ld int) {
	if n == 0 {
		return
	}
	_ = p[(n-1)*ld+n-1]
	C.ak_causal_softmax(C.long(n), f32p(p), C.long(ld))
}

// lseParts32 returns the row's maximum and Σ e^(x-max) (logSumExp's parts).
func lseParts32(row []float32) (mx, z float64) {
	var m C.double
	z = float64(C.ak_lse_parts(C.long(len(row)), f32p(row), &m))
	return float64(m), z
}
