package reward

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// ErrNoPython means no interpreter could be run inside the sandbox.
var ErrNoPython = errors.New("no python interpreter usable in the sandbox")

// ErrNoNamespaces means the kernel refused the namespaces the sandbox is built from.
var ErrNoNamespaces = errors.New("the kernel refused the reward sandbox's namespaces")

// workerEnv is a worker's whole environment. The thread pins keep numeric libraries
// single-threaded: a worker has no threads to spare (its children may not create any), and
// OpenBLAS starting a pool at import is what used to hang workers under a process limit. HOME
// is the private /tmp: NLTK's import fails without a home directory, and the sandbox has no
// passwd file to find one in.
var workerEnv = []string{"OPENBLAS_NUM_THREADS=1", "OMP_NUM_THREADS=1", "MKL_NUM_THREADS=1",
	"NUMEXPR_NUM_THREADS=1", "VECLIB_MAXIMUM_THREADS=1", "HOME=/tmp"}

// namespaceFlags are the namespaces of every sandboxed process. The user namespace comes
// with them when the caller is not root: it is what lets an unprivileged caller create the
// others, and maps the caller's uid to root inside.
func (o Options) namespaceFlags(mount bool) (flags uintptr, userns bool) {
	if o.UnsafeNoSandbox {
		return 0, false
	}
	flags = syscall.CLONE_NEWPID | syscall.CLONE_NEWNET | syscall.CLONE_NEWIPC | syscall.CLONE_NEWUTS
	if mount {
		flags |= syscall.CLONE_NEWNS
	}
	if !runningAsRoot() {
		flags |= syscall.CLONE_NEWUSER
		userns = true
	}
	return flags, userns
}

// sysProcAttr starts a sandbox process. With mount (a worker) the process starts as root of
// its namespaces and the sandbox init drops to Options.UID itself; without (the layout probe,
// which must see the host's files) it starts as Options.UID directly.
func (o Options) sysProcAttr(mount bool) *syscall.SysProcAttr {
	a := &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	flags, userns := o.namespaceFlags(mount)
	a.Cloneflags = flags
	switch {
	case userns:
		a.UidMappings = []syscall.SysProcIDMap{{ContainerID: 0, HostID: os.Getuid(), Size: 1}}
		a.GidMappings = []syscall.SysProcIDMap{{ContainerID: 0, HostID: os.Getgid(), Size: 1}}
		a.GidMappingsEnableSetgroups = false
	case runningAsRoot() && (!mount || o.UnsafeNoSandbox):
		a.Credential = &syscall.Credential{Uid: uint32(o.UID), Gid: uint32(o.GID), Groups: []uint32{}}
	}
	return a
}

// interpreter is a resolved Python and, when sandboxed, the root its workers get.
type interpreter struct {
	path   string // what the workers exec: the real executable
	layout *pythonLayout
	mounts []mountOp
}

var resolved struct {
	sync.Mutex
	m map[string]*interpreter
}

// ResolvePython returns an interpreter the sandbox can run. With explicit set, it checks that
// one. Otherwise it tries the real executable behind `python3` on PATH (which may be a pyenv
// shim costing ~100 ms a spawn), then /usr/bin/python3 and /usr/local/bin/python3: an
// interpreter installed under /root (pyenv) is not readable by the unprivileged sandbox uid, so
// the system interpreter is the usual answer when running as root. Results are cached per
// process.
func ResolvePython(ctx context.Context, explicit string, opts Options) (string, error) {
	in, err := resolveInterpreter(ctx, explicit, opts)
	if err != nil {
		return "", err
	}
	return in.path, nil
}

