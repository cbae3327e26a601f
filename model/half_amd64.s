#include "textflag.h"

// Kernels over BF16 and F16 weight rows: the same loops as dotAVX2 and dot2x4AVX2, but each
// weight load reads 8 halves (16 bytes) and widens them to float32 in registers, so a decode
// step streams half the bytes. BF16 widens exactly by shifting its bits into the top of a
// float32; F16 widens exactly with F16C's VCVTPH2PS. Activations and sums stay float32.

#define WIDEN_BF16(src, dst) VPMOVZXWD src, dst; VPSLLD $16, dst, dst
#define WIDEN_F16(src, dst) VCVTPH2PS src, dst

// DOT_HALF is the body of dotBF16AVX2 / dotF16AVX2: n a multiple of 8; the row after this
// one (w+2n) is prefetched into L2 while this one is summed.
#define DOT_HALF(WIDEN) \
	MOVQ w+0(FP), SI; \
	MOVQ x+8(FP), DI; \
	MOVQ n+16(FP), CX; \
	LEAQ (SI)(CX*2), R12; \
	VXORPS Y0, Y0, Y0; \
	VXORPS Y1, Y1, Y1; \
	VXORPS Y2, Y2, Y2; \
	VXORPS Y3, Y3, Y3; \
loop32: \
	CMPQ CX, $32; \
	JL   loop8; \
	PREFETCHT1 (R12); \
	ADDQ $64, R12; \
	WIDEN((SI), Y4); \
	WIDEN(16(SI), Y5); \
	WIDEN(32(SI), Y6); \
	WIDEN(48(SI), Y7); \
	VFMADD231PS (DI), Y4, Y0; \
	VFMADD231PS 32(DI), Y5, Y1; \
	VFMADD231PS 64(DI), Y6, Y2; \
	VFMADD231PS 96(DI), Y7, Y3; \
	ADDQ $64, SI; \
	ADDQ $128, DI; \
	SUBQ $32, CX; \
	JMP  loop32; \
loop8: \
	CMPQ CX, $8; \
	JL   reduce; \
	WIDEN((SI), Y4); \
	VFMADD231PS (DI), Y4, Y0; \
	ADDQ $16, SI; \
	ADDQ $32, DI; \
	SUBQ $8, CX; \
	JMP  loop8; \
reduce: \
	VADDPS Y1, Y0, Y0; \
	VADDPS Y3, Y2, Y2; \
	VADDPS Y2, Y0, Y0; \
	VEXTRACTF128 $1, Y0, X1; \
	VADDPS X1, X0, X0; \
	VHADDPS X0, X0, X0; \
	VHADDPS X0, X0, X0; \
	VZEROUPPER; \
	MOVSS X0, ret+24(FP); \
	RET

// FMA8(off) widens 8 weights of each row at off and multiplies them into the 8 accumulators.
#define FMA8(WIDEN, woff, xoff) \
	WIDEN(woff(SI), Y8); \
	WIDEN(woff(DX), Y9); \
	VMOVUPS xoff(R8), Y10; \
	VFMADD231PS Y10, Y8, Y0; \
	VFMADD231PS Y10, Y9, Y4; \
	VMOVUPS xoff(R9), Y11; \
	VFMADD231PS Y11, Y8, Y1; \
	VFMADD231PS Y11, Y9, Y5; \
	VMOVUPS xoff(R10), Y12; \
	VFMADD231PS Y12, Y8, Y2; \
	VFMADD231PS Y12, Y9, Y6; \
	VMOVUPS xoff(R11), Y13; \
	VFMADD231PS Y13, Y8, Y3; \
	VFMADD231PS Y13, Y9, Y7

