package trainer

import "math"

// expFast is eˣ for the kernels' softmax, log-sum-exp and sigmoid loops: small enough to
// inline (math.Exp is an assembly call), relative error below 1e-12 (fastexp_test.go checks
// it against math.Exp), so float32 results round as they would from math.Exp and float64
// sums move by far less than float32 rounding. Outside (-708, 709) — subnormal, overflowing,
// infinite or NaN — it is math.Exp. swigluFwdGo has a copy of the body inline; keep the two
// alike.
//
// x = (n/64)·ln2 + r with |r| <= ln2/128; eˣ = 2^(n>>6) · 2^((n&63)/64) · eʳ, the middle factor
// from a table and eʳ by a degree-4 Taylor polynomial (error below r⁵/5! < 4e-14).
func expFast(x float64) float64 {
	if !(x > -708 && x < 709) {
		return math.Exp(x)
	}
	t := x*expScale + expRound
	n := math.Float64bits(t) - math.Float64bits(expRound) // round(x·64/ln2), two's complement
	kf := t - expRound
	r := x - kf*expLn2Hi - kf*expLn2Lo
	p := 1 + r*(1+r*(1.0/2+r*(1.0/6+r*(1.0/24))))
	return p * math.Float64frombits(expTab[n&63]+uint64(int64(n)>>6)<<52)
}

const (
	expScale = 64 / math.Ln2
	expRound = 0x1.8p52
	// ln2/64 split so that kf·expLn2Hi is exact for |kf| < 2²⁰.
	expLn2Hi = 6.93147180369123816490e-01 / 64
	expLn2Lo = 1.90821492927058770002e-10 / 64
)

// expTab[j] holds the bits of 2^(j/64).
var expTab = func() (t [64]uint64) {
	for j := range t {
		t[j] = math.Float64bits(math.Exp2(float64(j) / 64))
	}
	return t
}()

// expShift returns Σⱼ e^(src[j]-shift) in float64 and, when dst is not nil, sets
// dst[j] = T(scale·e^(src[j]-shift)) (dst may be src). Each exponential is expFast's, written
// out inline: the softmax and log-sum-exp loops spend most of their time here. For float32
// with -tags openblas it is the C kernel (kernels_openblas.c), whose e^x is not expFast's bits
// but is as accurate.
func expShift[T num](dst, src []T, shift, scale float64) float64 {
	if cKernels && kernelsAVX2 {
		if s, ok := any(src).([]float32); ok {
			d, _ := any(dst).([]float32)
			return expShift32(d, s, shift, scale)
		}
	}
	return expShiftGo(dst, src, shift, scale)
}

// expShiftGo is expShift's Go loop.
func expShiftGo[T num](dst, src []T, shift, scale float64) float64 {
	var z float64
	if dst != nil {
		dst = dst[:len(src)]
	}
	for j, v := range src {
		x := float64(v) - shift
		var e float64
		if x > -708 && x < 709 {
			t := x*expScale + expRound
			n := math.Float64bits(t) - math.Float64bits(expRound)
			kf := t - expRound
			r := x - kf*expLn2Hi - kf*expLn2Lo
			p := 1 + r*(1+r*(1.0/2+r*(1.0/6+r*(1.0/24))))
			e = p * math.Float64frombits(expTab[n&63]+uint64(int64(n)>>6)<<52)
		} else {
			e = math.Exp(x)
		}
		z += e
		if dst != nil {
			dst[j] = T(scale * e)
		}
	}
	return z
}
