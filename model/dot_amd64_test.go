package model

import "testing"

// The kernel test runs on whichever kernels this CPU selects; run it again on each narrower
// path so a machine with AVX-512 still checks the AVX2 and pure-Go code.
func TestDotKernelsOnEveryAMD64Path(t *testing.T) {
	saved2, saved512 := useAVX2, useAVX512
	defer func() { useAVX2, useAVX512 = saved2, saved512 }()
	for _, p := range []struct {
		name         string
		avx2, avx512 bool
	}{{"avx2", saved2, false}, {"generic", false, false}} {
		t.Run(p.name, func(t *testing.T) {
			useAVX2, useAVX512 = p.avx2, p.avx512
			TestDotKernelsAgreeWithFloat64Reference(t)
			TestVectorKernelsAgreeWithFloat64Reference(t)
			TestForwardMatchesTorchGolden(t)
		})
	}
}
