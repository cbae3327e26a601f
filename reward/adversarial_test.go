package reward

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/autoif/autoif/reward/sandboxtest"
)

// hostFiles is a world-writable directory with a victim file in it, so that only the sandbox
// stands between a verification function and the files.
type hostFiles struct {
	dir, victim string
	mode        os.FileMode
	content     []byte
	listing     []string
}

func newHostFiles(t *testing.T, parent string) *hostFiles {
	t.Helper()
	dir, err := os.MkdirTemp(parent, "autoif-adversarial-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o777); err != nil {
		t.Fatal(err)
	}
	h := &hostFiles{dir: dir, victim: filepath.Join(dir, "victim.txt"), mode: 0o666, content: []byte("keep me\n")}
	if err := os.WriteFile(h.victim, h.content, 0o666); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(h.victim, h.mode); err != nil {
		t.Fatal(err)
	}
	h.listing = sandboxtest.ListDir(t, dir)
	return h
}

func (h *hostFiles) assertUnchanged(t *testing.T) {
	t.Helper()
	if got := sandboxtest.ListDir(t, h.dir); !slices.Equal(got, h.listing) {
		t.Errorf("%s now holds %v, want %v", h.dir, got, h.listing)
	}
	st, err := os.Stat(h.victim)
	if err != nil {
		t.Fatalf("victim file: %v", err)
	}
	if st.Mode().Perm() != h.mode {
		t.Errorf("victim mode %v, want %v", st.Mode().Perm(), h.mode)
	}
	if b, _ := os.ReadFile(h.victim); !bytes.Equal(b, h.content) {
		t.Errorf("victim content %q, want %q", b, h.content)
	}
}

// strayProcesses lists processes running as the sandbox uid that are not part of a pool
// worker: a worker is a zygote (its parent is a root process: this test binary, or another
// package's running at the same time) and the zygote's children (the call running now, the
// spare forked for the next one, and children it has not reaped yet). Anything deeper, or an
// orphan adopted by init, escaped. It also counts this process's children.
func strayProcesses(t *testing.T, uid int) (stray []string, children int) {
	t.Helper()
	ents, err := os.ReadDir("/proc")
	if err != nil {
		t.Fatal(err)
	}
	type proc struct{ ppid, uid int }
	procs := map[int]proc{}
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "status"))
		if err != nil {
			continue
		}
		pr := proc{-1, -1}
		for _, line := range strings.Split(string(b), "\n") {
			f := strings.Fields(line)
			if len(f) >= 2 && f[0] == "PPid:" {
				pr.ppid, _ = strconv.Atoi(f[1])
			}
			if len(f) >= 2 && f[0] == "Uid:" {
				pr.uid, _ = strconv.Atoi(f[1])
			}
		}
		procs[pid] = pr
	}
	me := os.Getpid()
	zygote := func(pid int) bool {
		pr, ok := procs[pid]
		parent, pok := procs[pr.ppid]
		return ok && pok && pr.uid == uid && pr.ppid > 1 && parent.uid != uid
	}
	for pid, pr := range procs {
		if pr.ppid == me {
			children++
		}
		if pr.uid != uid || zygote(pid) || zygote(pr.ppid) {
			continue
		}
		stray = append(stray, fmt.Sprintf("pid %d ppid %d", pid, pr.ppid))
	}
	return stray, children
}

const benign = "def evaluate(response):\n    return response.startswith('ok')\n"

