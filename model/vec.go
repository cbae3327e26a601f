package model

import "math"

// The generic vector kernels: the reference the assembly ones are tested against, and what
// runs without AVX2 or on other architectures.

// expGeneric replaces each x[i] with exp(x[i]).
func expGeneric(x []float32) {
	for i, v := range x {
		x[i] = float32(math.Exp(float64(v)))
	}
}

// swigluGeneric sets gate[i] = silu(gate[i])·up[i].
func swigluGeneric(gate, up []float32) {
	up = up[:len(gate)]
	for i, g := range gate {
		gate[i] = g / (1 + float32(math.Exp(float64(-g)))) * up[i]
	}
}

// axpyGeneric adds a·x to y.
func axpyGeneric(y, x []float32, a float32) {
	x = x[:len(y)]
	for i := range y {
		y[i] += a * x[i]
	}
}

// axpy4Generic adds a[0]·x0 + a[1]·x1 + a[2]·x2 + a[3]·x3 to y.
func axpy4Generic(y, x0, x1, x2, x3 []float32, a *[4]float32) {
	n := len(y)
	x0, x1, x2, x3 = x0[:n], x1[:n], x2[:n], x3[:n]
	for i := range y {
		y[i] += a[0]*x0[i] + a[1]*x1[i] + a[2]*x2[i] + a[3]*x3[i]
	}
}
