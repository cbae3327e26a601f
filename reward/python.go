package reward

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"time"
)

// ErrNoPython means no interpreter could be run inside the sandbox.
var ErrNoPython = errors.New("no python interpreter usable in the sandbox")

// sysProcAttr isolates a worker. As root the worker gets a new PID, network, IPC and UTS
// namespace and the unprivileged Options.UID; otherwise a user namespace maps the caller's
// uid to root inside it, which is what lets an unprivileged caller create the others.
func (o Options) sysProcAttr() *syscall.SysProcAttr {
	a := &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if !o.NoNamespaces {
		a.Cloneflags = syscall.CLONE_NEWPID | syscall.CLONE_NEWNET | syscall.CLONE_NEWIPC | syscall.CLONE_NEWUTS
	}
	switch {
	case dropPrivileges():
		a.Credential = &syscall.Credential{Uid: uint32(o.UID), Gid: uint32(o.GID), Groups: []uint32{}}
	case !o.NoNamespaces:
		a.Cloneflags |= syscall.CLONE_NEWUSER
		a.UidMappings = []syscall.SysProcIDMap{{ContainerID: 0, HostID: os.Getuid(), Size: 1}}
		a.GidMappings = []syscall.SysProcIDMap{{ContainerID: 0, HostID: os.Getgid(), Size: 1}}
		a.GidMappingsEnableSetgroups = false
	}
	return a
}

var resolved struct {
	sync.Mutex
	m map[string]string
}

// ResolvePython returns an interpreter the sandbox can run. With explicit set, it checks that
// one. Otherwise it tries the real executable behind `python3` on PATH (which may be a pyenv
// shim costing ~100 ms a spawn), then /usr/bin/python3 and /usr/local/bin/python3: an
// interpreter installed under /root (pyenv) is not readable by the unprivileged sandbox uid, so
// the system interpreter is the usual answer when running as root. Results are cached per
// process.
func ResolvePython(ctx context.Context, explicit string, opts Options) (string, error) {
	opts = opts.withDefaults()
	key := fmt.Sprintf("%s|%d|%d|%v", explicit, opts.UID, opts.GID, opts.NoNamespaces)
	resolved.Lock()
	defer resolved.Unlock()
	if p, ok := resolved.m[key]; ok {
		return p, nil
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
		if err := probePython(ctx, c, opts); err != nil {
			errs = append(errs, err.Error())
			continue
		}
		if resolved.m == nil {
			resolved.m = map[string]string{}
		}
		resolved.m[key] = c
		return c, nil
	}
	return "", fmt.Errorf("%w: %s", ErrNoPython, strings.Join(errs, "; "))
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

// probePython runs the interpreter exactly as a worker will be run.
func probePython(ctx context.Context, python string, opts Options) error {
	ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, python, "-I", "-B", "-c", "import json, re, sys; sys.stdout.write('ok')")
	cmd.Env = []string{}
	cmd.Dir = "/"
	cmd.SysProcAttr = opts.sysProcAttr()
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		msg := strings.TrimSpace(stderr.String())
		if len(msg) > 200 {
			msg = msg[:200]
		}
		return fmt.Errorf("%s as uid %d: %v %s", python, opts.UID, err, msg)
	}
	if stdout.String() != "ok" {
		return fmt.Errorf("%s: unexpected probe output %q", python, stdout.String())
	}
	return nil
}
