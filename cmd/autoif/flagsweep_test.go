package main

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/urfave/cli/v2"
)

// numericFlag is one numeric flag of one command, as the app defines it.
type numericFlag struct {
	path     string // "bench transport"
	name     string
	kind     string // int, uint, float or duration
	defValue float64
	required bool
}

// numericFlags walks the app's command tree, so a flag added anywhere is swept too.
func numericFlags(app *cli.App) (flags []numericFlag, required map[string][]string) {
	required = map[string][]string{}
	var walk func(path string, cmds []*cli.Command)
	walk = func(path string, cmds []*cli.Command) {
		for _, c := range cmds {
			p := strings.TrimSpace(path + " " + c.Name)
			for _, f := range c.Flags {
				nf := numericFlag{path: p, name: f.Names()[0]}
				if r, ok := f.(cli.RequiredFlag); ok && r.IsRequired() {
					nf.required = true
					required[p] = append(required[p], nf.name)
				}
				switch x := f.(type) {
				case *cli.IntFlag:
					nf.kind, nf.defValue = "int", float64(x.Value)
				case *cli.Int64Flag:
					nf.kind, nf.defValue = "int", float64(x.Value)
				case *cli.UintFlag:
					nf.kind, nf.defValue = "uint", float64(x.Value)
				case *cli.Uint64Flag:
					nf.kind, nf.defValue = "uint", float64(x.Value)
				case *cli.Float64Flag:
					nf.kind, nf.defValue = "float", x.Value
				case *cli.DurationFlag:
					nf.kind, nf.defValue = "duration", x.Value.Seconds()
				default:
					continue
				}
				flags = append(flags, nf)
			}
			walk(p, c.Subcommands)
		}
	}
	walk("", app.Commands)
	return flags, required
}

// Every numeric flag has a bound, and its default lies inside it (else the command could
// never run without the flag).
func TestEveryNumericFlagHasABound(t *testing.T) {
	flags, _ := numericFlags(newApp())
	if len(flags) < 150 {
		t.Fatalf("found %d numeric flags: the walk misses commands", len(flags))
	}
	for _, f := range flags {
		b, ok := boundOf(f.path, f.name)
		if !ok {
			t.Errorf("%s --%s has no bound: add it to flagBounds or commandFlagBounds", f.path, f.name)
			continue
		}
		if !f.required && !b.admits(f.defValue) {
			t.Errorf("%s --%s: default %g is outside its bound %s", f.path, f.name, f.defValue, b.describe(func(x float64) string { return fmt.Sprint(x) }))
		}
	}
}

// sweepValues are the values each numeric flag is tried with: zero, minus one and absurd.
var sweepValues = map[string][3]string{
	"int":      {"0", "-1", "1152921504606846976"}, // 1<<60
	"uint":     {"0", "-1", "1152921504606846976"},
	"float":    {"0", "-1", "1e30"},
	"duration": {"0s", "-1s", "1000000h"},
}

