package reward

import (
	"golang.org/x/net/bpf"
	"golang.org/x/sys/unix"
)

const auditArch = unix.AUDIT_ARCH_X86_64

// x86-64's older spellings of calls the common list allows in their *at form.
var archAllowedSyscalls = []uintptr{
	unix.SYS_OPEN, unix.SYS_STAT, unix.SYS_LSTAT, unix.SYS_ACCESS, unix.SYS_PIPE, unix.SYS_DUP2,
	unix.SYS_READLINK, unix.SYS_GETDENTS, unix.SYS_MKDIR, unix.SYS_RMDIR, unix.SYS_UNLINK,
	unix.SYS_RENAME, unix.SYS_SYMLINK, unix.SYS_LINK, unix.SYS_CHMOD, unix.SYS_POLL,
	unix.SYS_SELECT, unix.SYS_EPOLL_WAIT, unix.SYS_ARCH_PRCTL, unix.SYS_GETPGRP, unix.SYS_TIME,
	unix.SYS_ALARM, unix.SYS_SETRLIMIT,
}

// archPrologue refuses the x32 ABI's syscall numbers, which alias the x86-64 ones the
// allowlist checks by number.
func archPrologue(deny bpf.Instruction) []bpf.Instruction {
	return []bpf.Instruction{bpf.JumpIf{Cond: bpf.JumpGreaterOrEqual, Val: 0x40000000, SkipFalse: 1}, deny}
}