func TestAdversarialFunctions(t *testing.T) {
	const deadline = 700 * time.Millisecond
	p := newTestPool(t, Options{Workers: 2, Deadline: deadline, MaxOutput: 1 << 20})

	tmpFiles := newHostFiles(t, os.TempDir())
	wd, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	projFiles := newHostFiles(t, wd)

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	var accepted atomic.Int64
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			accepted.Add(1)
			c.Close()
		}
	}()
	port := ln.Addr().(*net.TCPAddr).Port

	const secret = "s3cr3t-autoif-test-value"
	t.Setenv("AUTOIF_TEST_SECRET", secret)

	fileAttack := func(dir string) string {
		return fmt.Sprintf(`import os
def evaluate(response):
    d = %q
    open(os.path.join(d, 'new.txt'), 'w').write('x')
    return True
`, dir)
	}

	cases := []struct {
		name     string
		src      string
		outcomes []Outcome // acceptable outcomes
		kinds    []Kind    // acceptable kinds for Error; empty means any
		after    func(t *testing.T)
	}{
		{name: "infinite loop times out", src: "def evaluate(response):\n    while True:\n        pass\n",
			outcomes: []Outcome{Timeout}},
		{name: "50 GB allocation hits the memory limit", src: "def evaluate(response):\n    x = bytearray(50 * 1024**3)\n    return True\n",
			outcomes: []Outcome{Error}, kinds: []Kind{KindMemory}},
		{name: "50 GB string allocation hits the memory limit", src: "def evaluate(response):\n    x = 'a' * (50 * 1024**3)\n    return len(x) > 0\n",
			outcomes: []Outcome{Error}, kinds: []Kind{KindMemory}},
		{name: "fork bomb is denied", src: "import os\ndef evaluate(response):\n    while True:\n        os.fork()\n",
			outcomes: []Outcome{Error}, kinds: []Kind{KindDenied}},
		{name: "subprocess import is denied", src: "import subprocess\ndef evaluate(response):\n    subprocess.run(['touch', '/tmp/autoif-pwned'])\n    return True\n",
			outcomes: []Outcome{Error}, kinds: []Kind{KindImportDenied}},
		{name: "os.system is denied", src: "import os\ndef evaluate(response):\n    os.system('touch /tmp/autoif-pwned')\n    return True\n",
			outcomes: []Outcome{Error}, kinds: []Kind{KindDenied}},
		{name: "os.popen is denied", src: "import os\ndef evaluate(response):\n    return os.popen('id').read() != ''\n",
			outcomes: []Outcome{Error}, kinds: []Kind{KindImportDenied, KindDenied}},
		{name: "socket connect to a host port is denied", src: fmt.Sprintf("import socket\ndef evaluate(response):\n    s = socket.create_connection(('127.0.0.1', %d), timeout=0.2)\n    return True\n", port),
			outcomes: []Outcome{Error}, kinds: []Kind{KindImportDenied},
			after: func(t *testing.T) {
				if n := accepted.Load(); n != 0 {
					t.Errorf("listener accepted %d connections", n)
				}
			}},
		{name: "file write in /tmp is denied", src: fileAttack(tmpFiles.dir), outcomes: []Outcome{Error}, kinds: []Kind{KindDenied},
			after: tmpFiles.assertUnchanged},
		{name: "file write in the project directory is denied", src: fileAttack(projFiles.dir), outcomes: []Outcome{Error}, kinds: []Kind{KindDenied},
			after: projFiles.assertUnchanged},
		{name: "file delete is denied", src: fmt.Sprintf("import os\ndef evaluate(response):\n    os.remove(%q)\n    return True\n", tmpFiles.victim),
			outcomes: []Outcome{Error}, kinds: []Kind{KindDenied}, after: tmpFiles.assertUnchanged},
		{name: "project file delete is denied", src: fmt.Sprintf("import os\ndef evaluate(response):\n    os.unlink(%q)\n    return True\n", projFiles.victim),
			outcomes: []Outcome{Error}, kinds: []Kind{KindDenied}, after: projFiles.assertUnchanged},
		{name: "chmod is denied", src: fmt.Sprintf("import os\ndef evaluate(response):\n    os.chmod(%q, 0o777)\n    os.chmod(%q, 0o777)\n    return True\n", tmpFiles.victim, projFiles.victim),
			outcomes: []Outcome{Error}, kinds: []Kind{KindDenied},
			after: func(t *testing.T) { tmpFiles.assertUnchanged(t); projFiles.assertUnchanged(t) }},
		{name: "low-level open for writing is denied", src: fmt.Sprintf("import os\ndef evaluate(response):\n    fd = os.open(%q, os.O_WRONLY | os.O_TRUNC)\n    return True\n", projFiles.victim),
			outcomes: []Outcome{Error}, kinds: []Kind{KindDenied}, after: projFiles.assertUnchanged},
		{name: "reading /etc/shadow is denied", src: "def evaluate(response):\n    return 'root' in open('/etc/shadow').read()\n",
			outcomes: []Outcome{Error}, kinds: []Kind{KindDenied}},
		{name: "host environment secrets are invisible", src: fmt.Sprintf("import os\ndef evaluate(response):\n    return os.environ['AUTOIF_TEST_SECRET'] == %q\n", secret),
			outcomes: []Outcome{Error}, kinds: []Kind{KindException}},
		{name: "process environments under /proc are unreadable", src: fmt.Sprintf("import os\ndef evaluate(response):\n    for pid in os.listdir('/proc'):\n        try:\n            if %q in open('/proc/%%s/environ' %% pid).read():\n                return True\n        except FileNotFoundError:\n            pass\n    raise RuntimeError('secret not found')\n", secret),
			outcomes: []Outcome{Error}, kinds: []Kind{KindDenied}},
		{name: "printing 1 GB is cut off", src: "def evaluate(response):\n    chunk = 'x' * (1 << 20)\n    for _ in range(1024):\n        print(chunk)\n    return True\n",
			outcomes: []Outcome{Error}, kinds: []Kind{KindOutputTooLarge}},
		{name: "writing 1 GB to fd 1 is harmless", src: "import os\ndef evaluate(response):\n    chunk = b'x' * (1 << 20)\n    for _ in range(1024):\n        os.write(1, chunk)\n    raise RuntimeError('wrote it all')\n",
			outcomes: []Outcome{Error, Timeout}},
		{name: "infinite recursion is an exception", src: "def evaluate(response):\n    return evaluate(response)\n",
			outcomes: []Outcome{Error}, kinds: []Kind{KindException}},
		{name: "deep recursion past a raised limit crashes only its worker", src: "import sys\ndef f(n):\n    return f(n + 1)\ndef evaluate(response):\n    sys.setrecursionlimit(10**8)\n    return f(0)\n",
			outcomes: []Outcome{Error, Timeout}, kinds: []Kind{KindCrash, KindException, KindMemory}},
		{name: "os._exit crashes only its worker", src: "import os\ndef evaluate(response):\n    os._exit(3)\n",
			outcomes: []Outcome{Error}, kinds: []Kind{KindCrash}},
		{name: "killing the parent is denied", src: "import os\ndef evaluate(response):\n    os.kill(os.getppid(), 9)\n    return True\n",
			outcomes: []Outcome{Error}, kinds: []Kind{KindDenied}},
		{name: "sleeping past the deadline times out", src: "import time\ndef evaluate(response):\n    time.sleep(30)\n    return True\n",
			outcomes: []Outcome{Timeout}},
		{name: "ignoring SIGTERM is denied", src: "import signal\ndef evaluate(response):\n    signal.signal(signal.SIGTERM, signal.SIG_IGN)\n    while True:\n        pass\n",
			outcomes: []Outcome{Error}, kinds: []Kind{KindImportDenied}},
		{name: "import ctypes is denied", src: "import ctypes\ndef evaluate(response):\n    return ctypes.c_int(1).value == 1\n",
			outcomes: []Outcome{Error}, kinds: []Kind{KindImportDenied}},
		{name: "garbage written into every open pipe costs only its function", src: "import os\ndef evaluate(response):\n    for fd in range(3, 64):\n        try:\n            os.write(fd, b'\\x05\\x00\\x00\\x00hello')\n        except OSError:\n            pass\n    return True\n",
			outcomes: []Outcome{Error}, kinds: []Kind{KindCrash}},
		{name: "closing every descriptor costs only its function", src: "import os\ndef evaluate(response):\n    for fd in range(64):\n        try:\n            os.close(fd)\n        except OSError:\n            pass\n    return True\n",
			outcomes: []Outcome{Error}, kinds: []Kind{KindCrash}},
		{name: "top-level infinite loop times out", src: "while True:\n    pass\ndef evaluate(response):\n    return True\n",
			outcomes: []Outcome{Timeout}},
	}
	ctx := context.Background()
	for _, tc := range cases {
		t.Run(strings.ReplaceAll(tc.name, " ", "_"), func(t *testing.T) {
			start := time.Now()
			evals, err := p.Evaluate(ctx, tc.src, []string{"ok response"})
			elapsed := time.Since(start)
			if err != nil {
				t.Fatalf("Evaluate: %v", err)
			}
			e := evals[0]
			if !slices.Contains(tc.outcomes, e.Outcome) {
				t.Errorf("outcome %v (%s %s), want one of %v", e.Outcome, e.Kind, e.Message, tc.outcomes)
			}
			if e.Outcome == Error && len(tc.kinds) > 0 && !slices.Contains(tc.kinds, e.Kind) {
				t.Errorf("kind %q (%s), want one of %v", e.Kind, e.Message, tc.kinds)
			}
			if e.Outcome == Error && e.Message == "" {
				t.Errorf("error outcome without a message")
			}
			if limit := deadline + time.Second; elapsed > limit {
				t.Errorf("took %v, want within %v", elapsed, limit)
			}
			if tc.after != nil {
				tc.after(t)
			}
			next, err := p.Evaluate(ctx, benign, []string{"ok then", "not ok"})
			if err != nil {
				t.Fatalf("benign Evaluate: %v", err)
			}
			if next[0].Outcome != Pass || next[1].Outcome != Fail {
				t.Errorf("next benign evaluation gave %+v, want pass, fail", next)
			}
			t.Logf("%v %s %q in %v", e.Outcome, e.Kind, e.Message, elapsed.Round(time.Millisecond))
			// A killed worker's PID namespace is torn down by the kernel after the kill
			// returns: on a loaded machine its members can still be exiting here. A process
			// that escaped would outlive the wait. (Only as root do workers have a uid of
			// their own to tell them by.)
			if !runningAsRoot() {
				return
			}
			stray, children := strayProcesses(t, p.Options().UID)
			for wait := time.Now().Add(3 * time.Second); (len(stray) > 0 || children > p.Options().Workers) && time.Now().Before(wait); {
				time.Sleep(50 * time.Millisecond)
				stray, children = strayProcesses(t, p.Options().UID)
			}
			if len(stray) > 0 {
				t.Errorf("processes left over: %v", stray)
			}
			if children > p.Options().Workers {
				t.Errorf("%d child processes, want at most %d workers", children, p.Options().Workers)
			}
		})
	}
	for _, name := range []string{"/tmp/autoif-pwned"} {
		if _, err := os.Stat(name); err == nil {
			t.Errorf("%s exists", name)
		}
	}
	t.Logf("stats %+v", p.Stats())
}

