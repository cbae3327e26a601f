//go:build openblas && cgo && amd64

// Element-wise float32 kernels for the trainer's fused ops (kernels_openblas.go calls them):
// the SwiGLU forward and backward, e^(x-shift) with its sum, and the causal softmax of an
// attention block. Go does not vectorise these loops; here each is written once with GCC
// vector extensions (4 doubles per vector) and compiled twice, for AVX2+FMA and for the
// baseline x86-64 (SSE2), the copy picked once at start-up by kernels_init.
//
// All arithmetic is in double, as in the Go loops (fused.go, fastexp.go), and each float32
// result is rounded once from it; e^x is ak_exp4 below (relative error < 1e-15, not the Go
// table's bits), so a float32 result may differ from the Go one by one ulp, rarely.

#include <stdint.h>
#include <string.h>
#include "kernels_openblas.h"

typedef double v4d __attribute__((vector_size(32)));
typedef float v4f __attribute__((vector_size(16)));
typedef int64_t v4i __attribute__((vector_size(32)));
typedef int32_t v4i32 __attribute__((vector_size(16)));

#define AK_INLINE static inline __attribute__((always_inline))

AK_INLINE v4d ak_splat(double x) { return (v4d){x, x, x, x}; }

AK_INLINE v4d ak_load(const float *p) {
	return (v4d){p[0], p[1], p[2], p[3]}; // one vcvtps2pd (a v4f load and convert spills)
}

AK_INLINE void ak_store(float *p, v4d x) {
	v4f f = __builtin_convertvector(x, v4f);
	memcpy(p, &f, sizeof f);
}

// ak_load_n/ak_store_n move the first n (< 4) lanes; the other lanes load as pad.
AK_INLINE v4d ak_load_n(const float *p, long n, float pad) {
	float b[4] = {pad, pad, pad, pad};
	for (long i = 0; i < n; i++) b[i] = p[i];
	return ak_load(b);
}

AK_INLINE void ak_store_n(float *p, long n, v4d x) {
	float b[4];
	ak_store(b, x);
	for (long i = 0; i < n; i++) p[i] = b[i];
}

// sel returns a where m is set (all ones), else b.
AK_INLINE v4d ak_sel(v4i m, v4d a, v4d b) { return (v4d)((m & (v4i)a) | (~m & (v4i)b)); }

// ak_exp4 is e^x lane by lane, as math.Exp at the edges: 0 below -745.2 and for -Inf, +Inf
// above 709.78 and for +Inf, NaN for NaN, subnormal results in between (math.Exp on amd64
// already returns +Inf from 709.44 on, where this is finite and right). x = k·ln2 + r with |r| <= ln2/2
// (k rounded by adding 1.5·2^52), e^r by its Taylor polynomial of degree 12 (truncation below
// r^13/13! < 2e-16), 2^k as 2^k1·2^k2 with k1 = k/2 rounded, each built in the exponent bits,
// so that results down to the subnormals and up to DBL_MAX come out of one path.
AK_INLINE v4d ak_exp4(v4d x) {
	const v4d lo = ak_splat(-746.0), hi = ak_splat(710.0), magic = ak_splat(0x1.8p52);
	x = ak_sel(x < lo, lo, x); // NaN compares false and stays
	x = ak_sel(x > hi, hi, x);
	v4d t = x * ak_splat(0x1.71547652b82fep0) + magic; // x/ln2 + magic
	v4d k = t - magic;
	v4d r = x - k * ak_splat(6.93147180369123816490e-01); // k·ln2hi is exact
	r = r - k * ak_splat(1.90821492927058770002e-10);
	v4d p = ak_splat(1.0 / 479001600);
	p = p * r + ak_splat(1.0 / 39916800);
	p = p * r + ak_splat(1.0 / 3628800);
	p = p * r + ak_splat(1.0 / 362880);
	p = p * r + ak_splat(1.0 / 40320);
	p = p * r + ak_splat(1.0 / 5040);
	p = p * r + ak_splat(1.0 / 720);
	p = p * r + ak_splat(1.0 / 120);
	p = p * r + ak_splat(1.0 / 24);
	p = p * r + ak_splat(1.0 / 6);
	p = p * r + ak_splat(0.5);
	p = p * r + ak_splat(1.0);
	p = p * r + ak_splat(1.0);
	v4d h = k * ak_splat(0.5) + magic; // k1 in the low mantissa bits
	v4d k2 = k - (h - magic);
	// (k + 1023) << 52 keeps only the low 12 bits of k + 1023: the magic's bits shift out.
	v4i b1 = ((v4i)h + 1023) << 52;
	v4i b2 = ((v4i)(k2 + magic) + 1023) << 52;
	return p * (v4d)b1 * (v4d)b2;
}

