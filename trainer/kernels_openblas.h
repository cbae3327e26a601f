// Declarations of kernels_openblas.c (cgo, -tags openblas).

int ak_init(int allow_avx2);
void ak_swiglu_fwd(long n, const float *g, const float *u, float *y, float *s);
void ak_swiglu_back(long n, int which, const float *g, const float *u, const float *dy,
                    const float *s, float *d);
double ak_exp_shift(long n, const float *src, double shift, double scale, float *dst);
void ak_causal_softmax(long n, float *p, long ld);
double ak_lse_parts(long n, const float *x, double *mx);
