//go:build amd64

package model

import "golang.org/x/sys/cpu"

// useAVX2 selects the assembly kernels; tests flip it to compare them with the Go ones.
var useAVX2 = cpu.X86.HasAVX2 && cpu.X86.HasFMA

// useAVX512 selects the 512-bit decode kernel on CPUs that have AVX-512F (and the OS saves
// its registers, which x/sys/cpu checks).
var useAVX512 = useAVX2 && cpu.X86.HasAVX512F

//go:noescape
func dotAVX2(a, b *float32, n int) float32

//go:noescape
func dot4AVX2(w, x0, x1, x2, x3 *float32, n int, out *[4]float32)

func dot(a, b []float32) float32 {
	n := len(a)
	if !useAVX2 || n < 8 {
		return dotGeneric(a, b)
	}
	b = b[:n]
	m := n &^ 7
	s := dotAVX2(&a[0], &b[0], m)
	for i := m; i < n; i++ {
		s += a[i] * b[i]
	}
	return s
}

func dot4(w, x0, x1, x2, x3 []float32) (float32, float32, float32, float32) {
	n := len(w)
	if !useAVX2 || n < 8 {
		return dot4Generic(w, x0, x1, x2, x3)
	}
	x0, x1, x2, x3 = x0[:n], x1[:n], x2[:n], x3[:n]
	m := n &^ 7
	var out [4]float32
	dot4AVX2(&w[0], &x0[0], &x1[0], &x2[0], &x3[0], m, &out)
	for i := m; i < n; i++ {
		out[0] += w[i] * x0[i]
		out[1] += w[i] * x1[i]
		out[2] += w[i] * x2[i]
		out[3] += w[i] * x3[i]
	}
	return out[0], out[1], out[2], out[3]
}

//go:noescape
func dot2x4AVX512(w0, w1, x0, x1, x2, x3 *float32, n int, out *[8]float32)

//go:noescape
func dot2x4AVX2(w0, w1, x0, x1, x2, x3 *float32, n int, out *[8]float32)

// dot2x4 returns w0·x0..x3 in out[0:4] and w1·x0..x3 in out[4:8].
func dot2x4(w0, w1, x0, x1, x2, x3 []float32, out *[8]float32) {
	n := len(w0)
	if !useAVX2 || n < 8 {
		dot2x4Generic(w0, w1, x0, x1, x2, x3, out)
		return
	}
	w1, x0, x1, x2, x3 = w1[:n], x0[:n], x1[:n], x2[:n], x3[:n]
	m := n &^ 7
	if useAVX512 {
		dot2x4AVX512(&w0[0], &w1[0], &x0[0], &x1[0], &x2[0], &x3[0], m, out)
	} else {
		dot2x4AVX2(&w0[0], &w1[0], &x0[0], &x1[0], &x2[0], &x3[0], m, out)
	}
	for i := m; i < n; i++ {
		out[0] += w0[i] * x0[i]
		out[1] += w0[i] * x1[i]
		out[2] += w0[i] * x2[i]
		out[3] += w0[i] * x3[i]
		out[4] += w1[i] * x0[i]
		out[5] += w1[i] * x1[i]
		out[6] += w1[i] * x2[i]
		out[7] += w1[i] * x3[i]
	}
}
