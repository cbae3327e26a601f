//go:build !amd64

package model

func dotHalf(w []uint16, x []float32, dt DType) float32 { return dotHalfGeneric(w, x, dt) }

func dot2x4Half(w0, w1 []uint16, x0, x1, x2, x3 []float32, dt DType, out *[8]float32) {
	dot2x4HalfGeneric(w0, w1, x0, x1, x2, x3, dt, out)
}

func dotRowsHalf(out []float32, w []uint16, x []float32, n int, dt DType) {
	dotRowsHalfGeneric(out, w, x, n, dt)
}