// DOT2X4_HALF is the body of dot2x4BF16AVX2 / dot2x4F16AVX2: out[4r+i] = wr·xi over n
// elements, n a multiple of 8. As in dot2x4AVX2, when w1 follows w0 the next pair (from
// w1 + (w1 - w0)) is prefetched into L2 while this one computes: one line per 16 elements
// of both rows covers it exactly.
#define DOT2X4_HALF(WIDEN) \
	MOVQ w0+0(FP), SI; \
	MOVQ w1+8(FP), DX; \
	MOVQ x0+16(FP), R8; \
	MOVQ x1+24(FP), R9; \
	MOVQ x2+32(FP), R10; \
	MOVQ x3+40(FP), R11; \
	MOVQ n+48(FP), CX; \
	MOVQ out+56(FP), DI; \
	MOVQ DX, R12; \
	SUBQ SI, R12; \
	ADDQ DX, R12; \
	VXORPS Y0, Y0, Y0; \
	VXORPS Y1, Y1, Y1; \
	VXORPS Y2, Y2, Y2; \
	VXORPS Y3, Y3, Y3; \
	VXORPS Y4, Y4, Y4; \
	VXORPS Y5, Y5, Y5; \
	VXORPS Y6, Y6, Y6; \
	VXORPS Y7, Y7, Y7; \
loop16: \
	CMPQ CX, $16; \
	JL   loop8; \
	PREFETCHT1 (R12); \
	ADDQ $64, R12; \
	FMA8(WIDEN, 0, 0); \
	FMA8(WIDEN, 16, 32); \
	ADDQ $32, SI; \
	ADDQ $32, DX; \
	ADDQ $64, R8; \
	ADDQ $64, R9; \
	ADDQ $64, R10; \
	ADDQ $64, R11; \
	SUBQ $16, CX; \
	JMP  loop16; \
loop8: \
	CMPQ CX, $8; \
	JL   reduce; \
	FMA8(WIDEN, 0, 0); \
	ADDQ $16, SI; \
	ADDQ $16, DX; \
	ADDQ $32, R8; \
	ADDQ $32, R9; \
	ADDQ $32, R10; \
	ADDQ $32, R11; \
	SUBQ $8, CX; \
	JMP  loop8; \
reduce: \
	VHADDPS Y1, Y0, Y0; \
	VHADDPS Y3, Y2, Y2; \
	VHADDPS Y2, Y0, Y0; \
	VEXTRACTF128 $1, Y0, X1; \
	VADDPS X1, X0, X0; \
	VMOVUPS X0, (DI); \
	VHADDPS Y5, Y4, Y4; \
	VHADDPS Y7, Y6, Y6; \
	VHADDPS Y6, Y4, Y4; \
	VEXTRACTF128 $1, Y4, X5; \
	VADDPS X5, X4, X4; \
	VMOVUPS X4, 16(DI); \
	VZEROUPPER; \
	RET

#define WIDEN16_BF16(src, dst) VPMOVZXWD src, dst; VPSLLD $16, dst, dst
#define WIDEN16_F16(src, dst) VCVTPH2PS src, dst

// FMA16 is FMA8 with 512-bit registers: 16 weights of each row at woff.
#define FMA16(WIDEN16, woff, xoff, wa, wb, xa, xb, xc, xd) \
	WIDEN16(woff(SI), wa); \
	WIDEN16(woff(DX), wb); \
	VMOVUPS xoff(R8), xa; \
	VFMADD231PS xa, wa, Z0; \
	VFMADD231PS xa, wb, Z4; \
	VMOVUPS xoff(R9), xb; \
	VFMADD231PS xb, wa, Z1; \
	VFMADD231PS xb, wb, Z5; \
	VMOVUPS xoff(R10), xc; \
	VFMADD231PS xc, wa, Z2; \
	VFMADD231PS xc, wb, Z6; \
	VMOVUPS xoff(R11), xd; \
	VFMADD231PS xd, wa, Z3; \
	VFMADD231PS xd, wb, Z7

