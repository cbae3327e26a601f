package trainer

import (
	"fmt"
	"math"
	"math/rand/v2"
	"testing"
)

// The float32 C kernels of -tags openblas (kernels_openblas.c) against the Go loops they
// replace; each test runs the AVX2+FMA copy (where the CPU has it) and the baseline copy.

func forKernelCopies(t *testing.T, fn func(t *testing.T)) {
	if !cKernels {
		t.Skip("no C kernels without -tags openblas")
	}
	defer setKernelsAVX2(true)
	for _, avx := range []bool{true, false} {
		name := "base"
		if setKernelsAVX2(avx) {
			name = "avx2"
		} else if avx {
			continue // the CPU lacks AVX2: the baseline copy runs below
		}
		t.Run(name, fn)
	}
}

// within1ulp: equal, both NaN, or neighbours.
func within1ulp(a, b float32) bool {
	return a == b || a != a && b != b || math.Nextafter32(a, b) == b
}

// kernelInputs returns n float32 values: normal draws of growing scale and, from index 0 on,
// the edge values (when they fit).
func kernelInputs(rng *rand.Rand, n int) []float32 {
	edges := []float32{float32(math.NaN()), float32(math.Inf(1)), float32(math.Inf(-1)), 1000, -1000, 0,
		float32(math.Copysign(0, -1)), 1e-45, -1e-45, 1e-39, -3e-39, 88.7, -103.9, 20, -20, 1, -1}
	x := make([]float32, n)
	for i := range x {
		x[i] = float32(rng.NormFloat64() * []float64{0.1, 1, 5, 30, 300}[i%5])
	}
	copy(x, edges[:min(len(edges), n)])
	rng.Shuffle(n, func(i, j int) { x[i], x[j] = x[j], x[i] })
	return x
}

var kernelLengths = []int{0, 1, 7, 8, 9, 31, 1000}

// The C e^x (read through ak_exp_shift on one element, e^(0-(-x))) is math.Exp's to 1e-12
// relative, with math.Exp's edges.
func TestCExpMatchesMathExp(t *testing.T) {
	forKernelCopies(t, func(t *testing.T) {
		var worst, worstX float64
		check := func(x float64) {
			t.Helper()
			got, want := expShift32(nil, []float32{0}, -x, 0), math.Exp(x)
			if x > 709 {
				want = math.Exp(x-1) * math.E // math.Exp on amd64 overflows from 709.44 on
			}
			switch {
			case math.IsNaN(want) || math.IsInf(want, 0) || want == 0:
				if got != want && !(math.IsNaN(got) && math.IsNaN(want)) {
					t.Fatalf("e^%g = %g, want %g", x, got, want)
				}
			case want < 0x1p-1022: // subnormal: as accurate, in absolute terms, as at 2^-1022
				if math.Abs(got-want) > 1e-12*0x1p-1022 {
					t.Fatalf("e^%g = %g, want %g", x, got, want)
				}
			default:
				rel := math.Abs(got-want) / want
				if rel > worst {
					worst, worstX = rel, x
				}
				if rel > 1e-12 {
					t.Fatalf("e^%g = %g, want %g (relative error %g)", x, got, want, rel)
				}
			}
		}
		for x := -760.0; x <= 720; x += 0.01 {
			check(x)
		}
		rng := rand.New(rand.NewPCG(5, 6))
		for range 1_000_000 {
			check((rng.Float64()*2 - 1) * 100)
			check((rng.Float64()*2 - 1) * 1e-3)
			check((rng.Float64()*2 - 1) * 745)
		}
		for _, x := range []float64{0, math.Copysign(0, -1), 1, -1, 708, 709, 709.78, 709.79, 710, 1000,
			-708, -708.5, -744.4, -745.1, -746, -1000, 88.7, -87.3, -103.9, 1e-300,
			math.Inf(1), math.Inf(-1), math.NaN()} {
			check(x)
		}
		t.Logf("largest relative error %.3g (at x = %g)", worst, worstX)
	})
}

func TestCSwigluFwdMatchesGo(t *testing.T) {
	forKernelCopies(t, func(t *testing.T) {
		rng := rand.New(rand.NewPCG(7, 8))
		lengths := append(append([]int{}, kernelLengths...), 4_000_000)
		for _, n := range lengths {
			g, u := kernelInputs(rng, n), kernelInputs(rng, n)
			y, s := make([]float32, n+1), make([]float32, n+1)
			y[n], s[n] = 42, 42 // past the end: untouched
			wy, ws := make([]float32, n), make([]float32, n)
			swigluFwd32(g, u, y[:n], s[:n])
			swigluFwdGo(g, u, ws, wy)
			diff := 0
			for i := range n {
				if !within1ulp(s[i], ws[i]) || !within1ulp(y[i], wy[i]) {
					t.Fatalf("n %d: swiglu(g %g, u %g) = σ %g, y %g; Go %g, %g", n, g[i], u[i], s[i], y[i], ws[i], wy[i])
				}
				if s[i] != ws[i] && !(s[i] != s[i] && ws[i] != ws[i]) || y[i] != wy[i] && !(y[i] != y[i] && wy[i] != wy[i]) {
					diff++
				}
			}
			if y[n] != 42 || s[n] != 42 {
				t.Fatalf("n %d: wrote past the end", n)
			}
			if n > 1000 {
				t.Logf("n %d: %d elements one ulp off the Go loop", n, diff)
			}
		}
	})
}

