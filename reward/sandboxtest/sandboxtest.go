// Package sandboxtest holds the reward sandbox's attack suite (testdata/attacks.json in the
// reward package) and the host fixture its checks need, for the tests that run the suite
// through a Pool, through `autoif reward exec` and through a long-lived `autoif reward serve`.
package sandboxtest

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"syscall"
	"testing"
)

// Attack is one entry of the suite. Its evaluate returns True only when the attack worked, so
// a pass is a breach, except for HostOnly attacks, which the host checks alone judge.
type Attack struct {
	Name  string `json:"name"`
	Layer string `json:"layer"` // fs, syscall: refused by the OS layer alone; isolation
	Src   string `json:"src"`
	// HostOnly: the function cannot tell whether it reached the host (a write into its own
	// private /tmp succeeds); only the host checks count.
	HostOnly bool `json:"host_only"`
	// Acceptable error kinds with the audit hook on and off; empty means any error.
	KindsHookOn  []string `json:"kinds_hook_on"`
	KindsHookOff []string `json:"kinds_hook_off"`
	AMD64        bool     `json:"amd64"` // uses x86-64 syscall numbers
}

// OSLayer reports whether the attack must be refused with the audit hook off too.
func (a Attack) OSLayer() bool { return a.Layer == "fs" || a.Layer == "syscall" }

// Runs reports whether the attack applies on this machine.
func (a Attack) Runs() bool { return !a.AMD64 || runtime.GOARCH == "amd64" }

// Load reads the suite from the reward package's testdata.
func Load(t testing.TB) []Attack {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(RepoRoot(t), "reward", "testdata", "attacks.json"))
	if err != nil {
		t.Fatal(err)
	}
	var suite struct {
		Attacks []Attack `json:"attacks"`
	}
	if err := json.Unmarshal(b, &suite); err != nil {
		t.Fatalf("attacks.json: %v", err)
	}
	return suite.Attacks
}

// RepoRoot is the directory holding go.mod, found upwards from the working directory.
func RepoRoot(t testing.TB) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatal("no go.mod above the working directory")
		}
		dir = parent
	}
}

// Benign functions and the verdicts they must give on Responses, before and after any attack.
var (
	Benign = []string{
		"def evaluate(response):\n    return response.startswith('ok')\n",
		"import json\ndef evaluate(response):\n    return json.loads(json.dumps({'r': response}))['r'] == response and len(response) > 3\n",
		"import re\ndef evaluate(response):\n    return re.search(r'\\d', response) is not None\n",
	}
	Responses = []string{"ok 1", "no", "ok then", "x9"}
	Want      = []string{"pfpf", "pfpf", "pffp"}
)

// Host is what the attacks aim at: world-readable and world-writable places a sandboxed
// function must still not reach, and secrets it must not see.
type Host struct {
	Secret                                      string
	Checkout, RunFile, Victim, VictimDir, Pwned string
	// Canary is a function whose source and response carry markers that a later function
	// must not find anywhere in its own memory.
	CanarySrc, CanaryResponse string
	victimBody                []byte
	listing                   []string
}

