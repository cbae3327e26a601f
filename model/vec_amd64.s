#include "textflag.h"

// Constants of the float32 exponential (Cephes expf), eight copies each so that every
// instruction can take them as a 256-bit memory operand.
DATA expc<>+0(SB)/4, $0x3fb8aa3b
DATA expc<>+4(SB)/4, $0x3fb8aa3b
DATA expc<>+8(SB)/4, $0x3fb8aa3b
DATA expc<>+12(SB)/4, $0x3fb8aa3b
DATA expc<>+16(SB)/4, $0x3fb8aa3b
DATA expc<>+20(SB)/4, $0x3fb8aa3b
DATA expc<>+24(SB)/4, $0x3fb8aa3b
DATA expc<>+28(SB)/4, $0x3fb8aa3b
DATA expc<>+32(SB)/4, $0x3f318000
DATA expc<>+36(SB)/4, $0x3f318000
DATA expc<>+40(SB)/4, $0x3f318000
DATA expc<>+44(SB)/4, $0x3f318000
DATA expc<>+48(SB)/4, $0x3f318000
DATA expc<>+52(SB)/4, $0x3f318000
DATA expc<>+56(SB)/4, $0x3f318000
DATA expc<>+60(SB)/4, $0x3f318000
DATA expc<>+64(SB)/4, $0xb95e8083
DATA expc<>+68(SB)/4, $0xb95e8083
DATA expc<>+72(SB)/4, $0xb95e8083
DATA expc<>+76(SB)/4, $0xb95e8083
DATA expc<>+80(SB)/4, $0xb95e8083
DATA expc<>+84(SB)/4, $0xb95e8083
DATA expc<>+88(SB)/4, $0xb95e8083
DATA expc<>+92(SB)/4, $0xb95e8083
DATA expc<>+96(SB)/4, $0x42b0c0a5
DATA expc<>+100(SB)/4, $0x42b0c0a5
DATA expc<>+104(SB)/4, $0x42b0c0a5
DATA expc<>+108(SB)/4, $0x42b0c0a5
DATA expc<>+112(SB)/4, $0x42b0c0a5
DATA expc<>+116(SB)/4, $0x42b0c0a5
DATA expc<>+120(SB)/4, $0x42b0c0a5
DATA expc<>+124(SB)/4, $0x42b0c0a5
DATA expc<>+128(SB)/4, $0xc2aeac50
DATA expc<>+132(SB)/4, $0xc2aeac50
DATA expc<>+136(SB)/4, $0xc2aeac50
DATA expc<>+140(SB)/4, $0xc2aeac50
DATA expc<>+144(SB)/4, $0xc2aeac50
DATA expc<>+148(SB)/4, $0xc2aeac50
DATA expc<>+152(SB)/4, $0xc2aeac50
DATA expc<>+156(SB)/4, $0xc2aeac50
DATA expc<>+160(SB)/4, $0x3f800000
DATA expc<>+164(SB)/4, $0x3f800000
DATA expc<>+168(SB)/4, $0x3f800000
DATA expc<>+172(SB)/4, $0x3f800000
DATA expc<>+176(SB)/4, $0x3f800000
DATA expc<>+180(SB)/4, $0x3f800000
DATA expc<>+184(SB)/4, $0x3f800000
DATA expc<>+188(SB)/4, $0x3f800000
DATA expc<>+192(SB)/4, $0x39506967
DATA expc<>+196(SB)/4, $0x39506967
DATA expc<>+200(SB)/4, $0x39506967
DATA expc<>+204(SB)/4, $0x39506967
DATA expc<>+208(SB)/4, $0x39506967
DATA expc<>+212(SB)/4, $0x39506967
DATA expc<>+216(SB)/4, $0x39506967
DATA expc<>+220(SB)/4, $0x39506967
DATA expc<>+224(SB)/4, $0x3ab743ce
DATA expc<>+228(SB)/4, $0x3ab743ce
DATA expc<>+232(SB)/4, $0x3ab743ce
DATA expc<>+236(SB)/4, $0x3ab743ce
DATA expc<>+240(SB)/4, $0x3ab743ce
DATA expc<>+244(SB)/4, $0x3ab743ce
DATA expc<>+248(SB)/4, $0x3ab743ce
DATA expc<>+252(SB)/4, $0x3ab743ce
DATA expc<>+256(SB)/4, $0x3c088908
DATA expc<>+260(SB)/4, $0x3c088908
DATA expc<>+264(SB)/4, $0x3c088908
DATA expc<>+268(SB)/4, $0x3c088908
DATA expc<>+272(SB)/4, $0x3c088908
DATA expc<>+276(SB)/4, $0x3c088908
DATA expc<>+280(SB)/4, $0x3c088908
DATA expc<>+284(SB)/4, $0x3c088908
DATA expc<>+288(SB)/4, $0x3d2aa9c1
DATA expc<>+292(SB)/4, $0x3d2aa9c1
DATA expc<>+296(SB)/4, $0x3d2aa9c1
DATA expc<>+300(SB)/4, $0x3d2aa9c1
DATA expc<>+304(SB)/4, $0x3d2aa9c1
DATA expc<>+308(SB)/4, $0x3d2aa9c1
DATA expc<>+312(SB)/4, $0x3d2aa9c1
DATA expc<>+316(SB)/4, $0x3d2aa9c1
DATA expc<>+320(SB)/4, $0x3e2aaaaa
DATA expc<>+324(SB)/4, $0x3e2aaaaa
DATA expc<>+328(SB)/4, $0x3e2aaaaa
DATA expc<>+332(SB)/4, $0x3e2aaaaa
DATA expc<>+336(SB)/4, $0x3e2aaaaa
DATA expc<>+340(SB)/4, $0x3e2aaaaa
DATA expc<>+344(SB)/4, $0x3e2aaaaa
DATA expc<>+348(SB)/4, $0x3e2aaaaa
DATA expc<>+352(SB)/4, $0x3f000000
DATA expc<>+356(SB)/4, $0x3f000000
DATA expc<>+360(SB)/4, $0x3f000000
DATA expc<>+364(SB)/4, $0x3f000000
DATA expc<>+368(SB)/4, $0x3f000000
DATA expc<>+372(SB)/4, $0x3f000000
DATA expc<>+376(SB)/4, $0x3f000000
DATA expc<>+380(SB)/4, $0x3f000000
DATA expc<>+384(SB)/4, $0x0000007f
DATA expc<>+388(SB)/4, $0x0000007f
DATA expc<>+392(SB)/4, $0x0000007f
DATA expc<>+396(SB)/4, $0x0000007f
DATA expc<>+400(SB)/4, $0x0000007f
DATA expc<>+404(SB)/4, $0x0000007f
DATA expc<>+408(SB)/4, $0x0000007f
DATA expc<>+412(SB)/4, $0x0000007f
GLOBL expc<>(SB), RODATA|NOPTR, $416

