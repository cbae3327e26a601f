package langdetect

import "math"

// pyRandom is CPython's random.Random (Modules/_randommodule.c and Lib/random.py, 3.11): the
// Mersenne Twister MT19937 seeded by init_by_array, random(), gauss() and choice(), so that a
// fixed seed draws the same numbers as Python's langdetect does.
type pyRandom struct {
	mt        [mtN]uint32
	index     int
	gaussNext float64
	hasGauss  bool
}

const (
	mtN         = 624
	mtM         = 397
	matrixA     = 0x9908b0df
	upperMask   = 0x80000000
	lowerMask   = 0x7fffffff
	twoPi       = 2.0 * math.Pi
	recip53     = 1.0 / 9007199254740992.0 // 2**-53
	twoPower26f = 67108864.0
)

// newPyRandom is random.Random(seed) for a non-negative integer seed below 2**32: Python
// splits the integer into 32-bit words (one word, 0, for seed 0) and calls init_by_array.
func newPyRandom(seed uint32) *pyRandom {
	r := &pyRandom{}
	r.initByArray([]uint32{seed})
	return r
}

func (r *pyRandom) initGenrand(s uint32) {
	r.mt[0] = s
	for i := 1; i < mtN; i++ {
		r.mt[i] = 1812433253*(r.mt[i-1]^(r.mt[i-1]>>30)) + uint32(i)
	}
	r.index = mtN
}

func (r *pyRandom) initByArray(key []uint32) {
	r.initGenrand(19650218)
	i, j := 1, 0
	k := mtN
	if len(key) > k {
		k = len(key)
	}
	for ; k > 0; k-- {
		r.mt[i] = (r.mt[i] ^ ((r.mt[i-1] ^ (r.mt[i-1] >> 30)) * 1664525)) + key[j] + uint32(j)
		i++
		j++
		if i >= mtN {
			r.mt[0] = r.mt[mtN-1]
			i = 1
		}
		if j >= len(key) {
			j = 0
		}
	}
	for k = mtN - 1; k > 0; k-- {
		r.mt[i] = (r.mt[i] ^ ((r.mt[i-1] ^ (r.mt[i-1] >> 30)) * 1566083941)) - uint32(i)
		i++
		if i >= mtN {
			r.mt[0] = r.mt[mtN-1]
			i = 1
		}
	}
	r.mt[0] = 0x80000000
}

// uint32 is genrand_uint32.
func (r *pyRandom) uint32() uint32 {
	if r.index >= mtN {
		var kk int
		for kk = 0; kk < mtN-mtM; kk++ {
			y := (r.mt[kk] & upperMask) | (r.mt[kk+1] & lowerMask)
			r.mt[kk] = r.mt[kk+mtM] ^ (y >> 1) ^ (-(y & 1) & matrixA)
		}
		for ; kk < mtN-1; kk++ {
			y := (r.mt[kk] & upperMask) | (r.mt[kk+1] & lowerMask)
			r.mt[kk] = r.mt[kk+(mtM-mtN)] ^ (y >> 1) ^ (-(y & 1) & matrixA)
		}
		y := (r.mt[mtN-1] & upperMask) | (r.mt[0] & lowerMask)
		r.mt[mtN-1] = r.mt[mtM-1] ^ (y >> 1) ^ (-(y & 1) & matrixA)
		r.index = 0
	}
	y := r.mt[r.index]
	r.index++
	y ^= y >> 11
	y ^= (y << 7) & 0x9d2c5680
	y ^= (y << 15) & 0xefc60000
	y ^= y >> 18
	return y
}

// random is random.random (genrand_res53): 53 random bits in [0, 1).
func (r *pyRandom) random() float64 {
	a := r.uint32() >> 5
	b := r.uint32() >> 6
	// Every step is exact (a*2**26 + b < 2**53), so no rounding can differ from CPython.
	return (float64(a)*twoPower26f + float64(b)) * recip53
}

// gauss is random.gauss(mu, sigma) with the Box-Muller pair cached between calls.
func (r *pyRandom) gauss(mu, sigma float64) float64 {
	z := r.gaussNext
	had := r.hasGauss
	r.hasGauss = false
	if !had {
		x2pi := r.random() * twoPi
		g2rad := math.Sqrt(-2.0 * math.Log(1.0-r.random()))
		z = math.Cos(x2pi) * g2rad
		r.gaussNext = math.Sin(x2pi) * g2rad
		r.hasGauss = true
	}
	return mu + float64(z*sigma)
}

// getrandbits is random.getrandbits(k) for 1 <= k <= 32.
func (r *pyRandom) getrandbits(k int) uint32 {
	return r.uint32() >> (32 - k)
}

// below is random._randbelow(n) (_randbelow_with_getrandbits) for 1 <= n < 2**32: rejection
// sampling with n.bit_length() bits.
func (r *pyRandom) below(n int) int {
	k := 0
	for v := n; v > 0; v >>= 1 {
		k++
	}
	for {
		v := int(r.getrandbits(k))
		if v < n {
			return v
		}
	}
}
