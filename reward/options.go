package reward

import (
	"log/slog"
	"runtime"
	"time"
)

// Options configure a Pool. The zero value of every field means its default.
type Options struct {
	// Python is the interpreter to run. Empty resolves one with ResolvePython: the real
	// executable behind `python3` on PATH if the sandbox uid can run it, else /usr/bin/python3.
	Python string
	// Workers is the number of long-lived workers. Default: the number of CPUs.
	Workers int
	// Deadline bounds one evaluation (one function on one response), and separately the
	// source's top level. Default 2s.
	Deadline time.Duration
	// MemoryLimit is each worker's address-space limit (RLIMIT_AS) in bytes. Default 1 GiB.
	MemoryLimit uint64
	// CPULimit bounds the CPU time of each process of a worker (RLIMIT_CPU): of one call's
	// function process, which starts afresh for every call. Default 10 minutes.
	CPULimit time.Duration
	// OpenFiles is each worker's RLIMIT_NOFILE. Default 64.
	OpenFiles uint64
	// MaxOutput caps the characters one evaluation may print. Default 1 MiB.
	MaxOutput int
	// TmpBytes sizes each worker's private /tmp (a tmpfs, also its working directory).
	// Default 16 MiB.
	TmpBytes int64
	// UID and GID run the workers when the pool is started as root. Default 65534 (nobody).
	UID, GID int
	// StartTimeout bounds starting one worker. Default 20s.
	StartTimeout time.Duration
	// MaxTimeouts is how many of one call's evaluations may time out before the function's
	// remaining responses are given up as timeouts without running: a function that hangs on
	// every response would otherwise cost a deadline and a worker restart per response.
	// Default 3.
	MaxTimeouts int
	// FlushInterval is how long a function's process batches results before it sends them.
	// Partial results only save re-running evaluations when that process dies mid-call, and
	// each frame costs two process wake-ups (child to zygote to Go). Default 25ms.
	FlushInterval time.Duration
	// UnsafeNoSandbox runs workers without the OS sandbox (namespaces, private root,
	// seccomp), for hosts whose kernel forbids namespaces: only the uid (when started as
	// root), the rlimits and the audit hook remain, and a function can read whatever that uid
	// can and reach the network. Every pool start logs a warning.
	UnsafeNoSandbox bool
	// noAuditHook leaves the CPython audit hook out, so tests can show what the OS layer
	// alone refuses.
	noAuditHook bool
	// Returns is how a result other than True or False counts (see Returns). Default
	// ReturnsAutoIF.
	Returns Returns
	// Logger receives worker lifecycle events. Default slog.Default().
	Logger *slog.Logger
}

func (o Options) withDefaults() Options {
	if o.Workers <= 0 {
		o.Workers = runtime.NumCPU()
	}
	if o.Deadline <= 0 {
		o.Deadline = 2 * time.Second
	}
	if o.MemoryLimit == 0 {
		o.MemoryLimit = 1 << 30
	}
	if o.CPULimit <= 0 {
		o.CPULimit = 10 * time.Minute
	}
	if o.OpenFiles == 0 {
		o.OpenFiles = 64
	}
	if o.MaxOutput <= 0 {
		o.MaxOutput = 1 << 20
	}
	if o.TmpBytes <= 0 {
		o.TmpBytes = 16 << 20
	}
	if o.UID == 0 && o.GID == 0 {
		o.UID, o.GID = 65534, 65534
	}
	if o.StartTimeout <= 0 {
		o.StartTimeout = 20 * time.Second
	}
	if o.MaxTimeouts <= 0 {
		o.MaxTimeouts = 3
	}
	if o.FlushInterval <= 0 {
		o.FlushInterval = 25 * time.Millisecond
	}
	if o.Returns == "" {
		o.Returns = ReturnsAutoIF
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	return o
}
