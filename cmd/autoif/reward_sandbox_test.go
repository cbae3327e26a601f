package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/autoif/autoif/natsbus"
	"github.com/autoif/autoif/reward"
	"github.com/autoif/autoif/reward/sandboxtest"
)

// The reward sandbox's attack suite (reward/testdata/attacks.json) as users meet it: each
// attack through a fresh `autoif reward exec`, and all of them through one long-lived `autoif
// reward serve` whose worker has already scored the benign functions, which must still give
// their own answers after every attack. The host stays unchanged throughout.
func TestRewardSandboxAttacksThroughTheCLI(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a reward process per attack")
	}
	attacks := sandboxtest.Load(t)
	host := sandboxtest.NewHost(t)
	dir := t.TempDir()
	var lines bytes.Buffer
	for _, r := range sandboxtest.Responses {
		b, _ := json.Marshal(r)
		lines.Write(append(b, '\n'))
	}
	respFile := filepath.Join(dir, "responses.jsonl")
	if err := os.WriteFile(respFile, lines.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}

	t.Run("reward exec", func(t *testing.T) {
		for i, a := range attacks {
			if !a.Runs() {
				continue
			}
			t.Run(strings.ReplaceAll(a.Name, " ", "_"), func(t *testing.T) {
				fn := filepath.Join(dir, "attack"+string(rune('a'+i%26))+".py")
				if err := os.WriteFile(fn, []byte(host.Fill(a.Src)), 0o644); err != nil {
					t.Fatal(err)
				}
				cmd := exec.Command(os.Args[0], "--log-level", "error", "reward", "exec", "--func", fn,
					"--responses", respFile, "--json", "--workers", "1", "--deadline", "2s")
				cmd.Env = append(os.Environ(), envBeAutoif+"=1")
				var stderr bytes.Buffer
				cmd.Stderr = &stderr
				out, err := cmd.Output()
				if err != nil {
					t.Fatalf("reward exec: %v\n%s", err, stderr.String())
				}
				var res struct {
					Results []struct {
						Outcome, Kind, Message string
					} `json:"results"`
				}
				if err := json.Unmarshal(out, &res); err != nil || len(res.Results) != len(sandboxtest.Responses) {
					t.Fatalf("reward exec printed %q (%v)", out, err)
				}
				for j, r := range res.Results {
					if msg := a.Check(true, r.Outcome, r.Kind, r.Message); msg != "" {
						t.Errorf("response %d: %s", j, msg)
					}
				}
				host.AssertUnchanged(t)
			})
		}
	})

	t.Run("long-lived reward serve", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		bus, err := natsbus.Connect(ctx, natsbus.Options{StoreDir: filepath.Join(dir, "jetstream")})
		if err != nil {
			t.Fatal(err)
		}
		defer bus.Close()
		startChild(t, "reward-serve", "--nats", bus.URL(), "--log-level", "warn",
			"reward", "serve", "--workers", "1", "--deadline", "2s", "--stats-interval", "0")
		client, err := reward.NewClient(bus.NC, reward.ClientOptions{Deadline: 2 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		defer client.Close()
		score := func(t *testing.T, funcs []string) *reward.Result {
			t.Helper()
			for {
				res, err := client.Score(ctx, funcs, sandboxtest.Responses)
				if err == nil {
					return res
				}
				if ctx.Err() != nil {
					t.Fatalf("score: %v", err)
				}
				time.Sleep(200 * time.Millisecond) // the server is still starting
			}
		}
		checkBenign := func(t *testing.T, res *reward.Result, from int, when string) {
			t.Helper()
			for i, want := range sandboxtest.Want {
				outcomes := make([]string, len(res.Evals[from+i]))
				for j, e := range res.Evals[from+i] {
					outcomes[j] = e.Outcome.String()
				}
				if got := sandboxtest.Verdicts(outcomes); got != want {
					t.Errorf("%s: benign function %d gave %s, want %s", when, i, got, want)
				}
			}
		}
		checkBenign(t, score(t, sandboxtest.Benign), 0, "before the attacks")
		for _, a := range attacks {
			if !a.Runs() {
				continue
			}
			t.Run(strings.ReplaceAll(a.Name, " ", "_"), func(t *testing.T) {
				if _, err := client.Score(ctx, []string{host.CanarySrc}, []string{host.CanaryResponse}); err != nil {
					t.Fatal(err)
				}
				res := score(t, append([]string{host.Fill(a.Src)}, sandboxtest.Benign...))
				for j, e := range res.Evals[0] {
					if msg := a.Check(true, e.Outcome.String(), string(e.Kind), e.Message); msg != "" {
						t.Errorf("response %d: %s", j, msg)
					}
				}
				checkBenign(t, res, 1, "right after the attack")
				host.AssertUnchanged(t)
				checkBenign(t, score(t, sandboxtest.Benign), 0, "on the next request")
			})
		}
	})
}

