// Package reward scores responses by executing LLM-written Python verification functions
// (`def evaluate(response) -> bool`, AutoIF stage 2/3) in a sandbox.
//
// # Threat model
//
// A verification function is untrusted code: LLM-written, and in self-alignment written by the
// very model being trained, which can learn to game its reward. It may be buggy (hang, crash,
// allocate, print without end), hostile (read or change the host's files, reach the network,
// start processes, attack the worker) or adversarial towards other functions (change their
// verdicts, read their requests). A function may always forge its own verdict: that is what
// cross-validation is for. Everything else it must not do:
//
//	layer                    what it guarantees
//	-----------------------  -----------------------------------------------------------------
//	namespaces (user, mount, no network at all; sees only its own worker's processes; in its
//	  pid, net, ipc, uts)    own mount tree. Started as root, workers run as Options.UID
//	                         (nobody); otherwise a user namespace maps the caller to root
//	                         inside, with no capability left (bounding set emptied).
//	read-only root           the filesystem is a tmpfs holding read-only binds of exactly the
//	                         interpreter's files (its executable and loader, its import path,
//	                         the directories of the libraries it loads), /dev/null, /dev/zero,
//	                         /dev/urandom, a private size-limited /tmp (also the cwd) and a
//	                         /proc of its own PID namespace whose /proc/1 (the zygote, which
//	                         holds the protocol pipes) is hidden. No /home, /root, checkout,
//	                         run directory or /etc beyond the loader's cache.
//	seccomp + no_new_privs   an allowlist of the calls CPython, numpy and NLTK make; everything
//	                         else fails with EPERM (an error of kind "denied"): no ptrace,
//	                         mount, bpf, keyctl, perf_event_open, userfaultfd, process_vm_*,
//	                         kexec, modules, unshare/setns, sockets, device nodes; clone only
//	                         without namespace flags; execve only the init's own exec of the
//	                         interpreter; prlimit only on itself.
//	rlimits                  address space, CPU time, file size and open files per process; a
//	                         function's process may start no process and no thread (NPROC 0).
//	                         cgroup v2 is not used (Stats.Limits says so).
//	fork per call            each call (one function on a batch of responses) runs in a fresh
//	                         fork of a zygote that imported the shared modules and never runs
//	                         or parses untrusted input: nothing a function changes (modules,
//	                         classes, builtins, the response list, the worker's own code,
//	                         files in /tmp, which the zygote empties between calls) outlives
//	                         its call. Request bytes live only in buffers the zygote zeroes
//	                         once handed over, held response sets in a memfd, so a function
//	                         finds no other request's data even in freed memory (a test reads
//	                         the zygote's and the spare's memory from outside to check). A
//	                         spare may decode a large held set ahead of its call (after a few
//	                         calls in a row on it); if its call is on another set, it is
//	                         killed unused and a fresh fork serves the call. The
//	                         zygote re-frames the child's results and ends each call once every
//	                         process of the call is dead, so forged or late writes cannot reach
//	                         another call. The next call's child is forked while a call runs;
//	                         the running one cannot reach it: every process of the worker exec'd
//	                         an interpreter it cannot read, so none is dumpable (no /proc/PID
//	                         mem or fd of another), all catchable signals are blocked from
//	                         birth, and a stopped or killed spare is woken or replaced before it
//	                         gets a request.
//	Go-side deadline         per evaluation (the child publishes which one it runs in a shared
//	                         slot) and per call; an overrun kills the function's process (the
//	                         zygote's one child) and the worker serves on; if the zygote does
//	                         not then end the call, the worker's whole namespace is killed.
//	audit hook               defence in depth inside the child: turns forbidden imports,
//	                         writes, reads outside the interpreter, sockets, processes and
//	                         ctypes into clear "denied"/"import_denied" errors. Nothing relies
//	                         on it: the adversarial suite also runs with it off.
//
// Where the kernel forbids the namespaces, NewPool fails with ErrNoNamespaces naming the
// missing capability, unless Options.UnsafeNoSandbox (--unsafe-no-sandbox) runs workers with
// only the uid, rlimits and the audit hook, which every pool start logs as a warning.
//
// # How a worker starts
//
// The sandbox is built by this binary re-executed under a marker argv[0] (sandbox_linux.go's
// init runs before main in any binary that links this package): Go's exec creates the
// namespaces, the init makes the root, pivots into it, drops privileges, loads the seccomp
// filter on its own thread and execs the interpreter, which becomes PID 1 of its namespace:
// the zygote (worker.py). What to bind is learned once per interpreter by running it on the
// host, as the workers' uid, importing what the workers import, and reading back its import
// path and mapped files (ResolvePython). Numeric libraries are pinned to one thread and
// limits applied after the imports, so workers start with NLTK, numpy and OpenBLAS installed;
// NLTK and numpy are imported by a zygote only once a function names them (they triple the
// cost of a fork).
//
// The protocol is length-prefixed frames on dedicated pipes (fds 3 and 4). Requests carry a
// binary header, the function and, unless the worker holds them, the responses; replies are
// the child's result frames (tag C) and the zygote's own (tag Z). fds 0 and 1 are /dev/null
// and a child's sys.stdout/sys.stderr are a capped counter, so printing cannot corrupt the
// protocol.
//
// # What the isolation costs
//
// A call pays for a fork, an exit and the copy-on-write and file faults of a fresh process
// first touching the interpreter's memory (~400 per call, ~2.5 µs each on the 2-core
// development VM): on the AutoIF workload (28 functions × 458 responses) about as much CPU as
// the evaluations. `autoif bench reward` measures that floor, a bare fork per function with
// no sandbox, protocol or Go, next to the sandbox and in-process exec: there, with both cores
// busy, the floor reached 0.44–0.54x of in-process exec and the sandbox 0.56–0.75 of the floor
// (README, Benchmarks).
package reward