// ---- the kernel bodies, instantiated per target below ----

AK_INLINE void swiglu_fwd_body(long n, const float *g, const float *u, float *y, float *s) {
	long i = 0;
	for (;; i += 4) {
		long m = n - i;
		if (m <= 0) break;
		v4d gv, uv;
		if (m >= 4) {
			gv = ak_load(g + i), uv = ak_load(u + i);
		} else {
			gv = ak_load_n(g + i, m, 0), uv = ak_load_n(u + i, m, 0);
		}
		v4d sv = ak_splat(1.0) / (ak_splat(1.0) + ak_exp4(-gv));
		// y = float32(g·σ)·u in float32, as the Go loop.
		v4f yf = __builtin_convertvector(gv * sv, v4f) * __builtin_convertvector(uv, v4f);
		if (m >= 4) {
			ak_store(s + i, sv);
			memcpy(y + i, &yf, sizeof yf);
		} else {
			ak_store_n(s + i, m, sv);
			for (long j = 0; j < m; j++) y[i + j] = yf[j];
		}
	}
}

AK_INLINE void swiglu_back_body(long n, int which, const float *g, const float *u, const float *dy,
                                const float *s, float *d) {
	for (long i = 0; i < n; i += 4) {
		long m = n - i;
		int full = m >= 4;
		v4d gv = full ? ak_load(g + i) : ak_load_n(g + i, m, 0);
		v4d dv = full ? ak_load(dy + i) : ak_load_n(dy + i, m, 0);
		v4d sv = full ? ak_load(s + i) : ak_load_n(s + i, m, 0);
		v4d out;
		if (which == 0) {
			v4d uv = full ? ak_load(u + i) : ak_load_n(u + i, m, 0);
			out = dv * uv * sv * (ak_splat(1.0) + gv * (ak_splat(1.0) - sv));
		} else {
			out = dv * gv * sv;
		}
		if (full) {
			ak_store(d + i, out);
		} else {
			ak_store_n(d + i, m, out);
		}
	}
}

AK_INLINE double exp_shift_body(long n, const float *src, double shift, double scale, float *dst) {
	v4d z0 = ak_splat(0), z1 = ak_splat(0);
	const v4d sh = ak_splat(shift), sc = ak_splat(scale);
	long i = 0;
	for (; i + 8 <= n; i += 8) {
		v4d e0 = ak_exp4(ak_load(src + i) - sh), e1 = ak_exp4(ak_load(src + i + 4) - sh);
		z0 += e0, z1 += e1;
		if (dst) ak_store(dst + i, sc * e0), ak_store(dst + i + 4, sc * e1);
	}
	for (; i < n; i += 4) {
		long m = n - i < 4 ? n - i : 4;
		v4d e = ak_exp4(ak_load_n(src + i, m, 0) - sh);
		for (long j = m; j < 4; j++) e[j] = 0;
		z0 += e;
		if (dst) ak_store_n(dst + i, m, sc * e);
	}
	z0 += z1;
	return (z0[0] + z0[1]) + (z0[2] + z0[3]);
}

