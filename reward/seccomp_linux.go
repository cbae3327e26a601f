package reward

import (
	"fmt"
	"unsafe"

	"golang.org/x/net/bpf"
	"golang.org/x/sys/unix"
)

// The seccomp filter every sandboxed worker runs under: an allowlist of the system calls
// CPython, its standard library, numpy/OpenBLAS and NLTK use; everything else fails with EPERM
// (clone3 with ENOSYS, so the C library falls back to clone, whose flags the filter can see).
// It is loaded, with no_new_privs, by the sandbox's init on the thread that then execs the
// interpreter, so it binds before the first line of Python runs and survives into every
// process the worker forks.
//
// Written with x/net/bpf's assembler rather than libseccomp: no cgo dependency for the
// workers' start path, and the program is small enough to read (see seccompProgram).

// Offsets into struct seccomp_data.
const (
	seccompDataNR   = 0
	seccompDataArch = 4
	seccompDataArgs = 16
)

const (
	seccompRetKillProcess = 0x80000000
	seccompRetErrno       = 0x00050000
	seccompRetAllow       = 0x7fff0000
	seccompSetModeFilter  = 1
)

// cloneNamespaceFlags are the clone(2) flags that would make a new namespace.
const cloneNamespaceFlags = unix.CLONE_NEWNS | unix.CLONE_NEWCGROUP | unix.CLONE_NEWUTS |
	unix.CLONE_NEWIPC | unix.CLONE_NEWUSER | unix.CLONE_NEWPID | unix.CLONE_NEWNET

// allowedSyscalls may be made with any arguments. Calls that touch files are allowed because
// the mount namespace decides what exists (a read-only root and a private tmpfs): the filter
// is about the kernel surface, not about paths.
var allowedSyscalls = append([]uintptr{
	unix.SYS_READ, unix.SYS_WRITE, unix.SYS_READV, unix.SYS_WRITEV, unix.SYS_PREAD64,
	unix.SYS_PWRITE64, unix.SYS_PREADV, unix.SYS_PWRITEV, unix.SYS_PREADV2, unix.SYS_PWRITEV2,
	unix.SYS_OPENAT, unix.SYS_CLOSE, unix.SYS_CLOSE_RANGE, unix.SYS_NEWFSTATAT, unix.SYS_FSTAT,
	unix.SYS_STATX, unix.SYS_FSTATFS, unix.SYS_STATFS, unix.SYS_LSEEK, unix.SYS_MMAP,
	unix.SYS_MUNMAP, unix.SYS_MPROTECT, unix.SYS_MREMAP, unix.SYS_MADVISE, unix.SYS_MSYNC,
	unix.SYS_MINCORE, unix.SYS_BRK, unix.SYS_RT_SIGACTION, unix.SYS_RT_SIGPROCMASK,
	unix.SYS_RT_SIGRETURN, unix.SYS_RT_SIGPENDING, unix.SYS_RT_SIGTIMEDWAIT,
	unix.SYS_RT_SIGSUSPEND, unix.SYS_SIGALTSTACK, unix.SYS_FCNTL, unix.SYS_DUP, unix.SYS_DUP3,
	unix.SYS_PIPE2, unix.SYS_FACCESSAT, unix.SYS_FACCESSAT2, unix.SYS_GETCWD, unix.SYS_CHDIR,
	unix.SYS_FCHDIR, unix.SYS_READLINKAT, unix.SYS_GETDENTS64, unix.SYS_MKDIRAT,
	unix.SYS_UNLINKAT, unix.SYS_RENAMEAT, unix.SYS_RENAMEAT2, unix.SYS_SYMLINKAT,
	unix.SYS_LINKAT, unix.SYS_FCHMOD, unix.SYS_FCHMODAT, unix.SYS_UTIMENSAT, unix.SYS_TRUNCATE,
	unix.SYS_FTRUNCATE, unix.SYS_FALLOCATE, unix.SYS_FSYNC, unix.SYS_FDATASYNC, unix.SYS_FLOCK,
	unix.SYS_FADVISE64, unix.SYS_UMASK, unix.SYS_GETPID, unix.SYS_GETPPID, unix.SYS_GETTID,
	unix.SYS_GETUID, unix.SYS_GETEUID, unix.SYS_GETGID, unix.SYS_GETEGID, unix.SYS_GETRESUID,
	unix.SYS_GETRESGID, unix.SYS_GETGROUPS, unix.SYS_GETPGID, unix.SYS_GETSID, unix.SYS_UNAME,
	unix.SYS_SYSINFO, unix.SYS_GETRLIMIT, unix.SYS_GETRUSAGE, unix.SYS_TIMES,
	unix.SYS_CLOCK_GETTIME, unix.SYS_CLOCK_GETRES, unix.SYS_CLOCK_NANOSLEEP,
	unix.SYS_NANOSLEEP, unix.SYS_GETTIMEOFDAY, unix.SYS_GETITIMER, unix.SYS_SETITIMER,
	unix.SYS_FUTEX, unix.SYS_SET_ROBUST_LIST, unix.SYS_GET_ROBUST_LIST,
	unix.SYS_SET_TID_ADDRESS, unix.SYS_RSEQ, unix.SYS_MEMBARRIER, unix.SYS_GETCPU,
	unix.SYS_SCHED_GETAFFINITY, unix.SYS_SCHED_YIELD, unix.SYS_SCHED_GETPARAM,
	unix.SYS_SCHED_GETSCHEDULER, unix.SYS_GETRANDOM, unix.SYS_PPOLL, unix.SYS_PSELECT6,
	unix.SYS_EPOLL_CREATE1, unix.SYS_EPOLL_CTL, unix.SYS_EPOLL_PWAIT, unix.SYS_EXIT,
	unix.SYS_EXIT_GROUP, unix.SYS_WAIT4, unix.SYS_WAITID, unix.SYS_KILL, unix.SYS_TGKILL,
	unix.SYS_TKILL, unix.SYS_CAPGET, unix.SYS_RESTART_SYSCALL, unix.SYS_SENDFILE,
	unix.SYS_MEMFD_CREATE,
}, archAllowedSyscalls...)

