//go:build !openblas || !cgo || !amd64

package trainer

// Without -tags openblas there are no C kernels: the Go loops run (cKernels is false, so the
// calls below are compiled out; they exist for the build).
const cKernels = false

var kernelsAVX2 = false

func setKernelsAVX2(bool) bool { return false }

func swigluFwd32(g, u, y, s []float32)                            { panic("no C kernels") }
func swigluBack32(which int, g, u, dy, s, d []float32)            { panic("no C kernels") }
func expShift32(dst, src []float32, shift, scale float64) float64 { panic("no C kernels") }
func causalSoftmax32(p []float32, n, ld int)                      { panic("no C kernels") }
func lseParts32(row []float32) (mx, z float64)                    { panic("no C kernels") }