func resolveInterpreter(ctx context.Context, explicit string, opts Options) (*interpreter, error) {
	opts = opts.withDefaults()
	key := fmt.Sprintf("%s|%d|%d|%v", explicit, opts.UID, opts.GID, opts.UnsafeNoSandbox)
	resolved.Lock()
	defer resolved.Unlock()
	if in, ok := resolved.m[key]; ok {
		return in, nil
	}
	var candidates []string
	if explicit != "" {
		candidates = []string{explicit}
	} else {
		if exe, err := pathPython(ctx); err == nil {
			candidates = append(candidates, exe)
		}
		candidates = append(candidates, "/usr/bin/python3", "/usr/local/bin/python3")
	}
	var errs []string
	seen := map[string]bool{}
	for _, c := range candidates {
		if seen[c] {
			continue
		}
		seen[c] = true
		layout, err := probeLayout(ctx, c, opts)
		if errors.Is(err, ErrNoNamespaces) {
			return nil, err
		}
		if err != nil {
			errs = append(errs, err.Error())
			continue
		}
		in := &interpreter{path: layout.Executable, layout: layout}
		if !opts.UnsafeNoSandbox {
			if in.mounts, err = layout.plan(); err != nil {
				errs = append(errs, fmt.Sprintf("%s: %v", c, err))
				continue
			}
		}
		if resolved.m == nil {
			resolved.m = map[string]*interpreter{}
		}
		resolved.m[key] = in
		return in, nil
	}
	return nil, fmt.Errorf("%w: %s", ErrNoPython, strings.Join(errs, "; "))
}

// pathPython asks `python3` on PATH for its real executable, seeing through shims.
func pathPython(ctx context.Context) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, "python3", "-c", "import sys;print(sys.executable)").Output()
	if err != nil {
		return "", fmt.Errorf("python3 on PATH: %w", err)
	}
	exe := strings.TrimSpace(string(out))
	if exe == "" {
		return "", errors.New("python3 on PATH: empty sys.executable")
	}
	return exe, nil
}

// probeLayout runs the interpreter as the workers' uid, in their PID, network, IPC and UTS
// namespaces but on the host's files, importing what the workers import, and reads back what
// it needed: the files the sandbox root must hold.
func probeLayout(ctx context.Context, python string, opts Options) (*pythonLayout, error) {
	ctx, cancel := context.WithTimeout(ctx, opts.StartTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, python, "-I", "-B", "-c", workerSource, "--layout")
	cmd.Env = workerEnv
	cmd.Dir = "/"
	cmd.SysProcAttr = opts.sysProcAttr(false)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Start(); err != nil {
		if flags, _ := opts.namespaceFlags(false); flags != 0 && refusedNamespaces(err) {
			return nil, namespaceError(err)
		}
		return nil, fmt.Errorf("%s: %w", python, err)
	}
	if err := cmd.Wait(); err != nil {
		msg := strings.TrimSpace(stderr.String())
		if len(msg) > 200 {
			msg = msg[len(msg)-200:]
		}
		return nil, fmt.Errorf("%s as uid %d: %v %s", python, opts.UID, err, msg)
	}
	var l pythonLayout
	if err := json.Unmarshal(stdout.Bytes(), &l); err != nil || l.Executable == "" {
		return nil, fmt.Errorf("%s: unexpected layout output %q", python, truncate(stdout.String(), 200))
	}
	return &l, nil
}

// refusedNamespaces reports whether a start failed the way clone(2) fails when the kernel
// will not create the namespaces asked for (an exec failure is EACCES or ENOENT instead).
func refusedNamespaces(err error) bool {
	return errors.Is(err, syscall.EPERM) || errors.Is(err, syscall.EINVAL) ||
		errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EUSERS)
}

// namespaceError explains a refused clone in one line: which capability is missing and the
// way out.
func namespaceError(err error) error {
	who := "this process lacks CAP_SYS_ADMIN"
	if !runningAsRoot() {
		who = "unprivileged user namespaces are disabled (sysctl kernel.unprivileged_userns_clone or user.max_user_namespaces) and this process is not root"
	}
	// The errno, not its text: "no space left on device" is how ENOSPC reads, and here it
	// means a namespace limit.
	cause := err.Error()
	var errno syscall.Errno
	if errors.As(err, &errno) {
		cause = "clone: " + unix.ErrnoName(errno)
	}
	return fmt.Errorf("%w (%s): %s; run as root or enable user namespaces, or pass --unsafe-no-sandbox to run verification functions without OS isolation", ErrNoNamespaces, cause, who)
}

// runningAsRoot reports whether workers can be given another uid: only a root parent can.
func runningAsRoot() bool { return os.Geteuid() == 0 }