func TestCSwigluBackMatchesGo(t *testing.T) {
	forKernelCopies(t, func(t *testing.T) {
		rng := rand.New(rand.NewPCG(9, 10))
		for _, n := range append(append([]int{}, kernelLengths...), 1_000_000) {
			g, u, dy := kernelInputs(rng, n), kernelInputs(rng, n), kernelInputs(rng, n)
			s := make([]float32, n)
			swigluFwdGo(g, u, s, make([]float32, n))
			for which := range 2 {
				d, want := make([]float32, n+1), make([]float32, n)
				d[n] = 42
				swigluBack32(which, g, u, dy, s, d[:n])
				swigluBackGo(which, g, u, dy, s, want)
				for i := range n {
					if !within1ulp(d[i], want[i]) {
						t.Fatalf("n %d which %d: at g %g u %g dy %g σ %g: %g, Go %g", n, which, g[i], u[i], dy[i], s[i], d[i], want[i])
					}
				}
				if d[n] != 42 {
					t.Fatalf("n %d: wrote past the end", n)
				}
			}
		}
	})
}

func TestCExpShiftMatchesGo(t *testing.T) {
	forKernelCopies(t, func(t *testing.T) {
		rng := rand.New(rand.NewPCG(11, 12))
		for _, n := range append(append([]int{}, kernelLengths...), 8192, 1_000_003) {
			src := kernelInputs(rng, n)
			for i, v := range src {
				if v != v || math.IsInf(float64(v), 1) {
					src[i] = 3 // a NaN or +Inf makes the sums NaN or Inf: checked below
				}
			}
			for _, c := range []struct{ shift, scale float64 }{{0, 1}, {3.5, -0.25}, {300, 2}, {-20, 1e-9}} {
				want := make([]float32, n)
				wz := expShiftGo(want, src, c.shift, c.scale)
				dst := make([]float32, n+1)
				dst[n] = 42
				z := expShift32(dst[:n], src, c.shift, c.scale)
				if zn := expShift32(nil, src, c.shift, c.scale); zn != z {
					t.Fatalf("n %d: sum without dst %g, with %g", n, zn, z)
				}
				if math.Abs(z-wz) > 1e-12*math.Abs(wz) {
					t.Fatalf("n %d shift %g: sum %g, Go %g", n, c.shift, z, wz)
				}
				for i := range n {
					if !within1ulp(dst[i], want[i]) {
						t.Fatalf("n %d shift %g scale %g: e^(%g) → %g, Go %g", n, c.shift, c.scale, src[i], dst[i], want[i])
					}
				}
				if dst[n] != 42 {
					t.Fatalf("n %d: wrote past the end", n)
				}
				inPlace := append([]float32(nil), src...)
				if zi := expShift32(inPlace, inPlace, c.shift, c.scale); zi != z || fmt.Sprint(inPlace) != fmt.Sprint(dst[:n]) {
					t.Fatalf("n %d: in place differs", n)
				}
			}
		}
		for _, c := range []struct {
			src   []float32
			shift float64
			want  float64
		}{
			{[]float32{1, float32(math.NaN()), 2}, 0, math.NaN()},
			{[]float32{1, float32(math.Inf(1))}, 0, math.Inf(1)},
			{[]float32{float32(math.Inf(-1)), -1000, 0}, 0, 1},
			{[]float32{float32(math.Inf(-1)), float32(math.Inf(-1))}, math.Inf(-1), math.NaN()},
		} {
			z, wz := expShift32(nil, c.src, c.shift, 0), expShiftGo[float32](nil, c.src, c.shift, 0)
			if !(z == c.want || math.IsNaN(z) && math.IsNaN(c.want)) || !(wz == z || math.IsNaN(z) && math.IsNaN(wz)) {
				t.Errorf("Σ e^(%v - %g) = %g, Go %g, want %g", c.src, c.shift, z, wz, c.want)
			}
		}
	})
}

