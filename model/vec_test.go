package model

import (
	"math"
	"math/rand/v2"
	"testing"
)

// The vector kernels of attention and the MLP agree with float64 arithmetic on every length
// (the assembly covers multiples of 8, Go the rest) and across exp's whole float32 range.
func TestVectorKernelsAgreeWithFloat64Reference(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	randoms := func(n int, scale float64) []float32 {
		x := make([]float32, n)
		for i := range x {
			x[i] = float32((rng.Float64()*2 - 1) * scale)
		}
		return x
	}
	// exp(x) for softmax inputs (<= 0), SwiGLU's -gate, and past both ends of float32.
	special := []float32{0, -0.0, 1e-8, -1e-8, 0.5, -0.5, 1, -1, 10, -10, 80, -80, 88, -87, 88.7, -87.4, 100, -100, -1e4}
	for _, n := range []int{1, 7, 8, 9, 16, 31, 32, 33, 100, 257} {
		for _, scale := range []float64{1, 20, 90} {
			x := randoms(n, scale)
			if scale == 90 {
				copy(x, special)
			}
			got := append([]float32(nil), x...)
			expInPlace(got)
			for i, v := range x {
				want := math.Exp(float64(v))
				switch {
				case v > 88.3762:
					// Near or past float32's largest: the assembly clamps, Go overflows to +Inf.
					if got[i] < 1e38 {
						t.Errorf("exp(%g) = %g, want float32's largest values or +Inf", v, got[i])
					}
				case want < 1.2e-38:
					// Below float32's smallest normal: FLT_MIN or less, never more.
					if got[i] < 0 || got[i] > 1.18e-38 {
						t.Errorf("exp(%g) = %g, want at most 1.18e-38", v, got[i])
					}
				case math.Abs(float64(got[i])-want) > 4e-7*want:
					t.Errorf("n=%d: exp(%g) = %.9g, want %.9g (rel %.2g)", n, v, got[i], want, math.Abs(float64(got[i])-want)/want)
				}
			}

			gate, up := randoms(n, scale), randoms(n, 2)
			if scale == 90 {
				copy(gate, special)
			}
			sw := append([]float32(nil), gate...)
			swiglu(sw, up)
			for i, g := range gate {
				want := float64(g) / (1 + math.Exp(-float64(g))) * float64(up[i])
				if math.Abs(float64(sw[i])-want) > 1e-6*math.Max(1, math.Abs(want)) {
					t.Errorf("n=%d: swiglu(%g, %g) = %.9g, want %.9g", n, g, up[i], sw[i], want)
				}
			}

			xs := [4][]float32{randoms(n, 1), randoms(n, 1), randoms(n, 1), randoms(n, 1)}
			a := [4]float32{0.25, -1.5, 3, 0.125}
			y1, y4 := randoms(n, 1), make([]float32, n)
			copy(y4, y1)
			want1, want4 := make([]float64, n), make([]float64, n)
			for i := range n {
				want1[i] = float64(y1[i]) + float64(a[1])*float64(xs[1][i])
				want4[i] = float64(y4[i])
				for k := range 4 {
					want4[i] += float64(a[k]) * float64(xs[k][i])
				}
			}
			axpy(y1, xs[1], a[1])
			axpy4(y4, xs[0], xs[1], xs[2], xs[3], &a)
			for i := range n {
				if math.Abs(float64(y1[i])-want1[i]) > 1e-6 || math.Abs(float64(y4[i])-want4[i]) > 4e-6 {
					t.Fatalf("n=%d i=%d: axpy %g (want %g), axpy4 %g (want %g)", n, i, y1[i], want1[i], y4[i], want4[i])
				}
			}
		}
	}
}