// Where the kernel refuses the sandbox's namespaces, `reward exec` fails with one line that
// names what is missing and the way out; --unsafe-no-sandbox runs anyway, with a warning. The
// refusal is made real: a user namespace whose limit on further user namespaces is 0, and
// inside it an unprivileged uid (as root the sandbox needs no user namespace).
func TestRewardExecSaysWhenTheKernelRefusesNamespaces(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to build a user namespace that forbids user namespaces")
	}
	if _, err := exec.LookPath("setpriv"); err != nil {
		t.Skip("needs setpriv (util-linux)")
	}
	dir, err := os.MkdirTemp("", "autoif-nons-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	// The test binary acts as autoif; the unprivileged uid must be able to run it and read
	// the function.
	bin := filepath.Join(dir, "autoif")
	data, err := os.ReadFile(os.Args[0])
	if err != nil {
		t.Fatal(err)
	}
	fn := filepath.Join(dir, "f.py")
	if os.WriteFile(bin, data, 0o755) != nil || os.WriteFile(fn, []byte("def evaluate(response):\n    return True\n"), 0o644) != nil ||
		os.Chmod(dir, 0o755) != nil {
		t.Fatal("write test files")
	}
	run := func(extra ...string) (string, error) {
		script := `echo 0 > /proc/sys/user/max_user_namespaces && exec setpriv --reuid=65534 --regid=65534 --clear-groups "$@"`
		args := append([]string{"-c", script, "sh", bin, "reward", "exec", "--func", fn, "--response", "x"}, extra...)
		cmd := exec.Command("sh", args...)
		cmd.Env = append(os.Environ(), envBeAutoif+"=1")
		cmd.Dir = dir
		cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWUSER,
			UidMappings: []syscall.SysProcIDMap{{ContainerID: 0, HostID: 0, Size: 65536}},
			GidMappings: []syscall.SysProcIDMap{{ContainerID: 0, HostID: 0, Size: 65536}}, GidMappingsEnableSetgroups: true}
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	out, err := run()
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() != 1 {
		t.Fatalf("want exit status 1, got %v:\n%s", err, out)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 1 || !strings.Contains(out, "refused the reward sandbox's namespaces") ||
		!strings.Contains(out, "unprivileged user namespaces are disabled") || !strings.Contains(out, "--unsafe-no-sandbox") {
		t.Errorf("want one line naming the refusal, the missing capability and --unsafe-no-sandbox, got:\n%s", out)
	}
	if strings.Contains(out, "goroutine") || strings.Contains(out, "panic") {
		t.Errorf("stack trace in the output:\n%s", out)
	}

	out, err = run("--unsafe-no-sandbox")
	if err != nil {
		t.Fatalf("--unsafe-no-sandbox: %v\n%s", err, out)
	}
	if !strings.Contains(out, "reward sandbox disabled (--unsafe-no-sandbox)") || !strings.Contains(out, "1 passed") {
		t.Errorf("want a warning and the function's result, got:\n%s", out)
	}
}
