// Package reward scores responses by executing LLM-written Python verification functions
// (`def evaluate(response) -> bool`, AutoIF stage 2/3) in a sandbox.
//
// A Pool keeps long-lived CPython workers. Each worker runs in new PID, network, IPC and UTS
// namespaces (no network at all), as an unprivileged uid when started as root, under rlimits
// (address space, CPU time, processes, file size, open files), with an empty environment and an
// empty working directory, and with CPython audit hooks that refuse file writes, reads outside
// the interpreter's library, sockets, subprocesses, ctypes and signal changes. The OS layer is
// the security boundary; the audit hooks are defence in depth that turn a forbidden operation
// into a clear error outcome.
//
// Deadlines are enforced from Go, per evaluation: the worker publishes which evaluation it is
// running and since when in a shared memory slot, and a worker that overruns is killed with its
// whole process group (its PID namespace dies with it) and replaced. Work the dead worker had
// not reported is re-run on a fresh worker, so one bad response costs only itself.
//
// Interpreter and uid. Started as root, workers run as nobody (65534). The interpreter behind
// the `python3` pyenv shim lives under /root, which nobody cannot traverse, so ResolvePython
// probes each candidate by actually running it with the workers' credentials and namespaces,
// and falls back to /usr/bin/python3. We chose a real unprivileged uid over "root inside a
// user namespace mapped to an unprivileged host uid" because both see the same files (the
// host uid decides), and the plain uid keeps RLIMIT_NPROC meaningful. Started as a non-root
// user, workers get a user namespace mapping that user to root inside it instead. Rlimits are
// applied by the worker itself before it reports ready (a parent without CAP_SYS_RESOURCE
// cannot prlimit a process of another uid), and it reads no untrusted code before that.
//
// The protocol is length-prefixed JSON on dedicated pipes (fds 3 and 4); fds 0 and 1 are
// /dev/null and sys.stdout/sys.stderr are replaced by a capped counter, so printing cannot
// corrupt the protocol. Code inside the worker can still write to fd 4 directly: frames are
// validated and a malformed stream kills the worker, but a function can forge its own results
// (never another function's: the next call finds the stream out of step and re-runs on a
// fresh worker).
//
// One round trip carries one function and many responses. Workers cache compiled functions by
// content hash but execute the source's top level in a fresh globals dict (with a fresh copy of
// the builtins) on every request, so top-level helpers and imports are visible to evaluate and
// no state leaks from one request to the next. A function that rebinds an attribute of a
// shared module or of the builtins module, or replaces a module in sys.modules, is detected
// after its request and its worker is replaced. The check compares the builtins and the
// modules the function's code names (by import, by attribute, or by any module's alias for
// them: attribute stores are spelled out in the code), and every module when the code uses a
// name that reaches unnamed state (getattr, vars, sys, exec, frames, any dunder, ...): about
// 2 µs instead of ~80 µs a call. Attributes of classes inside modules and the internal state
// of objects (random's generator, decimal's context) are not compared.
package reward
