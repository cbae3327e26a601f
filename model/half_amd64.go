//go:build amd64

package model

import "golang.org/x/sys/cpu"

// useF16C gates the F16 kernels, which widen with F16C's VCVTPH2PS.
var useF16C = useAVX2 && cpu.X86.HasF16C

//go:noescape
func dotBF16AVX2(w *uint16, x *float32, n int) float32

//go:noescape
func dotF16AVX2(w *uint16, x *float32, n int) float32

//go:noescape
func dot2x4BF16AVX2(w0, w1 *uint16, x0, x1, x2, x3 *float32, n int, out *[8]float32)

//go:noescape
func dot2x4F16AVX2(w0, w1 *uint16, x0, x1, x2, x3 *float32, n int, out *[8]float32)

//go:noescape
func dot2x4BF16AVX512(w0, w1 *uint16, x0, x1, x2, x3 *float32, n int, out *[8]float32)

//go:noescape
func dot2x4F16AVX512(w0, w1 *uint16, x0, x1, x2, x3 *float32, n int, out *[8]float32)

//go:noescape
func dotBF16AVX512(w *uint16, x *float32, n int) float32

//go:noescape
func dotF16AVX512(w *uint16, x *float32, n int) float32

//go:noescape
func dotRowsBF16AVX512(w *uint16, x *float32, n, rows int, out *float32)

//go:noescape
func dotRowsF16AVX512(w *uint16, x *float32, n, rows int, out *float32)

// dotRowsHalf sets out[r] = (row r of w, n elements) · x for len(out) consecutive rows.
func dotRowsHalf(out []float32, w []uint16, x []float32, n int, dt DType) {
	rows := len(out)
	if rows == 0 {
		return
	}
	w = w[:rows*n]
	if !useAVX512 || n%16 != 0 || !halfAsm(dt) {
		dotRowsHalfGeneric(out, w, x, n, dt)
		return
	}
	x = x[:n]
	if dt == BF16 {
		dotRowsBF16AVX512(&w[0], &x[0], n, rows, &out[0])
	} else {
		dotRowsF16AVX512(&w[0], &x[0], n, rows, &out[0])
	}
}

func halfAsm(dt DType) bool { return useAVX2 && (dt == BF16 || useF16C) }

// dotHalf returns w·x with w's BF16 or F16 (dt) elements widened to float32.
func dotHalf(w []uint16, x []float32, dt DType) float32 {
	n := len(w)
	if n < 8 || !halfAsm(dt) {
		return dotHalfGeneric(w, x, dt)
	}
	x = x[:n]
	m := n &^ 7
	var s float32
	switch {
	case dt == BF16 && useAVX512:
		s = dotBF16AVX512(&w[0], &x[0], m)
	case dt == BF16:
		s = dotBF16AVX2(&w[0], &x[0], m)
	case useAVX512:
		s = dotF16AVX512(&w[0], &x[0], m)
	default:
		s = dotF16AVX2(&w[0], &x[0], m)
	}
	if m < n {
		s += dotHalfGeneric(w[m:], x[m:], dt)
	}
	return s
}

// dot2x4Half is dot2x4 over half-precision weight rows.
func dot2x4Half(w0, w1 []uint16, x0, x1, x2, x3 []float32, dt DType, out *[8]float32) {
	n := len(w0)
	if n < 8 || !halfAsm(dt) {
		dot2x4HalfGeneric(w0, w1, x0, x1, x2, x3, dt, out)
		return
	}
	w1, x0, x1, x2, x3 = w1[:n], x0[:n], x1[:n], x2[:n], x3[:n]
	m := n &^ 7
	switch {
	case dt == BF16 && useAVX512:
		dot2x4BF16AVX512(&w0[0], &w1[0], &x0[0], &x1[0], &x2[0], &x3[0], m, out)
	case dt == BF16:
		dot2x4BF16AVX2(&w0[0], &w1[0], &x0[0], &x1[0], &x2[0], &x3[0], m, out)
	case useAVX512:
		dot2x4F16AVX512(&w0[0], &w1[0], &x0[0], &x1[0], &x2[0], &x3[0], m, out)
	default:
		dot2x4F16AVX2(&w0[0], &w1[0], &x0[0], &x1[0], &x2[0], &x3[0], m, out)
	}
	if m < n {
		var tail [8]float32
		dot2x4HalfGeneric(w0[m:], w1[m:], x0[m:], x1[m:], x2[m:], x3[m:], dt, &tail)
		for i := range out {
			out[i] += tail[i]
		}
	}
}
