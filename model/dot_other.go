//go:build !amd64

package model

func dot(a, b []float32) float32 { return dotGeneric(a, b) }

func dot4(w, x0, x1, x2, x3 []float32) (float32, float32, float32, float32) {
	return dot4Generic(w, x0, x1, x2, x3)
}

func dot2x4(w0, w1, x0, x1, x2, x3 []float32, out *[8]float32) {
	dot2x4Generic(w0, w1, x0, x1, x2, x3, out)
}
