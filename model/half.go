package model

import "math"

// Half-precision weight rows (BF16 or F16 bits) against float32 activations: the pure-Go
// kernels, which the amd64 assembly must match. Widening is exact in both formats, so these
// compute the float32 kernels' sums over the widened weights.

func bf16ToF32(h uint16) float32 { return math.Float32frombits(uint32(h) << 16) }

// widenRow writes the float32 value of each half in src to dst.
func widenRow(dst []float32, src []uint16, dt DType) {
	dst = dst[:len(src)]
	if dt == BF16 {
		for i, h := range src {
			dst[i] = bf16ToF32(h)
		}
		return
	}
	for i, h := range src {
		dst[i] = f16ToF32(h)
	}
}

func dotBF16Generic(w []uint16, x []float32) float32 {
	x = x[:len(w)]
	var s0, s1, s2, s3 float32
	i := 0
	for ; i+4 <= len(w); i += 4 {
		s0 += bf16ToF32(w[i]) * x[i]
		s1 += bf16ToF32(w[i+1]) * x[i+1]
		s2 += bf16ToF32(w[i+2]) * x[i+2]
		s3 += bf16ToF32(w[i+3]) * x[i+3]
	}
	for ; i < len(w); i++ {
		s0 += bf16ToF32(w[i]) * x[i]
	}
	return (s0 + s1) + (s2 + s3)
}

func dotF16Generic(w []uint16, x []float32) float32 {
	x = x[:len(w)]
	var s0, s1, s2, s3 float32
	i := 0
	for ; i+4 <= len(w); i += 4 {
		s0 += f16ToF32(w[i]) * x[i]
		s1 += f16ToF32(w[i+1]) * x[i+1]
		s2 += f16ToF32(w[i+2]) * x[i+2]
		s3 += f16ToF32(w[i+3]) * x[i+3]
	}
	for ; i < len(w); i++ {
		s0 += f16ToF32(w[i]) * x[i]
	}
	return (s0 + s1) + (s2 + s3)
}

func dotHalfGeneric(w []uint16, x []float32, dt DType) float32 {
	if dt == BF16 {
		return dotBF16Generic(w, x)
	}
	return dotF16Generic(w, x)
}

func dotRowsHalfGeneric(out []float32, w []uint16, x []float32, n int, dt DType) {
	for r := range out {
		out[r] = dotHalf(w[r*n:(r+1)*n], x, dt)
	}
}

func dot2x4HalfGeneric(w0, w1 []uint16, x0, x1, x2, x3 []float32, dt DType, out *[8]float32) {
	for r, w := range [2][]uint16{w0, w1} {
		for i, x := range [4][]float32{x0, x1, x2, x3} {
			out[4*r+i] = dotHalfGeneric(w, x, dt)
		}
	}
}

// mat is a [rows, cols] row-major weight matrix as the matmul kernels read it: float32, or
// BF16/F16 bits (dtype) widened to float32 as they are loaded, so a decode step, which reads
// every weight once, streams half the bytes.
type mat struct {
	name       string
	rows, cols int
	dtype      DType
	f32        []float32 // when dtype is F32
	half       []uint16  // when dtype is BF16 or F16
}

func matOf(t *Tensor) mat {
	m := mat{name: t.Name, rows: t.Shape[0], cols: t.Shape[1], dtype: F32, f32: t.Data}
	if t.half != nil {
		m.dtype, m.f32, m.half = t.dtype, nil, t.half
	}
	return m
}

func (w *mat) bytes() int64 { return int64(w.rows) * int64(w.cols) * int64(w.dtype.size()) }

// widenRow copies row j into dst as float32 (an embedding lookup).
func (w *mat) widenRow(dst []float32, j int) {
	K := w.cols
	if w.half == nil {
		copy(dst[:K], w.f32[j*K:(j+1)*K])
		return
	}
	widenRow(dst[:K], w.half[j*K:(j+1)*K], w.dtype)
}

// dot returns row j · x.
func (w *mat) dot(j int, x []float32) float32 {
	K := w.cols
	if w.half == nil {
		return dot(w.f32[j*K:(j+1)*K], x)
	}
	return dotHalf(w.half[j*K:(j+1)*K], x, w.dtype)
}

// dotRows sets out[i] = row j0+i · x for i < len(out).
func (w *mat) dotRows(out []float32, j0 int, x []float32) {
	K := w.cols
	if w.half == nil {
		for i := range out {
			out[i] = dot(w.f32[(j0+i)*K:(j0+i+1)*K], x)
		}
		return
	}
	dotRowsHalf(out, w.half[j0*K:(j0+len(out))*K], x, K, w.dtype)
}

// dot4 returns row j · x0..x3.
func (w *mat) dot4(j int, x0, x1, x2, x3 []float32) (float32, float32, float32, float32) {
	K := w.cols
	if w.half == nil {
		return dot4(w.f32[j*K:(j+1)*K], x0, x1, x2, x3)
	}
	r := w.half[j*K : (j+1)*K]
	return dotHalf(r, x0, w.dtype), dotHalf(r, x1, w.dtype), dotHalf(r, x2, w.dtype), dotHalf(r, x3, w.dtype)
}

// dot2x4 returns rows j and j+1 · x0..x3 in out[0:4] and out[4:8].
func (w *mat) dot2x4(j int, x0, x1, x2, x3 []float32, out *[8]float32) {
	K := w.cols
	if w.half == nil {
		dot2x4(w.f32[j*K:(j+1)*K], w.f32[(j+1)*K:(j+2)*K], x0, x1, x2, x3, out)
		return
	}
	dot2x4Half(w.half[j*K:(j+1)*K], w.half[(j+1)*K:(j+2)*K], x0, x1, x2, x3, w.dtype, out)
}