// DOT2X4_HALF512 is DOT2X4_HALF with 512-bit registers, as dot2x4AVX512 is to dot2x4AVX2:
// a batch decode is bound by the FMAs and widening, not the memory, so twice the lanes per
// instruction is what makes BF16 faster than float32 there too. Two lines of the next pair
// are prefetched per 32 elements of both rows.
#define DOT2X4_HALF512(WIDEN16, WIDEN) \
	MOVQ w0+0(FP), SI; \
	MOVQ w1+8(FP), DX; \
	MOVQ x0+16(FP), R8; \
	MOVQ x1+24(FP), R9; \
	MOVQ x2+32(FP), R10; \
	MOVQ x3+40(FP), R11; \
	MOVQ n+48(FP), CX; \
	MOVQ out+56(FP), DI; \
	MOVQ DX, R12; \
	SUBQ SI, R12; \
	ADDQ DX, R12; \
	VXORPS Z0, Z0, Z0; \
	VXORPS Z1, Z1, Z1; \
	VXORPS Z2, Z2, Z2; \
	VXORPS Z3, Z3, Z3; \
	VXORPS Z4, Z4, Z4; \
	VXORPS Z5, Z5, Z5; \
	VXORPS Z6, Z6, Z6; \
	VXORPS Z7, Z7, Z7; \
loop32: \
	CMPQ CX, $32; \
	JL   loop16; \
	PREFETCHT1 (R12); \
	PREFETCHT1 64(R12); \
	ADDQ $128, R12; \
	FMA16(WIDEN16, 0, 0, Z8, Z9, Z10, Z11, Z12, Z13); \
	FMA16(WIDEN16, 32, 64, Z16, Z17, Z18, Z19, Z20, Z21); \
	ADDQ $64, SI; \
	ADDQ $64, DX; \
	ADDQ $128, R8; \
	ADDQ $128, R9; \
	ADDQ $128, R10; \
	ADDQ $128, R11; \
	SUBQ $32, CX; \
	JMP  loop32; \
loop16: \
	CMPQ CX, $16; \
	JL   fold; \
	FMA16(WIDEN16, 0, 0, Z8, Z9, Z10, Z11, Z12, Z13); \
	ADDQ $32, SI; \
	ADDQ $32, DX; \
	ADDQ $64, R8; \
	ADDQ $64, R9; \
	ADDQ $64, R10; \
	ADDQ $64, R11; \
	SUBQ $16, CX; \
	JMP  loop16; \
fold: \
	VEXTRACTF64X4 $1, Z0, Y8; \
	VADDPS Y8, Y0, Y0; \
	VEXTRACTF64X4 $1, Z1, Y8; \
	VADDPS Y8, Y1, Y1; \
	VEXTRACTF64X4 $1, Z2, Y8; \
	VADDPS Y8, Y2, Y2; \
	VEXTRACTF64X4 $1, Z3, Y8; \
	VADDPS Y8, Y3, Y3; \
	VEXTRACTF64X4 $1, Z4, Y8; \
	VADDPS Y8, Y4, Y4; \
	VEXTRACTF64X4 $1, Z5, Y8; \
	VADDPS Y8, Y5, Y5; \
	VEXTRACTF64X4 $1, Z6, Y8; \
	VADDPS Y8, Y6, Y6; \
	VEXTRACTF64X4 $1, Z7, Y8; \
	VADDPS Y8, Y7, Y7; \
loop8: \
	CMPQ CX, $8; \
	JL   reduce; \
	FMA8(WIDEN, 0, 0); \
	ADDQ $16, SI; \
	ADDQ $16, DX; \
	ADDQ $32, R8; \
	ADDQ $32, R9; \
	ADDQ $32, R10; \
	ADDQ $32, R11; \
	SUBQ $8, CX; \
	JMP  loop8; \
reduce: \
	VHADDPS Y1, Y0, Y0; \
	VHADDPS Y3, Y2, Y2; \
	VHADDPS Y2, Y0, Y0; \
	VEXTRACTF128 $1, Y0, X1; \
	VADDPS X1, X0, X0; \
	VMOVUPS X0, (DI); \
	VHADDPS Y5, Y4, Y4; \
	VHADDPS Y7, Y6, Y6; \
	VHADDPS Y6, Y4, Y4; \
	VEXTRACTF128 $1, Y4, X5; \
	VADDPS X5, X4, X4; \
	VMOVUPS X4, 16(DI); \
	VZEROUPPER; \
	RET

