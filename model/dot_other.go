//go:build !amd64

package model

func dot(a, b []float32) float32 { return dotGeneric(a, b) }

func dot4(w, x0, x1, x2, x3 []float32) (float32, float32, float32, float32) {
	return dot4Generic(w, x0, x1, x2, x3)
}

func dot2x4(w0, w1, x0, x1, x2, x3 []float32, out *[8]float32) {
	dot2x4Generic(w0, w1, x0, x1, x2, x3, out)
}

func expInPlace(x []float32) { expGeneric(x) }

func swiglu(gate, up []float32) { swigluGeneric(gate, up) }

func axpy(y, x []float32, a float32) { axpyGeneric(y, x, a) }

func axpy4(y, x0, x1, x2, x3 []float32, a *[4]float32) { axpy4Generic(y, x0, x1, x2, x3, a) }
