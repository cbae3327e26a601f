package reward

import (
	"golang.org/x/net/bpf"
	"golang.org/x/sys/unix"
)

const auditArch = unix.AUDIT_ARCH_AARCH64

// arm64 has only the *at forms of the file calls, which the common list allows.
var archAllowedSyscalls []uintptr

func archPrologue(bpf.Instruction) []bpf.Instruction { return nil }