// sweepAccepted are the sweep's values that a command legitimately accepts, with why; every
// other value must be refused. Keys are "--flag value" for the flag of every command or
// "command path --flag value" for one command; "absurd" stands for the absurd value.
var sweepAccepted = map[string]string{
	"--seed 0":      "any seed is a seed (rollout: 0 picks a random one)",
	"--seed absurd": "any seed is a seed",

	"--max-steps 0":         "0: no limit",
	"--max-pairs 0":         "run: no limit; rollout: no cap per prompt",
	"--max-wall 0s":         "0: no limit",
	"--warn-idle-prompts 0": "0: never warn",
	"--max-idle-prompts 0":  "0: never stop",
	"--max-lag 0":           "0: only the current policy's pairs (sync)",
	"--max-policy-lag 0":    "0: only the current policy's pairs",
	"--pairs-ahead 0":       "0: no bound",
	"--pairs-ahead -1":      "-1: derived from pairs per step and max lag",
	"--max-policy-lag -1":   "-1 keeps all pairs",
	"--keep-last -1":        "-1 keeps all checkpoints",
	"--epochs 0":            "run: 0 cycles until a budget stops the run",
	"--samples-per-step 0":  "0: keep no sample rows",
	"--eval-prompts 0":      "0: all held-out prompts",
	"--eval-temperature 0":  "0: greedy evaluation",
	"--top-k 0":             "0 keeps all tokens",
	"--text-bytes 0":        "pairs without text",
	"--margin 0":            "0: any score difference",
	"--chosen-min 0":        "a score threshold of 0 is a threshold",
	"--min-func-accuracy 0": "0 trusts the file",
	"--min-accuracy 0":      "0 keeps every function",
	"--comply 0":            "0: no warm-start example follows its instruction",

	"--rollout-workers 0": "run: 0 with --nats, the workers run elsewhere",
	"--reward-workers 0":  "0: number of CPUs",
	"--workers 0":         "0: number of CPUs",
	"--threads 0":         "0: number of CPUs",
	"--rollout-threads 0": "0: number of CPUs",
	"--trainer-threads 0": "0: number of CPUs",
	"--train-chunk 0":     "0: the trainer runs in this process",
	"--concurrent 0":      "0: --workers",
	"--max-queued 0":      "0: refuse requests while all are busy",

	"--weight-decay 0":      "no weight decay",
	"--momentum 0":          "plain SGD",
	"--max-grad-norm 0":     "0: no clipping",
	"--warmup-steps 0":      "no warmup",
	"--label-smoothing 0":   "plain DPO",
	"--nll-alpha 0":         "no NLL term",
	"--max-len 0":           "0: the model's context",
	"--save-every 0":        "0: only at the end",
	"--ref-refresh-every 0": "0: frozen reference, as in AutoIF",
	"--torch-micro-batch 0": "0: a step's pairs at once",
	"--lora-rank 0":         "0: full fine-tuning",
	"--lora-dropout 0":      "no dropout on the adapter path",
	"--steps 0":             "train: 0 means --epochs over the data",

	"--kv-heads 0":     "0: --heads",
	"--intermediate 0": "0: derived from --hidden",
	"--head-dim 0":     "0: hidden / heads",
	"--vocab 0":        "0: the tokenizer's size",

	"--http-port 0":       "0 disables monitoring",
	"--shutdown-grace 0s": "0: stop at once",
	"--stats-interval 0s": "0: never",
	"--watch 0s":          "0: once",
	"--baseline-pairs 0":  "0: --pairs",
	"--responses 0":       "0: all responses",

	"generate --temperature 0":        "0 is greedy decoding",
	"eval ifeval --temperature 0":     "0 is greedy decoding",
	"serve --max-model-len 0":         "0: the model's context, at most 4096",
	"bench serve --requests 0":        "0: twice the clients",
	"bench loop --max-in-flight 0":    "0: one rollout step's prompts",
	"experiment trainer --max-lag -1": "-1 keeps all pairs (the offline baseline's trainer)",

	"--retries 0":                         "0: fail at the first error",
	"--functions -1":                      "-1: every function in the prompt",
	"--checks -1":                         "-1: check every back-translation",
	"--min-chars 0":                       "0: any non-empty query",
	"--min-pass-rate 0":                   "0: any response one function accepts, as the reference",
	"--min-score 0":                       "0: keep every scored response",
	"synth instructions --temperature 0":  "0 is greedy decoding",
	"synth functions --temperature 0":     "0 is greedy decoding",
	"synth backtranslate --temperature 0": "0 is greedy decoding",
	"synth responses --temperature 0":     "0 is greedy decoding",
	"synth judge --temperature 0":         "0 is greedy decoding",
	"curves --smooth 0":                   "0: raw curves",
	"nats serve --cluster-port 0":         "0: not a cluster member",
	"bench transport --replicas 0":        "0: an R3 row where --nats is a cluster of 3 or more",
	"run --replicas 0":                    "0: 1 for a new run, an existing run's count otherwise",
}

// accepted says whether the sweep's value v (index i of sweepValues) of f is accepted.
func accepted(f numericFlag, i int, v string) bool {
	if i == 2 {
		v = "absurd"
	}
	for _, key := range []string{f.path + " --" + f.name + " " + v, "--" + f.name + " " + v} {
		if _, ok := sweepAccepted[key]; ok {
			return true
		}
	}
	return false
}