// EXP8 replaces the eight floats in Y0 with their exponentials (relative error about 2e-7),
// using Y1-Y3. Inputs are clamped to [ln(FLT_MIN), 88.376]: below, the result is FLT_MIN
// rather than a denormal or 0, harmless wherever it is added to 1 or normalised.
#define EXP8 \
	VMINPS expc<>+96(SB), Y0, Y0; \
	VMAXPS expc<>+128(SB), Y0, Y0; \
	VMULPS expc<>+0(SB), Y0, Y1; \
	VROUNDPS $0, Y1, Y1; \
	VFNMADD231PS expc<>+32(SB), Y1, Y0; \
	VFNMADD231PS expc<>+64(SB), Y1, Y0; \
	VMOVUPS expc<>+192(SB), Y2; \
	VFMADD213PS expc<>+224(SB), Y0, Y2; \
	VFMADD213PS expc<>+256(SB), Y0, Y2; \
	VFMADD213PS expc<>+288(SB), Y0, Y2; \
	VFMADD213PS expc<>+320(SB), Y0, Y2; \
	VFMADD213PS expc<>+352(SB), Y0, Y2; \
	VMULPS Y0, Y0, Y3; \
	VFMADD213PS Y0, Y3, Y2; \
	VADDPS expc<>+160(SB), Y2, Y2; \
	VCVTPS2DQ Y1, Y1; \
	VPADDD expc<>+384(SB), Y1, Y1; \
	VPSLLD $23, Y1, Y1; \
	VMULPS Y1, Y2, Y0

