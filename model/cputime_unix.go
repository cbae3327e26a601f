//go:build unix

package model

import (
	"syscall"
	"time"
)

// processCPUTime is the user+system time of the whole process: the bench divides work by
// it as well as by wall time, since on a shared machine wall time mostly measures the
// neighbours.
func processCPUTime() time.Duration {
	var r syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &r); err != nil {
		return 0
	}
	return time.Duration(r.Utime.Nano() + r.Stime.Nano())
}
