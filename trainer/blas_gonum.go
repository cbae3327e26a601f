//go:build !openblas || !cgo

package trainer

// BLASName says which BLAS the graph runs on (for bench output): gonum's pure Go unless built
// with -tags openblas.
const BLASName = "gonum"
