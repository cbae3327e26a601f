package model

import "testing"

// The kernel test runs on whichever kernels this CPU selects; run it again on each narrower
// path so a machine with AVX-512 still checks the AVX2 and pure-Go code.
func TestDotKernelsOnEveryAMD64Path(t *testing.T) {
	saved2, saved512, savedF16C := useAVX2, useAVX512, useF16C
	defer func() { useAVX2, useAVX512, useF16C = saved2, saved512, savedF16C }()
	for _, p := range []struct {
		name               string
		avx2, avx512, f16c bool
	}{{"avx2", saved2, false, savedF16C}, {"avx2-no-f16c", saved2, false, false}, {"generic", false, false, false}} {
		t.Run(p.name, func(t *testing.T) {
			useAVX2, useAVX512, useF16C = p.avx2, p.avx512, p.f16c
			TestDotKernelsAgreeWithFloat64Reference(t)
			TestHalfKernelsMatchFloat32Kernels(t)
			TestVectorKernelsAgreeWithFloat64Reference(t)
			TestForwardMatchesTorchGolden(t)
		})
	}
}
