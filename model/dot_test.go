package model

import (
	"math"
	"math/rand/v2"
	"testing"
)

func TestDotKernelsAgreeWithFloat64Reference(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 1))
	vec := func(n int) []float32 {
		v := make([]float32, n)
		for i := range v {
			v[i] = float32(rng.NormFloat64())
		}
		return v
	}
	ref := func(a, b []float32) float64 {
		var s float64
		for i := range a {
			s += float64(a[i]) * float64(b[i])
		}
		return s
	}
	for _, n := range []int{0, 1, 7, 8, 9, 15, 16, 17, 31, 32, 33, 100, 512, 1408} {
		w, x0, x1, x2, x3 := vec(n), vec(n), vec(n), vec(n), vec(n)
		tol := 1e-5 * math.Sqrt(float64(n)+1) * 4
		if d := math.Abs(float64(dot(w, x0)) - ref(w, x0)); d > tol {
			t.Errorf("n=%d: dot off by %g", n, d)
		}
		if d := math.Abs(float64(dotGeneric(w, x0)) - ref(w, x0)); d > tol {
			t.Errorf("n=%d: dotGeneric off by %g", n, d)
		}
		w1 := vec(n)
		var o, og [8]float32
		dot2x4(w, w1, x0, x1, x2, x3, &o)
		dot2x4Generic(w, w1, x0, x1, x2, x3, &og)
		for i, x := range [][]float32{x0, x1, x2, x3} {
			for r, wr := range [][]float32{w, w1} {
				want := ref(wr, x)
				if d := math.Abs(float64(o[4*r+i]) - want); d > tol {
					t.Errorf("n=%d: dot2x4[%d][%d] off by %g", n, r, i, d)
				}
				if d := math.Abs(float64(og[4*r+i]) - want); d > tol {
					t.Errorf("n=%d: dot2x4Generic[%d][%d] off by %g", n, r, i, d)
				}
			}
		}
		s0, s1, s2, s3 := dot4(w, x0, x1, x2, x3)
		g0, g1, g2, g3 := dot4Generic(w, x0, x1, x2, x3)
		for i, x := range [][]float32{x0, x1, x2, x3} {
			want := ref(w, x)
			if d := math.Abs(float64([]float32{s0, s1, s2, s3}[i]) - want); d > tol {
				t.Errorf("n=%d: dot4[%d] off by %g", n, i, d)
			}
			if d := math.Abs(float64([]float32{g0, g1, g2, g3}[i]) - want); d > tol {
				t.Errorf("n=%d: dot4Generic[%d] off by %g", n, i, d)
			}
		}
	}
}