// A function that patches builtins or a shared module must not change the next function's
// result, whichever worker runs it.
func TestTamperingDoesNotLeak(t *testing.T) {
	p := newTestPool(t, Options{Workers: 1})
	ctx := context.Background()
	cases := []struct {
		name, patch, victim, response string
		want                          Outcome
	}{
		{"patched builtins.len", "import builtins\ndef evaluate(response):\n    builtins.len = lambda x: 0\n    builtins.isinstance = lambda a, b: False\n    return True\n",
			"def evaluate(response):\n    return len(response) == 3\n", "abc", Pass},
		{"patched own builtins copy", "def evaluate(response):\n    __builtins__['len'] = lambda x: 0\n    return True\n",
			"def evaluate(response):\n    return len(response) == 3\n", "abc", Pass},
		{"patched json encoder internals", "import json\ndef evaluate(response):\n    json.JSONEncoder.encode = lambda self, o: 'garbage'\n    json.dumps = lambda *a, **k: 'garbage'\n    return True\n",
			"import json\ndef evaluate(response):\n    return json.dumps([1]) == '[1]'\n", "abc", Pass},
		{"patched re.search", "import re\ndef evaluate(response):\n    re.search = lambda *a, **k: None\n    return True\n",
			"import re\ndef evaluate(response):\n    return re.search('b', response) is not None\n", "abc", Pass},
		{"patched str method via string module", "import string\ndef evaluate(response):\n    string.ascii_lowercase = ''\n    return True\n",
			"import string\ndef evaluate(response):\n    return all(c in string.ascii_lowercase for c in response)\n", "abc", Pass},
		{"patched a module through another module's alias for it", "import random\ndef evaluate(response):\n    random._os.getcwd = lambda: ''\n    return True\n",
			"import os\ndef evaluate(response):\n    return os.getcwd() != ''\n", "abc", Pass},
		{"patched a submodule through an attribute chain", "import json\ndef evaluate(response):\n    json.decoder.JSONDecodeError = KeyError\n    return True\n",
			"import json\ndef evaluate(response):\n    try:\n        json.loads('{')\n    except ValueError:\n        return True\n    return False\n", "abc", Pass},
		{"replaced module in sys.modules", "import sys\ndef evaluate(response):\n    sys.modules['json'] = None\n    return True\n",
			"import json\ndef evaluate(response):\n    return json.loads('[1]') == [1]\n", "abc", Pass},
	}
	for _, tc := range cases {
		t.Run(strings.ReplaceAll(tc.name, " ", "_"), func(t *testing.T) {
			own, err := p.Evaluate(ctx, tc.patch, []string{"x"})
			if err != nil {
				t.Fatal(err)
			}
			if own[0].Outcome != Pass {
				t.Errorf("patching function's own result %+v, want pass", own[0])
			}
			got, err := p.Evaluate(ctx, tc.victim, []string{tc.response})
			if err != nil {
				t.Fatal(err)
			}
			if got[0].Outcome != tc.want {
				t.Errorf("victim gave %+v, want %v", got[0], tc.want)
			}
		})
	}
}
