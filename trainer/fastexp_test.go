package trainer

import (
	"math"
	"math/rand/v2"
	"testing"
)

func TestExpFast(t *testing.T) {
	check := func(x float64) {
		t.Helper()
		want, got := math.Exp(x), expFast(x)
		if want < 1e-307 && got == 0 {
			return // a subnormal eˣ flushed to 0
		}
		if math.IsInf(want, 1) {
			if got != want {
				t.Fatalf("expFast(%g) = %g, want %g", x, got, want)
			}
			return
		}
		if rel := math.Abs(got-want) / want; rel > 1e-12 {
			t.Fatalf("expFast(%g) = %g, want %g (relative error %g)", x, got, want, rel)
		}
		// As float32, the two agree to the last bit but for a rare rounding tie.
		if f, g := float32(want), float32(got); f != g && math.Abs(float64(f-g)) > float64(math.Nextafter32(f, float32(math.Inf(1)))-f) {
			t.Fatalf("float32(expFast(%g)) = %g, want %g", x, g, f)
		}
	}
	for x := -750.0; x <= 720; x += 0.01 {
		check(x)
	}
	rng := rand.New(rand.NewPCG(1, 2))
	for range 1_000_000 {
		check((rng.Float64()*2 - 1) * 100)
		check((rng.Float64()*2 - 1) * 1e-3)
	}
	for _, x := range []float64{0, math.Copysign(0, -1), 1, -1, 708, 709, -708, -708.5, 88.7, -87.3, -103.9} {
		check(x)
	}
	if v := expFast(math.Inf(-1)); v != 0 {
		t.Errorf("expFast(-Inf) = %g", v)
	}
	if v := expFast(math.Inf(1)); !math.IsInf(v, 1) {
		t.Errorf("expFast(+Inf) = %g", v)
	}
	if v := expFast(math.NaN()); !math.IsNaN(v) {
		t.Errorf("expFast(NaN) = %g", v)
	}
}

func BenchmarkExp(b *testing.B) {
	xs := make([]float64, 4096)
	for i := range xs {
		xs[i] = -float64(i) / 300
	}
	b.Run("math", func(b *testing.B) {
		var s float64
		for range b.N {
			for _, x := range xs {
				s += math.Exp(x)
			}
		}
		_ = s
	})
	b.Run("fast", func(b *testing.B) {
		var s float64
		for range b.N {
			for _, x := range xs {
				s += expFast(x)
			}
		}
		_ = s
	})
}

// swigluFwdGo computes σ with expFast written out inline: it must agree with sigm bit
// for bit. (The float32 C kernel of -tags openblas is checked against it in kernels_test.go.)
func TestSwigluFwdSigmoid(t *testing.T) {

	var xs []float32
	for x := float32(-800); x <= 800; x += 0.0137 {
		xs = append(xs, x)
	}
	xs = append(xs, float32(math.Inf(1)), float32(math.Inf(-1)), 0, 1e-30, -1e-30)
	ones := make([]float32, len(xs))
	for i := range ones {
		ones[i] = 1
	}
	yd, sg := make([]float32, len(xs)), make([]float32, len(xs))
	swigluFwdGo(xs, ones, sg, yd)
	for i, x := range xs {
		s := sigm(float64(x))
		same := func(a, b float32) bool { return a == b || a != a && b != b }
		if !same(sg[i], float32(s)) || !same(yd[i], float32(float64(x)*s)) {
			t.Fatalf("swiglu at %g: σ %g, y %g; want %g, %g", x, sg[i], yd[i], float32(s), float32(float64(x)*s))
		}
	}
}

// expShift's Go loop: its inline exponentials are expFast's.
func TestExpShift(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	src := make([]float32, 5000)
	for i := range src {
		src[i] = float32(rng.NormFloat64() * 30)
	}
	src[7], src[8] = float32(math.Inf(-1)), -2000
	dst := make([]float32, len(src))
	z := expShiftGo(dst, src, 3.5, -0.25)
	var want float64
	for j, v := range src {
		e := expFast(float64(v) - 3.5)
		want += e
		if dst[j] != float32(-0.25*e) {
			t.Fatalf("dst[%d] = %g, want %g", j, dst[j], float32(-0.25*e))
		}
	}
	if z != want || expShiftGo[float32](nil, src, 3.5, 0) != want {
		t.Fatalf("sum %g, want %g", z, want)
	}
}
