package model

// dot and dot4 are the matmul inner loops. Go does not vectorise, so the pure-Go versions
// keep several independent accumulators to hide FMA latency; amd64 replaces them with
// AVX2/FMA assembly when the CPU has it.

func dotGeneric(a, b []float32) float32 {
	b = b[:len(a)]
	var s0, s1, s2, s3, s4, s5, s6, s7 float32
	i := 0
	for ; i+8 <= len(a); i += 8 {
		s0 += a[i] * b[i]
		s1 += a[i+1] * b[i+1]
		s2 += a[i+2] * b[i+2]
		s3 += a[i+3] * b[i+3]
		s4 += a[i+4] * b[i+4]
		s5 += a[i+5] * b[i+5]
		s6 += a[i+6] * b[i+6]
		s7 += a[i+7] * b[i+7]
	}
	for ; i < len(a); i++ {
		s0 += a[i] * b[i]
	}
	return ((s0 + s1) + (s2 + s3)) + ((s4 + s5) + (s6 + s7))
}

// dot4Generic returns w·x0, w·x1, w·x2, w·x3, reading each weight once for four activations.
func dot4Generic(w, x0, x1, x2, x3 []float32) (float32, float32, float32, float32) {
	n := len(w)
	x0, x1, x2, x3 = x0[:n], x1[:n], x2[:n], x3[:n]
	var a0, a1, a2, a3, b0, b1, b2, b3 float32
	i := 0
	for ; i+2 <= n; i += 2 {
		w0, w1 := w[i], w[i+1]
		a0 += w0 * x0[i]
		a1 += w0 * x1[i]
		a2 += w0 * x2[i]
		a3 += w0 * x3[i]
		b0 += w1 * x0[i+1]
		b1 += w1 * x1[i+1]
		b2 += w1 * x2[i+1]
		b3 += w1 * x3[i+1]
	}
	for ; i < n; i++ {
		a0 += w[i] * x0[i]
		a1 += w[i] * x1[i]
		a2 += w[i] * x2[i]
		a3 += w[i] * x3[i]
	}
	return a0 + b0, a1 + b1, a2 + b2, a3 + b3
}

func dot2x4Generic(w0, w1, x0, x1, x2, x3 []float32, out *[8]float32) {
	out[0], out[1], out[2], out[3] = dot4Generic(w0, x0, x1, x2, x3)
	out[4], out[5], out[6], out[7] = dot4Generic(w1, x0, x1, x2, x3)
}