// row_max is the largest of x[0..n) in double, NaN if any is NaN (Go's max), -Inf if n is 0.
AK_INLINE double row_max_body(long n, const float *x) {
	v4f m = {-__builtin_inff(), -__builtin_inff(), -__builtin_inff(), -__builtin_inff()};
	v4i32 nan = {0, 0, 0, 0};
	long i = 0;
	for (; i + 4 <= n; i += 4) {
		v4f v;
		memcpy(&v, x + i, sizeof v);
		v4i32 gt = v > m;
		m = (v4f)((gt & (v4i32)v) | (~gt & (v4i32)m));
		nan |= v != v;
	}
	float r = m[0];
	for (int j = 1; j < 4; j++) r = m[j] > r ? m[j] : r;
	int isnan = nan[0] | nan[1] | nan[2] | nan[3];
	for (; i < n; i++) {
		r = x[i] > r ? x[i] : r;
		isnan |= x[i] != x[i];
	}
	return isnan ? __builtin_nan("") : (double)r;
}

// causal_softmax: row i of the [n, n] block p (row stride ld) becomes the softmax of its first
// i+1 entries and zeros after, as probs in attention.go: e = float32(e^(x-max)), then
// float32(e/Σe).
AK_INLINE void causal_softmax_body(long n, float *p, long ld) {
	for (long i = 0; i < n; i++) {
		float *row = p + i * ld;
		long m = i + 1;
		double mx = row_max_body(m, row);
		double z = exp_shift_body(m, row, mx, 1.0, row);
		const v4d zv = ak_splat(z);
		long j = 0;
		for (; j + 4 <= m; j += 4) ak_store(row + j, ak_load(row + j) / zv);
		for (; j < m; j++) row[j] = (float)((double)row[j] / z);
		memset(row + m, 0, (size_t)(n - m) * sizeof *row);
	}
}

AK_INLINE double lse_parts_body(long n, const float *x, double *mx) {
	*mx = row_max_body(n, x);
	return exp_shift_body(n, x, *mx, 0, 0);
}

// ---- two copies and the dispatch ----

#define AK_COPIES(suffix, attr)                                                                    \
	attr static void swiglu_fwd_##suffix(long n, const float *g, const float *u, float *y,           \
	                                     float *s) {                                                 \
		swiglu_fwd_body(n, g, u, y, s);                                                          \
	}                                                                                                \
	attr static void swiglu_back_##suffix(long n, int which, const float *g, const float *u,        \
	                                      const float *dy, const float *s, float *d) {               \
		swiglu_back_body(n, which, g, u, dy, s, d);                                              \
	}                                                                                                \
	attr static double exp_shift_##suffix(long n, const float *src, double shift, double scale,      \
	                                      float *dst) {                                              \
		return exp_shift_body(n, src, shift, scale, dst);                                        \
	}                                                                                                \
	attr static void causal_softmax_##suffix(long n, float *p, long ld) {                            \
		causal_softmax_body(n, p, ld);                                                           \
	}                                                                                                \
	attr static double lse_parts_##suffix(long n, const float *x, double *mx) {                      \
		return lse_parts_body(n, x, mx);                                                         \
	}

AK_COPIES(avx2, __attribute__((target("avx2,fma"), noinline)))
AK_COPIES(base, __attribute__((noinline)))

static int use_avx2 = -1;

int ak_init(int allow_avx2) {
	__builtin_cpu_init();
	use_avx2 = allow_avx2 && __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
	return use_avx2;
}

void ak_swiglu_fwd(long n, const float *g, const float *u, float *y, float *s) {
	(use_avx2 ? swiglu_fwd_avx2 : swiglu_fwd_base)(n, g, u, y, s);
}

void ak_swiglu_back(long n, int which, const float *g, const float *u, const float *dy,
                    const float *s, float *d) {
	(use_avx2 ? swiglu_back_avx2 : swiglu_back_base)(n, which, g, u, dy, s, d);
}

double ak_exp_shift(long n, const float *src, double shift, double scale, float *dst) {
	return (use_avx2 ? exp_shift_avx2 : exp_shift_base)(n, src, shift, scale, dst);
}

void ak_causal_softmax(long n, float *p, long ld) {
	(use_avx2 ? causal_softmax_avx2 : causal_softmax_base)(n, p, ld);
}

double ak_lse_parts(long n, const float *x, double *mx) {
	return (use_avx2 ? lse_parts_avx2 : lse_parts_base)(n, x, mx);
}