// func expAVX2(x *float32, n int)
// x[i] = exp(x[i]) for n elements, n a multiple of 8.
TEXT ·expAVX2(SB), NOSPLIT, $0-16
	MOVQ x+0(FP), SI
	MOVQ n+8(FP), CX
exploop:
	CMPQ CX, $8
	JL   expdone
	VMOVUPS (SI), Y0
	EXP8
	VMOVUPS Y0, (SI)
	ADDQ $32, SI
	SUBQ $8, CX
	JMP  exploop
expdone:
	VZEROUPPER
	RET

// func swigluAVX2(gate, up *float32, n int)
// gate[i] = silu(gate[i])·up[i] = gate[i]·up[i] / (1 + exp(-gate[i])), n a multiple of 8.
TEXT ·swigluAVX2(SB), NOSPLIT, $0-24
	MOVQ gate+0(FP), SI
	MOVQ up+8(FP), DI
	MOVQ n+16(FP), CX
	VXORPS Y5, Y5, Y5
swiloop:
	CMPQ CX, $8
	JL   swidone
	VMOVUPS (SI), Y4
	VSUBPS Y4, Y5, Y0
	EXP8
	VADDPS expc<>+160(SB), Y0, Y0
	VMULPS (DI), Y4, Y4
	VDIVPS Y0, Y4, Y4
	VMOVUPS Y4, (SI)
	ADDQ $32, SI
	ADDQ $32, DI
	SUBQ $8, CX
	JMP  swiloop
swidone:
	VZEROUPPER
	RET

// func axpyAVX2(y, x *float32, a float32, n int)
// y[i] += a·x[i], n a multiple of 8.
TEXT ·axpyAVX2(SB), NOSPLIT, $0-32
	MOVQ y+0(FP), DI
	MOVQ x+8(FP), SI
	VBROADCASTSS a+16(FP), Y1
	MOVQ n+24(FP), CX
axpyloop:
	CMPQ CX, $8
	JL   axpydone
	VMOVUPS (DI), Y0
	VFMADD231PS (SI), Y1, Y0
	VMOVUPS Y0, (DI)
	ADDQ $32, SI
	ADDQ $32, DI
	SUBQ $8, CX
	JMP  axpyloop
axpydone:
	VZEROUPPER
	RET

// func axpy4AVX2(y, x0, x1, x2, x3 *float32, a *[4]float32, n int)
// y[i] += a[0]·x0[i] + a[1]·x1[i] + a[2]·x2[i] + a[3]·x3[i], n a multiple of 8: y is loaded
// and stored once for four rows.
TEXT ·axpy4AVX2(SB), NOSPLIT, $0-56
	MOVQ y+0(FP), DI
	MOVQ x0+8(FP), R8
	MOVQ x1+16(FP), R9
	MOVQ x2+24(FP), R10
	MOVQ x3+32(FP), R11
	MOVQ a+40(FP), AX
	MOVQ n+48(FP), CX
	VBROADCASTSS 0(AX), Y4
	VBROADCASTSS 4(AX), Y5
	VBROADCASTSS 8(AX), Y6
	VBROADCASTSS 12(AX), Y7
	XORQ BX, BX
axpy4loop:
	CMPQ CX, $8
	JL   axpy4done
	VMOVUPS (DI)(BX*1), Y0
	VFMADD231PS (R8)(BX*1), Y4, Y0
	VFMADD231PS (R9)(BX*1), Y5, Y0
	VFMADD231PS (R10)(BX*1), Y6, Y0
	VFMADD231PS (R11)(BX*1), Y7, Y0
	VMOVUPS Y0, (DI)(BX*1)
	ADDQ $32, BX
	SUBQ $8, CX
	JMP  axpy4loop
axpy4done:
	VZEROUPPER
	RET