// DOT_HALF512 is DOT_HALF with 512-bit registers: a batch-1 decode step is one such dot per
// weight row, and the wider loop keeps the widening off the critical path so the row streams
// at memory speed. Two lines of the next row are prefetched per 64 elements.
#define DOT_HALF512(WIDEN16, WIDEN) \
	MOVQ w+0(FP), SI; \
	MOVQ x+8(FP), DI; \
	MOVQ n+16(FP), CX; \
	LEAQ (SI)(CX*2), R12; \
	VXORPS Z0, Z0, Z0; \
	VXORPS Z1, Z1, Z1; \
	VXORPS Z2, Z2, Z2; \
	VXORPS Z3, Z3, Z3; \
loop64: \
	CMPQ CX, $64; \
	JL   loop16; \
	PREFETCHT1 (R12); \
	PREFETCHT1 64(R12); \
	ADDQ $128, R12; \
	WIDEN16((SI), Z4); \
	WIDEN16(32(SI), Z5); \
	WIDEN16(64(SI), Z6); \
	WIDEN16(96(SI), Z7); \
	VFMADD231PS (DI), Z4, Z0; \
	VFMADD231PS 64(DI), Z5, Z1; \
	VFMADD231PS 128(DI), Z6, Z2; \
	VFMADD231PS 192(DI), Z7, Z3; \
	ADDQ $128, SI; \
	ADDQ $256, DI; \
	SUBQ $64, CX; \
	JMP  loop64; \
loop16: \
	CMPQ CX, $16; \
	JL   fold; \
	WIDEN16((SI), Z4); \
	VFMADD231PS (DI), Z4, Z0; \
	ADDQ $32, SI; \
	ADDQ $64, DI; \
	SUBQ $16, CX; \
	JMP  loop16; \
fold: \
	VADDPS Z1, Z0, Z0; \
	VADDPS Z3, Z2, Z2; \
	VADDPS Z2, Z0, Z0; \
	VEXTRACTF64X4 $1, Z0, Y1; \
	VADDPS Y1, Y0, Y0; \
loop8: \
	CMPQ CX, $8; \
	JL   reduce; \
	WIDEN((SI), Y4); \
	VFMADD231PS (DI), Y4, Y0; \
	ADDQ $16, SI; \
	ADDQ $32, DI; \
	SUBQ $8, CX; \
	JMP  loop8; \
reduce: \
	VEXTRACTF128 $1, Y0, X1; \
	VADDPS X1, X0, X0; \
	VHADDPS X0, X0, X0; \
	VHADDPS X0, X0, X0; \
	VZEROUPPER; \
	MOVSS X0, ret+24(FP); \
	RET

// DOT_ROWS_HALF512 computes out[r] = row r · x for rows consecutive rows of n elements, n a
// multiple of 16: DOT_HALF512 looped in assembly. A batch-1 decode is this over whole weight
// matrices whose rows are short (896 halves, under 2 KB, in the 0.5B shape): a Go call per row
// (some 10 ns, against some 90 ns to stream such a row at 20 GB/s) is a cost worth removing.
// The weights 8 KB ahead are prefetched into L2 as the rows are summed, a stream that runs on
// across rows. The distance is in bytes, not rows: a row or two of BF16 (1.8-3.5 KB) kept too
// few misses in flight; at the 0.5B shape 8 KB decoded 6-17% faster than two rows ahead in
// four alternating rounds, and 16 KB between the two.
#define DOT_ROWS_HALF512(WIDEN16) \
	MOVQ w+0(FP), SI; \
	MOVQ x+8(FP), R8; \
	MOVQ n+16(FP), R9; \
	MOVQ rows+24(FP), R10; \
	MOVQ out+32(FP), R11; \
row: \
	TESTQ R10, R10; \
	JZ   done; \
	MOVQ R8, DI; \
	MOVQ R9, CX; \
	LEAQ 8192(SI), R12; \
	VXORPS Z0, Z0, Z0; \
	VXORPS Z1, Z1, Z1; \
	VXORPS Z2, Z2, Z2; \
	VXORPS Z3, Z3, Z3; \