// probs' Go loop, the reference for causalSoftmax32.
func causalSoftmaxGo(p []float32, n, ld int) {
	for i := range n {
		row := p[i*ld : i*ld+n]
		mx := math.Inf(-1)
		for _, v := range row[:i+1] {
			mx = max(mx, float64(v))
		}
		z := expShiftGo(row[:i+1], row[:i+1], mx, 1)
		for j := range row[:i+1] {
			row[j] = float32(float64(row[j]) / z)
		}
		clear(row[i+1:])
	}
}

func TestCCausalSoftmaxMatchesGo(t *testing.T) {
	forKernelCopies(t, func(t *testing.T) {
		rng := rand.New(rand.NewPCG(13, 14))
		for _, n := range []int{1, 2, 7, 8, 9, 64, 128} {
			for _, ld := range []int{n, n + 3} {
				p := kernelInputs(rng, n*ld)
				for i, v := range p {
					if i%17 != 0 && (v != v || math.IsInf(float64(v), 0)) {
						p[i] = -2 // keep most rows finite
					}
				}
				want := append([]float32(nil), p...)
				causalSoftmax32(p, n, ld)
				causalSoftmaxGo(want, n, ld)
				for i := range p {
					if !within1ulp(p[i], want[i]) {
						t.Fatalf("n %d ld %d: p[%d, %d] = %g, Go %g", n, ld, i/ld, i%ld, p[i], want[i])
					}
				}
			}
		}
	})
}

func TestCLogSumExpMatchesGo(t *testing.T) {
	forKernelCopies(t, func(t *testing.T) {
		rng := rand.New(rand.NewPCG(15, 16))
		rows := [][]float32{nil, {float32(math.NaN()), 1}, {1, float32(math.NaN())}, {float32(math.Inf(-1)), float32(math.Inf(-1))},
			{float32(math.Inf(1)), 0}, {-1000, 3, 1000}}
		for _, n := range append(append([]int{}, kernelLengths...), 8192) {
			r := kernelInputs(rng, n)
			for i, v := range r {
				if v != v || math.IsInf(float64(v), 0) {
					r[i] = 0
				}
			}
			rows = append(rows, r)
		}
		for _, row := range rows {
			mx, z := lseParts32(row)
			wmx := math.Inf(-1)
			for _, v := range row {
				wmx = max(wmx, float64(v))
			}
			wz := expShiftGo[float32](nil, row, wmx, 0)
			same := func(a, b float64) bool { return a == b || a != a && b != b }
			if !same(mx, wmx) || !(same(z, wz) || math.Abs(z-wz) <= 1e-12*math.Abs(wz)) {
				t.Errorf("row of %d: max %g, Σ %g; Go %g, %g", len(row), mx, z, wmx, wz)
			}
		}
	})
}

// BenchmarkKernels: ns per element of each float32 loop on one thread, Go and C, over a
// 2048×1408 block (the MLP's gate for 16 sequences of 128 tokens).
func BenchmarkKernels(b *testing.B) {
	const n = 2048 * 1408
	rng := rand.New(rand.NewPCG(1, 1))
	g, u, dy := make([]float32, n), make([]float32, n), make([]float32, n)
	for i := range g {
		g[i], u[i], dy[i] = float32(rng.NormFloat64()*3), float32(rng.NormFloat64()), float32(rng.NormFloat64())
	}
	s, y := make([]float32, n), make([]float32, n)
	swigluFwdGo(g, u, s, y)
	type kernel struct {
		name   string
		goLoop func()
		cLoop  func()
	}
	ks := []kernel{
		{"swigluFwd", func() { swigluFwdGo(g, u, s, y) }, func() { swigluFwd32(g, u, y, s) }},
		{"swigluBack0", func() { swigluBackGo(0, g, u, dy, s, y) }, func() { swigluBack32(0, g, u, dy, s, y) }},
		{"swigluBack1", func() { swigluBackGo(1, g, u, dy, s, y) }, func() { swigluBack32(1, g, u, dy, s, y) }},
		{"expShift", func() { expShiftGo(y, g, 10, 1) }, func() { expShift32(y, g, 10, 1) }},
		{"softmax128", func() {
			for i := 0; i+128*128 <= n; i += 128 * 128 {
				causalSoftmaxGo(y[i:], 128, 128)
			}
		}, func() {
			for i := 0; i+128*128 <= n; i += 128 * 128 {
				causalSoftmax32(y[i:], 128, 128)
			}
		}},
	}
	for _, k := range ks {
		for _, impl := range []string{"go", "c"} {
			run := k.goLoop
			if impl == "c" {
				if !cKernels {
					continue
				}
				run = k.cLoop
			}
			b.Run(k.name+"/"+impl, func(b *testing.B) {
				for b.Loop() {
					if k.name == "softmax128" {
						copy(y, g)
					}
					run()
				}
				b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/n, "ns/elem")
			})
		}
	}
}
