//go:build openblas && cgo

package trainer

/*
#cgo LDFLAGS: -lopenblas
#include <cblas.h>
void openblas_set_num_threads(int num_threads);
*/
import "C"

import (
	"sync"

	"gonum.org/v1/gonum/blas"
	"gonum.org/v1/gonum/blas/gonum"
	"gorgonia.org/tensor"
)

// openBLAS routes gorgonia's matrix products (Sgemm, Dgemm) to OpenBLAS (Debian
// libopenblas-dev), several times faster than gonum's pure-Go kernels; every other routine
// stays gonum's. Built with -tags openblas.
//
// OpenBLAS runs single-threaded and a large product is split into row (or column) blocks
// over GOMAXPROCS goroutines instead: OpenBLAS's own worker threads spin in sched_yield
// between calls, stealing the cores the Go code in between needs.
type openBLAS struct{ gonum.Implementation }

func init() {
	C.openblas_set_num_threads(1)
	tensor.Use(openBLAS{})
}

// BLASName says which BLAS the graph runs on (for bench output).
const BLASName = "openblas"

func cblasTrans(t blas.Transpose) C.enum_CBLAS_TRANSPOSE {
	if t == blas.NoTrans {
		return C.CblasNoTrans
	}
	return C.CblasTrans
}

// splitGemm calls gemm(aOff, bOff, cOff, m, n) on blocks of C's rows or columns, in parallel
// when the product is large enough to pay for it.
func splitGemm(tA, tB blas.Transpose, m, n, k, lda, ldb, ldc int, gemm func(aOff, bOff, cOff, m, n int)) {
	workers := threads()
	if workers < 2 || m*n*k < 1<<21 {
		gemm(0, 0, 0, m, n)
		return
	}
	var wg sync.WaitGroup
	if m >= n {
		step := (m + workers - 1) / workers
		for r0 := 0; r0 < m; r0 += step {
			rows := min(step, m-r0)
			aOff := r0 * lda // op(A) rows are A's rows
			if tA != blas.NoTrans {
				aOff = r0 // op(A) rows are A's columns
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				gemm(aOff, 0, r0*ldc, rows, n)
			}()
		}
	} else {
		step := (n + workers - 1) / workers
		for c0 := 0; c0 < n; c0 += step {
			cols := min(step, n-c0)
			bOff := c0 // op(B) columns are B's columns
			if tB != blas.NoTrans {
				bOff = c0 * ldb // op(B) columns are B's rows
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				gemm(0, bOff, c0, m, cols)
			}()
		}
	}
	wg.Wait()
}

func (openBLAS) Sgemm(tA, tB blas.Transpose, m, n, k int, alpha float32, a []float32, lda int, b []float32, ldb int, beta float32, c []float32, ldc int) {
	if m == 0 || n == 0 {
		return
	}
	if k == 0 || len(a) == 0 || len(b) == 0 {
		gonum.Implementation{}.Sgemm(tA, tB, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc)
		return
	}
	splitGemm(tA, tB, m, n, k, lda, ldb, ldc, func(aOff, bOff, cOff, m, n int) {
		C.cblas_sgemm(C.CblasRowMajor, cblasTrans(tA), cblasTrans(tB), C.blasint(m), C.blasint(n), C.blasint(k),
			C.float(alpha), (*C.float)(&a[aOff]), C.blasint(lda), (*C.float)(&b[bOff]), C.blasint(ldb),
			C.float(beta), (*C.float)(&c[cOff]), C.blasint(ldc))
	})
}

func (openBLAS) Dgemm(tA, tB blas.Transpose, m, n, k int, alpha float64, a []float64, lda int, b []float64, ldb int, beta float64, c []float64, ldc int) {
	if m == 0 || n == 0 {
		return
	}
	if k == 0 || len(a) == 0 || len(b) == 0 {
		gonum.Implementation{}.Dgemm(tA, tB, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc)
		return
	}
	splitGemm(tA, tB, m, n, k, lda, ldb, ldc, func(aOff, bOff, cOff, m, n int) {
		C.cblas_dgemm(C.CblasRowMajor, cblasTrans(tA), cblasTrans(tB), C.blasint(m), C.blasint(n), C.blasint(k),
			C.double(alpha), (*C.double)(&a[aOff]), C.blasint(lda), (*C.double)(&b[bOff]), C.blasint(ldb),
			C.double(beta), (*C.double)(&c[cOff]), C.blasint(ldc))
	})
}
