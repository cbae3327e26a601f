// Package torchref runs the PyTorch reference scripts (scripts/*.py) the benchmarks measure
// against: it finds a Python that imports torch, locates the script, runs it with a given
// number of threads and reads the JSON object the script prints last.
package torchref

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// FindPython returns an interpreter that imports torch and numpy: explicit if given, else
// /usr/bin/python3 or python3 on PATH (which may be a shim without torch). Without one it
// returns "" and why, naming each candidate and its failure.
func FindPython(ctx context.Context, explicit string) (path, why string) {
	cands := []string{"/usr/bin/python3", "python3"}
	if explicit != "" {
		cands = []string{explicit}
	}
	var tried []string
	for _, p := range cands {
		path, err := exec.LookPath(p)
		if err != nil {
			tried = append(tried, p+": not found")
			continue
		}
		cmd := exec.CommandContext(ctx, path, "-c", "import torch, numpy")
		if out, err := cmd.CombinedOutput(); err != nil {
			last := strings.TrimSpace(string(out))
			if i := strings.LastIndexByte(last, '\n'); i >= 0 {
				last = last[i+1:]
			}
			tried = append(tried, fmt.Sprintf("%s: %s", path, last))
			continue
		}
		return path, ""
	}
	return "", "no Python with torch and numpy (" + strings.Join(tried, "; ") + ")"
}

// Script locates scripts/name from the working directory (or a directory above it) or next
// to the executable.
func Script(name string) (string, error) {
	var dirs []string
	if wd, err := os.Getwd(); err == nil {
		for d := wd; ; d = filepath.Dir(d) {
			dirs = append(dirs, filepath.Join(d, "scripts"))
			if filepath.Dir(d) == d {
				break
			}
		}
	}
	if exe, err := os.Executable(); err == nil {
		dirs = append(dirs, filepath.Join(filepath.Dir(exe), "scripts"), filepath.Join(filepath.Dir(exe), "..", "scripts"))
	}
	for _, d := range dirs {
		p := filepath.Join(d, name)
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
	}
	return "", fmt.Errorf("scripts/%s not found from the working directory or the executable", name)
}

// Run runs scripts/name with py and args on threads OpenMP threads (passive waiting, so idle
// torch threads do not spin against the Go side), decodes the last non-empty line it prints
// into v, and returns the script's peak resident set in MB as the kernel counted it.
func Run(ctx context.Context, py, name string, threads int, v any, args ...string) (peakRSSMB float64, err error) {
	script, err := Script(name)
	if err != nil {
		return 0, err
	}
	cmd := exec.CommandContext(ctx, py, append([]string{script}, args...)...)
	cmd.Env = append(os.Environ(), "OMP_WAIT_POLICY=PASSIVE", "OMP_NUM_THREADS="+strconv.Itoa(threads))
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	stdout, err := cmd.Output()
	if err != nil {
		return 0, fmt.Errorf("%s %s: %w: %s", py, script, err, strings.TrimSpace(stderr.String()))
	}
	if ru, ok := cmd.ProcessState.SysUsage().(*syscall.Rusage); ok {
		peakRSSMB = float64(ru.Maxrss) / 1024 // KiB on Linux
	}
	var last string
	sc := bufio.NewScanner(bytes.NewReader(stdout))
	sc.Buffer(make([]byte, 64<<10), 16<<20)
	for sc.Scan() {
		if l := strings.TrimSpace(sc.Text()); l != "" {
			last = l
		}
	}
	if err := json.Unmarshal([]byte(last), v); err != nil {
		return 0, fmt.Errorf("%s: last line %q: %w", script, last, err)
	}
	return peakRSSMB, nil
}