// NewHost makes the fixture and a host process whose command line carries the secret.
func NewHost(t testing.TB) *Host {
	t.Helper()
	h := &Host{Secret: "autoif-secret-" + token(), Checkout: filepath.Join(RepoRoot(t), "go.mod")}
	run, err := os.MkdirTemp("", "autoif-run-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(run) })
	h.RunFile = filepath.Join(run, "config.json")
	if err := os.WriteFile(h.RunFile, []byte(`{"nats_token": "`+h.Secret+`"}`), 0o644); err != nil {
		t.Fatal(err)
	}
	if h.VictimDir, err = os.MkdirTemp("", "autoif-victim-"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(h.VictimDir) })
	for _, p := range []string{run, h.VictimDir} {
		mode := os.FileMode(0o755)
		if p == h.VictimDir {
			mode = 0o777
		}
		if err := os.Chmod(p, mode); err != nil {
			t.Fatal(err)
		}
	}
	h.Victim = filepath.Join(h.VictimDir, "victim.txt")
	h.victimBody = []byte("keep me\n")
	if err := os.WriteFile(h.Victim, h.victimBody, 0o666); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(h.Victim, 0o666); err != nil {
		t.Fatal(err)
	}
	h.listing = ListDir(t, h.VictimDir)
	h.Pwned = filepath.Join(os.TempDir(), "autoif-pwned-"+token())
	canary := "canary-" + token()
	// It also leaves its response in /tmp where it can (with the audit hook off).
	h.CanarySrc = "def evaluate(response):\n    try:\n        open('/tmp/left-behind', 'w').write(response)\n    except OSError:\n        pass\n" +
		"    return response == 'src-" + canary + "'\n"
	h.CanaryResponse = "resp-" + canary
	// A host process with the secret on its command line, as a server started with
	// --nats-token would have.
	cmd := exec.Command("sh", "-c", "sleep 600", h.Secret)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		cmd.Wait()
	})
	return h
}

func token() string {
	b := make([]byte, 8)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// ListDir names a directory's entries.
func ListDir(t testing.TB, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	return names
}

// Fill substitutes the placeholders with Python string literals.
func (h *Host) Fill(src string) string {
	lit := func(s string) string { b, _ := json.Marshal(s); return string(b) }
	rev := func(s string) string { r := []rune(s); slices.Reverse(r); return string(r) }
	canary := strings.TrimPrefix(h.CanaryResponse, "resp-")
	return strings.NewReplacer(
		"{{SECRET}}", lit(h.Secret), "{{CHECKOUT}}", lit(h.Checkout), "{{RUN_FILE}}", lit(h.RunFile),
		"{{VICTIM}}", lit(h.Victim), "{{PWNED}}", lit(h.Pwned),
		"{{OTHER_REVERSED}}", lit(rev("resp-"+canary)), "{{OTHER_SRC_REVERSED}}", lit(rev("src-"+canary)),
	).Replace(src)
}

// AssertUnchanged checks that no attack reached the host's files.
func (h *Host) AssertUnchanged(t testing.TB) {
	t.Helper()
	if got := ListDir(t, h.VictimDir); !slices.Equal(got, h.listing) {
		t.Errorf("%s now holds %v, want %v", h.VictimDir, got, h.listing)
	}
	if b, err := os.ReadFile(h.Victim); err != nil || !bytes.Equal(b, h.victimBody) {
		t.Errorf("victim file: %q, %v", b, err)
	}
	if st, err := os.Stat(h.Victim); err == nil && st.Mode().Perm() != 0o666 {
		t.Errorf("victim mode %v", st.Mode().Perm())
	}
	for _, p := range []string{h.Pwned, h.Pwned + ".file", "/tmp/null2"} {
		if _, err := os.Lstat(p); err == nil {
			os.Remove(p)
			t.Errorf("%s was created on the host", p)
		}
	}
}

// Verdicts spells one function's outcomes on the responses as p, f and e (t for timeouts),
// the way Want does.
func Verdicts(outcomes []string) string {
	var b strings.Builder
	for _, o := range outcomes {
		switch o {
		case "pass":
			b.WriteByte('p')
		case "fail":
			b.WriteByte('f')
		case "timeout":
			b.WriteByte('t')
		default:
			b.WriteByte('e')
		}
	}
	return b.String()
}

// Check judges one attack's outcome on one response: an error message for the test, or "".
func (a Attack) Check(hookOn bool, outcome, kind, message string) string {
	if outcome == "pass" && !a.HostOnly {
		return fmt.Sprintf("the attack worked (pass; %s)", message)
	}
	kinds := a.KindsHookOn
	if !hookOn {
		kinds = a.KindsHookOff
	}
	if outcome == "error" && len(kinds) > 0 && !slices.Contains(kinds, kind) {
		return fmt.Sprintf("error kind %q (%s), want one of %v", kind, message, kinds)
	}
	return ""
}