loop64: \
	CMPQ CX, $64; \
	JL   loop16; \
	PREFETCHT1 (R12); \
	PREFETCHT1 64(R12); \
	ADDQ $128, R12; \
	WIDEN16((SI), Z4); \
	WIDEN16(32(SI), Z5); \
	WIDEN16(64(SI), Z6); \
	WIDEN16(96(SI), Z7); \
	VFMADD231PS (DI), Z4, Z0; \
	VFMADD231PS 64(DI), Z5, Z1; \
	VFMADD231PS 128(DI), Z6, Z2; \
	VFMADD231PS 192(DI), Z7, Z3; \
	ADDQ $128, SI; \
	ADDQ $256, DI; \
	SUBQ $64, CX; \
	JMP  loop64; \
loop16: \
	CMPQ CX, $16; \
	JL   reduce; \
	PREFETCHT1 (R12); \
	ADDQ $32, R12; \
	WIDEN16((SI), Z4); \
	VFMADD231PS (DI), Z4, Z0; \
	ADDQ $32, SI; \
	ADDQ $64, DI; \
	SUBQ $16, CX; \
	JMP  loop16; \
reduce: \
	VADDPS Z1, Z0, Z0; \
	VADDPS Z3, Z2, Z2; \
	VADDPS Z2, Z0, Z0; \
	VEXTRACTF64X4 $1, Z0, Y1; \
	VADDPS Y1, Y0, Y0; \
	VEXTRACTF128 $1, Y0, X1; \
	VADDPS X1, X0, X0; \
	VHADDPS X0, X0, X0; \
	VHADDPS X0, X0, X0; \
	MOVSS X0, (R11); \
	ADDQ $4, R11; \
	DECQ R10; \
	JMP  row; \
done: \
	VZEROUPPER; \
	RET

// func dotBF16AVX2(w *uint16, x *float32, n int) float32
TEXT ·dotBF16AVX2(SB), NOSPLIT, $0-28
	DOT_HALF(WIDEN_BF16)

// func dotF16AVX2(w *uint16, x *float32, n int) float32
TEXT ·dotF16AVX2(SB), NOSPLIT, $0-28
	DOT_HALF(WIDEN_F16)

// func dot2x4BF16AVX2(w0, w1 *uint16, x0, x1, x2, x3 *float32, n int, out *[8]float32)
TEXT ·dot2x4BF16AVX2(SB), NOSPLIT, $0-64
	DOT2X4_HALF(WIDEN_BF16)

// func dot2x4F16AVX2(w0, w1 *uint16, x0, x1, x2, x3 *float32, n int, out *[8]float32)
TEXT ·dot2x4F16AVX2(SB), NOSPLIT, $0-64
	DOT2X4_HALF(WIDEN_F16)

// func dot2x4BF16AVX512(w0, w1 *uint16, x0, x1, x2, x3 *float32, n int, out *[8]float32)
TEXT ·dot2x4BF16AVX512(SB), NOSPLIT, $0-64
	DOT2X4_HALF512(WIDEN16_BF16, WIDEN_BF16)

// func dot2x4F16AVX512(w0, w1 *uint16, x0, x1, x2, x3 *float32, n int, out *[8]float32)
TEXT ·dot2x4F16AVX512(SB), NOSPLIT, $0-64
	DOT2X4_HALF512(WIDEN16_F16, WIDEN_F16)

// func dotBF16AVX512(w *uint16, x *float32, n int) float32
TEXT ·dotBF16AVX512(SB), NOSPLIT, $0-28
	DOT_HALF512(WIDEN16_BF16, WIDEN_BF16)

// func dotF16AVX512(w *uint16, x *float32, n int) float32
TEXT ·dotF16AVX512(SB), NOSPLIT, $0-28
	DOT_HALF512(WIDEN16_F16, WIDEN_F16)

// func dotRowsBF16AVX512(w *uint16, x *float32, n, rows int, out *float32)
TEXT ·dotRowsBF16AVX512(SB), NOSPLIT, $0-40
	DOT_ROWS_HALF512(WIDEN16_BF16)

// func dotRowsF16AVX512(w *uint16, x *float32, n, rows int, out *float32)
TEXT ·dotRowsF16AVX512(SB), NOSPLIT, $0-40
	DOT_ROWS_HALF512(WIDEN16_F16)