// Every numeric flag of every command, given 0, -1 or an absurd value that it cannot take,
// fails before any work: one line on stderr naming the flag, exit code 1 or 2, no stack
// trace, and nothing created in the working directory.
func TestEveryNumericFlagRefusesBadValuesCleanly(t *testing.T) {
	app := newApp()
	flags, required := numericFlags(app)
	type probe struct {
		f    numericFlag
		args []string
	}
	var probes []probe
	for _, f := range flags {
		for i, v := range sweepValues[f.kind] {
			if accepted(f, i, v) {
				continue
			}
			args := strings.Fields(f.path)
			for _, r := range required[f.path] {
				if r != f.name {
					// Any value: the bounds are checked before a required value is used.
					args = append(args, "--"+r+"=1")
				}
			}
			probes = append(probes, probe{f, append(args, "--"+f.name+"="+v)})
		}
	}
	if len(probes) < 300 {
		t.Fatalf("%d probes: the sweep misses flags", len(probes))
	}
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	// Two at a time: each probe is a process of this test binary running as autoif.
	sem := make(chan struct{}, 2)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var failures []string
	for _, p := range probes {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			if msg := runProbe(exe, t.TempDir(), p.f.name, p.args); msg != "" {
				mu.Lock()
				failures = append(failures, "autoif "+strings.Join(p.args, " ")+": "+msg)
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	slices.Sort(failures)
	for _, f := range failures {
		t.Error(f)
	}
}

// runProbe runs autoif with args in the empty directory dir and says what is wrong with how
// it refused, or "" when it refused cleanly.
func runProbe(exe, dir, flag string, args []string) string {
	cmd := exec.Command(exe, args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), envBeAutoif+"=1")
	var out strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		return err.Error()
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	var err error
	select {
	case err = <-done:
	case <-time.After(20 * time.Second):
		cmd.Process.Kill()
		<-done
		return "accepted: still running after 20s"
	}
	text := strings.TrimSpace(out.String())
	var exit *exec.ExitError
	switch {
	case err == nil:
		return "accepted (exit 0): " + text
	case !errors.As(err, &exit):
		return err.Error()
	case exit.ExitCode() != 1 && exit.ExitCode() != 2:
		return fmt.Sprintf("exit code %d: %s", exit.ExitCode(), text)
	case strings.Contains(text, "panic") || strings.Contains(text, "goroutine "):
		return "stack trace: " + text
	case strings.Contains(text, "\n"):
		return "more than one line: " + text
	case !strings.Contains(text, "--"+flag):
		return "the error does not name --" + flag + ": " + text
	}
	if ents, _ := os.ReadDir(dir); len(ents) > 0 {
		return fmt.Sprintf("created %s in the working directory", ents[0].Name())
	}
	return ""
}

// The three bad inputs of issue 16, each refused before any work with one line that names
// the flag: a decode longer than the model's context (which used to end in the runtime's
// "out of memory"), a negative benchmark size (which used to run a million pairs) and a
// missing model (which used to create runs/default and start the run's components, as the
// rollout worker and the stream trainer did too).
func TestBadInputsOfIssue16AreRefusedUpFront(t *testing.T) {
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	modelDir := filepath.Join(t.TempDir(), "policy")
	if msg := runInit(exe, modelDir); msg != "" {
		t.Fatal(msg)
	}
	for _, tc := range []struct {
		flag, want string
		args       []string
	}{
		{"max-new-tokens", "context of 512", []string{"generate", "--model", modelDir, "--prompt", "Hi", "--max-new-tokens", "100000000"}},
		{"max-new-tokens", "context of 512", []string{"generate", "--model", modelDir, "--prompt", "Hi", "--max-new-tokens", "511"}},
		{"pairs", "want 1 to", []string{"bench", "transport", "--pairs", "-5"}},
		{"model", "/nonexistent", []string{"run", "--model", "/nonexistent"}},
		// The components that join a run check their checkpoint before they connect.
		{"model", "/nonexistent", []string{"rollout", "--model", "/nonexistent"}},
		{"model", "/nonexistent", []string{"train", "stream", "--model", "/nonexistent", "--out", "out"}},
	} {
		dir := t.TempDir()
		if msg := runProbe(exe, dir, tc.flag, tc.args); msg != "" {
			t.Errorf("autoif %s: %s", strings.Join(tc.args, " "), msg)
		}
		cmd := exec.Command(exe, tc.args...)
		cmd.Dir = dir
		out, _ := cmd.CombinedOutput()
		if !strings.Contains(string(out), tc.want) {
			t.Errorf("autoif %s: %q does not say %q", strings.Join(tc.args, " "), out, tc.want)
		}
	}
}

// runInit makes a small model with a 512-position context in dir.
func runInit(exe, dir string) string {
	cmd := exec.Command(exe, "model", "init", "--layers", "1", "--hidden", "64", "--heads", "2",
		"--intermediate", "128", "--max-positions", "512", "--out", dir)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Sprintf("model init: %v: %s", err, out)
	}
	return ""
}
