package model

import (
	"math"
	"math/rand/v2"
	"slices"
	"testing"
)

// randomHalves returns n random BF16 or F16 values (as bits) and their exact float32 values,
// F16 including subnormals.
func randomHalves(rng *rand.Rand, n int, dt DType) ([]uint16, []float32) {
	bits := make([]uint16, n)
	vals := make([]float32, n)
	for i := range bits {
		if dt == BF16 {
			bits[i] = toBF16(float32(rng.NormFloat64()))
		} else {
			// sign, an exponent from subnormal (0) to about 8, any mantissa.
			bits[i] = uint16(rng.IntN(2))<<15 | uint16(rng.IntN(19))<<10 | uint16(rng.IntN(1024))
		}
	}
	widenRow(vals, bits, dt)
	return bits, vals
}

func TestWidenIsExact(t *testing.T) {
	for _, c := range []struct {
		dt   DType
		bits uint16
		want float32
	}{
		{BF16, 0x3f80, 1}, {BF16, 0xc000, -2}, {BF16, 0x0000, 0}, {BF16, 0x3e20, 0.15625},
		{F16, 0x3c00, 1}, {F16, 0xc000, -2}, {F16, 0x0001, 1.0 / (1 << 24)}, {F16, 0x7bff, 65504},
	} {
		got := make([]float32, 1)
		widenRow(got, []uint16{c.bits}, c.dt)
		if got[0] != c.want {
			t.Errorf("%s %#04x widened to %v, want %v", c.dt, c.bits, got[0], c.want)
		}
	}
}

// TestHalfKernelsMatchFloat32Kernels: a half-precision weight row gives the float32 kernels'
// result on its widened values, to float32 rounding (the summation orders differ between the
// Go and assembly paths), on every kernel path this CPU has.
func TestHalfKernelsMatchFloat32Kernels(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 3))
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
	for _, dt := range []DType{BF16, F16} {
		for _, n := range []int{1, 7, 8, 9, 16, 31, 32, 33, 48, 80, 100, 896, 4864} {
			h0, w0 := randomHalves(rng, n, dt)
			h1, w1 := randomHalves(rng, n, dt)
			x0, x1, x2, x3 := vec(n), vec(n), vec(n), vec(n)
			var scale float64
			for i := range w0 {
				scale += math.Abs(float64(w0[i]*x0[i])) + math.Abs(float64(w1[i]*x3[i]))
			}
			tol := 1e-6*scale + 1e-6
			if d := math.Abs(float64(dotHalf(h0, x0, dt)) - ref(w0, x0)); d > tol {
				t.Errorf("%s n=%d: dotHalf off by %g (tol %g)", dt, n, d, tol)
			}
			if d := math.Abs(float64(dotHalf(h0, x0, dt)) - float64(dot(w0, x0))); d > tol {
				t.Errorf("%s n=%d: dotHalf differs from dot on the widened row by %g", dt, n, d)
			}
			// Rows one after another, as a batch-1 decode runs them: row 0 and row 1.
			rows := make([]float32, 2)
			dotRowsHalf(rows, append(append([]uint16(nil), h0...), h1...), x0, n, dt)
			for r, wr := range [][]float32{w0, w1} {
				if d := math.Abs(float64(rows[r]) - ref(wr, x0)); d > tol {
					t.Errorf("%s n=%d: dotRowsHalf[%d] off by %g", dt, n, r, d)
				}
			}
			var o, of [8]float32
			dot2x4Half(h0, h1, x0, x1, x2, x3, dt, &o)
			dot2x4(w0, w1, x0, x1, x2, x3, &of)
			for i, x := range [][]float32{x0, x1, x2, x3} {
				for r, wr := range [][]float32{w0, w1} {
					if d := math.Abs(float64(o[4*r+i]) - ref(wr, x)); d > tol {
						t.Errorf("%s n=%d: dot2x4Half[%d][%d] off by %g", dt, n, r, i, d)
					}
					if d := math.Abs(float64(o[4*r+i]) - float64(of[4*r+i])); d > tol {
						t.Errorf("%s n=%d: dot2x4Half[%d][%d] differs from dot2x4 by %g", dt, n, r, i, d)
					}
				}
			}
		}
	}
}

// A BF16 checkpoint loaded for sampling keeps its weights BF16 (half the bytes per decode
// step) and decodes as its float32 load does: the same logits to float32 rounding, the same
// greedy tokens, at batch 1 and in a batch.
func TestBF16CheckpointSamplesAsItsFloat32Load(t *testing.T) {
	cfg := tinyConfig(ArchQwen2)
	// Rows long enough for the assembly's main loops, an untied head, logits far from uniform.
	cfg.HiddenSize, cfg.IntermediateSize, cfg.NumAttentionHeads, cfg.NumKeyValueHeads, cfg.HeadDim = 128, 352, 4, 2, 32
	cfg.VocabSize, cfg.TieWordEmbeddings, cfg.InitializerRange = 300, false, 0.2
	w, err := Init(cfg, 7)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := w.Save(dir, SaveOptions{DType: BF16}); err != nil {
		t.Fatal(err)
	}
	half, err := LoadModel(dir, LoadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	f32, err := LoadModel(dir, LoadOptions{Float32: true})
	if err != nil {
		t.Fatal(err)
	}
	if half.WeightDType() != BF16 || f32.WeightDType() != F32 {
		t.Fatalf("weight dtypes %s and %s, want BF16 and F32", half.WeightDType(), f32.WeightDType())
	}
	if hb, fb := half.WeightBytes(), f32.WeightBytes(); hb*10 > fb*6 {
		t.Errorf("BF16 model streams %d bytes per step, float32 %d: want about half", hb, fb)
	}
	prompts := [][]int{{1, 5, 9, 200, 17}, {3}, {250, 251, 252, 253, 254, 255, 256, 257, 258}}
	kh, kf := half.NewCache(len(prompts), 32), f32.NewCache(len(prompts), 32)
	lh, err := half.Forward(kh, prompts, true)
	if err != nil {
		t.Fatal(err)
	}
	lf, _ := f32.Forward(kf, prompts, true)
	for i := range prompts {
		if d := maxAbsDiff(lh[i], lf[i]); d > 1e-5 {
			t.Errorf("row %d: BF16 logits differ from float32 by %g", i, d)
		}
	}
	opts := SampleOptions{MaxNewTokens: 20, Temperature: 0}
	for _, batch := range [][][]int{prompts[:1], prompts} {
		a, err := half.Generate(batch, opts)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := f32.Generate(batch, opts)
		for i := range a {
			if !slices.Equal(a[i].Tokens, b[i].Tokens) {
				t.Errorf("batch of %d, row %d: BF16 greedy %v, float32 %v", len(batch), i, a[i].Tokens, b[i].Tokens)
			}
			if d := maxAbsDiff(a[i].LogProbs, b[i].LogProbs); d > 1e-5 {
				t.Errorf("batch of %d, row %d: log-probs differ by %g", len(batch), i, d)
			}
		}
	}
}

// The trainer's Load widens whatever the file holds: its Weights are always float32.
func TestLoadIsFloat32ForABF16Checkpoint(t *testing.T) {
	w, _ := Init(tinyConfig(ArchLlama), 1)
	dir := t.TempDir()
	if err := w.Save(dir, SaveOptions{DType: BF16}); err != nil {
		t.Fatal(err)
	}
	got, err := Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, tn := range got.Tensors() {
		if tn.half != nil || len(tn.Data) == 0 {
			t.Fatalf("tensor %s not float32 after Load", tn.Name)
		}
	}
}
