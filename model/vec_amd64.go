//go:build amd64

package model

//go:noescape
func expAVX2(x *float32, n int)

//go:noescape
func swigluAVX2(gate, up *float32, n int)

//go:noescape
func axpyAVX2(y, x *float32, a float32, n int)

//go:noescape
func axpy4AVX2(y, x0, x1, x2, x3 *float32, a *[4]float32, n int)

// expInPlace replaces each x[i] with exp(x[i]); the AVX2 path is within about 2e-7 relative.
func expInPlace(x []float32) {
	m := len(x) &^ 7
	if !useAVX2 || m == 0 {
		expGeneric(x)
		return
	}
	expAVX2(&x[0], m)
	expGeneric(x[m:])
}

// swiglu sets gate[i] = silu(gate[i])·up[i].
func swiglu(gate, up []float32) {
	m := len(gate) &^ 7
	if !useAVX2 || m == 0 {
		swigluGeneric(gate, up)
		return
	}
	up = up[:len(gate)]
	swigluAVX2(&gate[0], &up[0], m)
	swigluGeneric(gate[m:], up[m:])
}

// axpy adds a·x to y.
func axpy(y, x []float32, a float32) {
	m := len(y) &^ 7
	if !useAVX2 || m == 0 {
		axpyGeneric(y, x, a)
		return
	}
	x = x[:len(y)]
	axpyAVX2(&y[0], &x[0], a, m)
	axpyGeneric(y[m:], x[m:], a)
}

// axpy4 adds a[0]·x0 + a[1]·x1 + a[2]·x2 + a[3]·x3 to y.
func axpy4(y, x0, x1, x2, x3 []float32, a *[4]float32) {
	n := len(y)
	m := n &^ 7
	if !useAVX2 || m == 0 {
		axpy4Generic(y, x0, x1, x2, x3, a)
		return
	}
	x0, x1, x2, x3 = x0[:n], x1[:n], x2[:n], x3[:n]
	axpy4AVX2(&y[0], &x0[0], &x1[0], &x2[0], &x3[0], a, m)
	axpy4Generic(y[m:], x0[m:], x1[m:], x2[m:], x3[m:], a)
}