// ioctlRequests are the only ioctl(2) requests allowed: terminal probes (isatty) and the
// non-blocking and close-on-exec flags. Not TIOCSTI and friends.
var ioctlRequests = []uint32{unix.TCGETS, unix.TIOCGWINSZ, 0x541b /* FIONREAD */, 0x5421, /* FIONBIO */
	0x5451 /* FIOCLEX */, 0x5450 /* FIONCLEX */}

// prctlOptions are the prctl(2) operations allowed: reading state and naming threads.
var prctlOptions = []uint32{unix.PR_GET_NAME, unix.PR_SET_NAME, unix.PR_GET_DUMPABLE,
	unix.PR_GET_NO_NEW_PRIVS, unix.PR_GET_SECCOMP, unix.PR_CAPBSET_READ, unix.PR_GET_TIMERSLACK}

// seccompProgram assembles the filter. execPath is the address of the NUL-terminated path the
// sandbox init passes to execve: that single call is allowed and every other execve is not,
// so a function cannot start a fresh interpreter without the worker's code (a process can
// only match it by placing a string at that exact address, and the mount namespace still
// holds whatever it runs).
func seccompProgram(execPath uintptr) ([]bpf.RawInstruction, error) {
	deny := bpf.RetConstant{Val: seccompRetErrno | uint32(unix.EPERM)}
	allow := bpf.RetConstant{Val: seccompRetAllow}
	prog := []bpf.Instruction{
		bpf.LoadAbsolute{Off: seccompDataArch, Size: 4},
		bpf.JumpIf{Cond: bpf.JumpEqual, Val: auditArch, SkipTrue: 1},
		bpf.RetConstant{Val: seccompRetKillProcess},
		bpf.LoadAbsolute{Off: seccompDataNR, Size: 4},
	}
	prog = append(prog, archPrologue(deny)...)
	for _, nr := range allowedSyscalls {
		prog = append(prog, bpf.JumpIf{Cond: bpf.JumpEqual, Val: uint32(nr), SkipFalse: 1}, allow)
	}
	// Each guarded call is a block that ends in a return on every path, so the accumulator
	// need not hold the syscall number again after it.
	guarded := func(nr uintptr, block ...bpf.Instruction) {
		prog = append(prog, bpf.JumpIf{Cond: bpf.JumpEqual, Val: uint32(nr), SkipFalse: uint8(len(block))})
		prog = append(prog, block...)
	}
	argLow := func(i uint32) bpf.Instruction { return bpf.LoadAbsolute{Off: seccompDataArgs + 8*i, Size: 4} }
	argHigh := func(i uint32) bpf.Instruction { return bpf.LoadAbsolute{Off: seccompDataArgs + 8*i + 4, Size: 4} }
	oneOf := func(arg uint32, vals []uint32) []bpf.Instruction {
		b := []bpf.Instruction{argLow(arg)}
		for _, v := range vals {
			b = append(b, bpf.JumpIf{Cond: bpf.JumpEqual, Val: v, SkipFalse: 1}, allow)
		}
		return append(b, deny)
	}
	// clone: threads and plain forks only (RLIMIT_NPROC decides how many); never a namespace.
	guarded(unix.SYS_CLONE, argLow(0),
		bpf.JumpIf{Cond: bpf.JumpBitsSet, Val: cloneNamespaceFlags, SkipTrue: 1}, allow, deny)
	guarded(unix.SYS_CLONE3, bpf.RetConstant{Val: seccompRetErrno | uint32(unix.ENOSYS)})
	guarded(unix.SYS_IOCTL, oneOf(1, ioctlRequests)...)
	guarded(unix.SYS_PRCTL, oneOf(0, prctlOptions)...)
	// prlimit64 on the caller only: another process's limits (the worker's zygote) are not
	// this function's to change.
	guarded(unix.SYS_PRLIMIT64, argLow(0), bpf.JumpIf{Cond: bpf.JumpEqual, Val: 0, SkipFalse: 3},
		argHigh(0), bpf.JumpIf{Cond: bpf.JumpEqual, Val: 0, SkipFalse: 1}, allow, deny)
	guarded(unix.SYS_EXECVE, argLow(0), bpf.JumpIf{Cond: bpf.JumpEqual, Val: uint32(execPath), SkipFalse: 3},
		argHigh(0), bpf.JumpIf{Cond: bpf.JumpEqual, Val: uint32(uint64(execPath) >> 32), SkipFalse: 1}, allow, deny)
	prog = append(prog, deny)
	raw, err := bpf.Assemble(prog)
	if err != nil {
		return nil, fmt.Errorf("assemble seccomp filter: %w", err)
	}
	return raw, nil
}

// loadSeccomp sets no_new_privs and installs the filter on the calling thread, which must be
// locked to its goroutine and exec right after.
func loadSeccomp(raw []bpf.RawInstruction) error {
	if err := unix.Prctl(unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0); err != nil {
		return fmt.Errorf("no_new_privs: %w", err)
	}
	filter := make([]unix.SockFilter, len(raw))
	for i, r := range raw {
		filter[i] = unix.SockFilter{Code: r.Op, Jt: r.Jt, Jf: r.Jf, K: r.K}
	}
	prog := unix.SockFprog{Len: uint16(len(filter)), Filter: &filter[0]}
	if _, _, errno := unix.RawSyscall(unix.SYS_SECCOMP, seccompSetModeFilter, 0, uintptr(unsafe.Pointer(&prog))); errno != 0 {
		return fmt.Errorf("seccomp: %w", errno)
	}
	return nil
}
