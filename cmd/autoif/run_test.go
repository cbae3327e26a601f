package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/autoif/autoif/model"
	"github.com/autoif/autoif/orchestrator"
	"github.com/autoif/autoif/rollout"
	"github.com/autoif/autoif/trainer"
)

// A bad run configuration fails with one line naming the problem, before the run directory
// (and the embedded server's store in it) exists.
func TestRunRejectsBadConfigsBeforeStartingAnything(t *testing.T) {
	noFuncs := writeConfig(t, `{"instruction": "Rhyme", "query": "Why?"}`+"\n")
	cases := []struct {
		name, body, want string
	}{
		{"unknown key", "run:\n  kk: 3\n", `unknown key "run.kk"`},
		{"k below 2", "run:\n  k: 1\n", "--k 1: want 2 to 1024"},
		{"negative max lag", "run:\n  max-lag: -1\n", "max-lag -1"},
		{"unknown mode", "run:\n  mode: lockstep\n", `mode "lockstep"`},
		{"missing prompt file", "run:\n  prompts: [/nonexistent/q.jsonl]\n", "/nonexistent/q.jsonl"},
		{"instruction without a verified function", "run:\n  prompts: [" + noFuncs + "]\n", "has no verified function"},
		{"unknown reward mode", "run:\n  reward: oracle\n", `--reward "oracle"`},
		{"negative rollout workers", "run:\n  rollout-workers: -1\n", "--rollout-workers -1"},
		{"negative reference refresh", "run:\n  ref-refresh-every: -1\n", "--ref-refresh-every -1"},
		{"unknown return policy", "run:\n  returns: loose\n", `--returns: unknown return policy "loose"`},
		{"negative idle limit", "run:\n  max-idle-prompts: -1\n", "max-idle-prompts -1"},
		{"unknown pair rule", "run:\n  selection: best\n", `--selection: pair selection "best"`},
		{"LoRA alpha without a rank", "run:\n  lora-alpha: 16\n", "--lora-alpha needs --lora-rank"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "run")
			app := newApp()
			var out bytes.Buffer
			app.Writer, app.ErrWriter = &out, &out
			err := app.RunContext(context.Background(), []string{"autoif", "--run-dir", dir, "--config", writeConfig(t, tc.body), "run"})
			if err == nil || !strings.Contains(err.Error(), tc.want) || strings.Contains(err.Error(), "\n") {
				t.Fatalf("got %v, want one line containing %q", err, tc.want)
			}
			if _, err := os.Stat(dir); !os.IsNotExist(err) {
				t.Fatalf("run directory exists after a bad config (%v): something started", err)
			}
		})
	}
}

// The stream trainer cannot start over in a directory whose checkpoints keep its pairs
// exactly-once: --no-resume is refused, before anything connects.
func TestTrainStreamRefusesNoResume(t *testing.T) {
	app := newApp()
	var out bytes.Buffer
	app.Writer, app.ErrWriter = &out, &out
	err := app.RunContext(context.Background(), []string{"autoif", "--nats", "nats://127.0.0.1:1", "train", "stream",
		"--model", writeTinyPolicy(t), "--out", t.TempDir(), "--no-resume"})
	if err == nil || !strings.Contains(err.Error(), "always resumes") {
		t.Fatalf("got %v, want a refusal of --no-resume", err)
	}
}

// A negative reference refresh is refused before the experiment trains or writes anything.
func TestExperimentRefusesANegativeReferenceRefresh(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "run")
	ws := filepath.Join(t.TempDir(), "warmstart")
	app := newApp()
	var out bytes.Buffer
	app.Writer, app.ErrWriter = &out, &out
	err := app.RunContext(context.Background(), []string{"autoif", "--run-dir", dir, "experiment", "tinyif",
		"--warm-start-dir", ws, "--ref-refresh-every", "-1"})
	if err == nil || !strings.Contains(err.Error(), "--ref-refresh-every -1") {
		t.Fatalf("got %v, want a refusal naming --ref-refresh-every", err)
	}
	for _, d := range []string{dir, ws} {
		if _, err := os.Stat(d); !os.IsNotExist(err) {
			t.Fatalf("%s exists after a refused flag (%v): something started", d, err)
		}
	}
}

// writeTinyPolicy writes a random byte-level model small enough to sample and train in a
// test: it follows no instruction, but its samples differ, so some prompts make pairs.
func writeTinyPolicy(t *testing.T) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "policy")
	app := newApp()
	app.Writer = io.Discard
	if err := app.Run([]string{"autoif", "model", "init", "--layers", "1", "--hidden", "32", "--heads", "2",
		"--intermediate", "64", "--max-positions", "512", "--seed", "3", "--out", dir}); err != nil {
		t.Fatal(err)
	}
	return dir
}

// With the embedded server `autoif run` is the whole loop: the reward service, a rollout
// worker and the trainer start in the process, talk over NATS, and the run stops at its step
// budget with the trainer's figures in metrics.parquet and its checkpoints on disk.
func TestRunEmbeddedRunsTheWholeLoopInProcess(t *testing.T) {
	if testing.Short() {
		t.Skip("trains a model and starts Python reward workers")
	}
	if _, err := exec.LookPath("python3"); err != nil {
		t.Skip("python3 is needed for the reward sandbox")
	}
	cases := []struct {
		name   string
		reward string
		chunk  string
		lora   bool
	}{
		{"reward service over NATS, trainer goroutine", "service", "0", false},
		{"local reward pool, trainer goroutine", "local", "0", false},
		// The test binary re-executes itself as autoif (TestMain), one child per step.
		{"reward service, trainer child processes", "service", "1", false},
		// The trainer publishes PEFT adapters; the rollout worker runs them over its base.
		{"LoRA, trainer goroutine", "service", "0", true},
		{"LoRA, trainer child processes", "service", "1", true},
	}
	modelDir := writeTinyPolicy(t)
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "run")
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
			defer cancel()
			app := newApp()
			var out bytes.Buffer
			app.Writer, app.ErrWriter = &out, &out
			args := []string{"autoif", "--run-dir", dir, "--log-level", "warn", "run", "--memory",
				"--model", modelDir, "--reward", tc.reward, "--reward-workers", "1", "--k", "4", "--max-new-tokens", "8",
				"--rollout-prompts-per-step", "4", "--max-in-flight", "8", "--pairs-per-version", "4", "--batch-size", "4",
				"--mode", "async", "--max-steps", "2", "--lr", "1e-3", "--flush-every", "200ms", "--train-chunk", tc.chunk}
			if tc.lora {
				args = append(args, "--lora-rank", "4", "--lora-alpha", "16")
			}
			err := app.RunContext(ctx, args)
			if err != nil {
				t.Fatalf("run: %v\n%s", err, out.String())
			}
			lines := strings.Split(strings.TrimSpace(out.String()), "\n")
			var sum orchestrator.Summary
			if err := json.Unmarshal([]byte(lines[len(lines)-1]), &sum); err != nil {
				t.Fatalf("last line %q: %v", lines[len(lines)-1], err)
			}
			if sum.Reason != "steps" || sum.Version != 2 || sum.Pairs < 8 {
				t.Fatalf("summary %+v, want stopped by steps at version 2 after at least 8 pairs", sum)
			}
			rows, err := orchestrator.ReadMetrics(ctx, filepath.Join(dir, orchestrator.MetricsFile))
			if err != nil {
				t.Fatal(err)
			}
			seen := map[string]bool{}
			for _, r := range rows {
				seen[fmt.Sprintf("%s/%d/%s", r.Component, r.Step, r.Name)] = true
			}
			for _, key := range []string{"trainer/1/loss", "trainer/2/loss", "trainer/2/rewards/margins", "orchestrator/2/policy/version"} {
				if !seen[key] {
					t.Errorf("metrics.parquet has no %s", key)
				}
			}
			// reward/mean covers the rollouts that arrived during a step: in async mode the
			// trainer can publish version 2 from pairs that came before version 1, leaving
			// step 2 none.
			if !seen["orchestrator/1/reward/mean"] && !seen["orchestrator/2/reward/mean"] {
				t.Errorf("metrics.parquet has no orchestrator reward/mean for either step")
			}
			ckpts, err := trainer.Checkpoints(filepath.Join(dir, "trainer"))
			if err != nil || len(ckpts) == 0 {
				t.Fatalf("trainer checkpoints: %v %v", ckpts, err)
			}
			if _, err := os.Stat(filepath.Join(dir, orchestrator.CurvesFile)); err != nil {
				t.Errorf("curves: %v", err)
			}
			last := ckpts[len(ckpts)-1]
			if tc.lora != model.IsAdapter(last) {
				t.Errorf("checkpoint %s: adapter %v, want %v", last, model.IsAdapter(last), tc.lora)
			}
			if tc.lora {
				if _, err := os.Stat(filepath.Join(last, "model.safetensors")); err == nil {
					t.Errorf("LoRA checkpoint %s holds a whole model", last)
				}
				if _, err := model.LoadAdapter(last); err != nil {
					t.Errorf("LoRA checkpoint: %v", err)
				}
			}
			if sum.Timing == nil || sum.Timing.Versions != 2 || sum.Timing.SampleS <= 0 || sum.Timing.TrainS <= 0 || sum.PeakRSSMB <= 0 {
				t.Errorf("summary timing %+v, peak RSS %g MB: want sampling and training seconds of 2 versions", sum.Timing, sum.PeakRSSMB)
			}
		})
	}
}

// The run, end to end: every verification function raises. `autoif run` stops by
// itself after --max-idle-prompts prompts without a pair, with an error, and its last lines
// name the exception type and the instruction.
func TestRunWhoseFunctionsRaiseStopsItselfAndSaysWhy(t *testing.T) {
	if testing.Short() {
		t.Skip("starts Python reward workers and samples a tiny model")
	}
	if _, err := exec.LookPath("python3"); err != nil {
		t.Skip("python3 is needed for the reward sandbox")
	}
	prompts := filepath.Join(t.TempDir(), "prompts.jsonl")
	fn := "def evaluate(response):\n    primes = [int(n) for n in response.split(',')]\n    return len(primes) > 1\n"
	var body strings.Builder
	for i := range 3 {
		row, _ := json.Marshal(map[string]any{"prompt": fmt.Sprintf("Write the response as a list of prime numbers. Question %d?", i),
			"eval_func": [][]any{{fn, 1.0}}})
		body.Write(append(row, '\n'))
	}
	if err := os.WriteFile(prompts, []byte(body.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(t.TempDir(), "run")
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	app := newApp()
	var out bytes.Buffer
	app.Writer, app.ErrWriter = &out, &out
	err := app.RunContext(ctx, []string{"autoif", "--run-dir", dir, "--log-level", "warn", "run", "--memory",
		"--prompts", prompts, "--model", writeTinyPolicy(t), "--reward", "local", "--reward-workers", "1", "--k", "2",
		"--max-new-tokens", "4", "--rollout-prompts-per-step", "3", "--max-in-flight", "3", "--max-steps", "3",
		"--warn-idle-prompts", "3", "--max-idle-prompts", "6"})
	t.Logf("output:\n%s", out.String())
	if err == nil || !strings.Contains(err.Error(), "ValueError") || !strings.Contains(err.Error(), "prime numbers") {
		t.Fatalf("error %v: want one naming the exception type and the instruction", err)
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	tail := strings.Join(lines[max(0, len(lines)-4):], "\n")
	for _, want := range []string{"raised ValueError", "instruction: Write the response as a list of prime numbers", "invalid literal for int()"} {
		if !strings.Contains(tail, want) {
			t.Errorf("last lines do not say %q:\n%s", want, tail)
		}
	}
}

// `autoif run --prompts ifeval:FILE` trains on IFEval rows: the rollout worker scores their
// constraints natively (the fraction followed) and the loop runs as on AutoIF prompts.
func TestRunTrainsOnIFEvalConstraints(t *testing.T) {
	if testing.Short() {
		t.Skip("trains a model")
	}
	if _, err := exec.LookPath("python3"); err != nil {
		t.Skip("python3 is needed for the reward sandbox")
	}
	dir := t.TempDir()
	prompts := filepath.Join(dir, "ifeval.jsonl")
	var rows strings.Builder
	for i, letter := range []string{"e", "t", "a", "o", "n", "s", "r", "i"} {
		fmt.Fprintf(&rows, `{"key": %d, "prompt": "Write about the sea, using the letter %s.", "instruction_id_list": ["keywords:letter_frequency", "length_constraints:number_words", "punctuation:no_comma"], "kwargs": [{"letter": %q, "let_frequency": 2, "let_relation": "at least"}, {"num_words": 3, "relation": "at least"}, {}]}`+"\n", i, letter, letter)
	}
	if err := os.WriteFile(prompts, []byte(rows.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	runDir := filepath.Join(dir, "run")
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	app := newApp()
	var out bytes.Buffer
	app.Writer, app.ErrWriter = &out, &out
	err := app.RunContext(ctx, []string{"autoif", "--run-dir", runDir, "--log-level", "warn", "run", "--memory",
		"--model", writeTinyPolicy(t), "--prompts", "ifeval:" + prompts, "--reward", "local", "--reward-workers", "1",
		"--k", "4", "--max-new-tokens", "12", "--rollout-prompts-per-step", "4", "--max-in-flight", "8",
		"--pairs-per-version", "4", "--batch-size", "4", "--mode", "async", "--max-steps", "2", "--lr", "1e-3",
		"--flush-every", "200ms"})
	if err != nil {
		t.Fatalf("run: %v\n%s", err, out.String())
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	var sum orchestrator.Summary
	if err := json.Unmarshal([]byte(lines[len(lines)-1]), &sum); err != nil {
		t.Fatalf("last line %q: %v", lines[len(lines)-1], err)
	}
	if sum.Reason != "steps" || sum.Version != 2 {
		t.Fatalf("summary %+v, want stopped by steps at version 2", sum)
	}
	rows2, err := orchestrator.ReadMetrics(ctx, filepath.Join(runDir, orchestrator.MetricsFile))
	if err != nil {
		t.Fatal(err)
	}
	var means []float64
	perConstraint := map[string]bool{}
	for _, r := range rows2 {
		if r.Name == "reward/mean" && r.Label == "" && r.Component == orchestrator.Component {
			means = append(means, r.Value)
		}
		if r.Name == "reward/mean" && strings.HasPrefix(r.Label, rollout.ConstraintLabelPrefix) {
			perConstraint[strings.TrimPrefix(r.Label, rollout.ConstraintLabelPrefix)] = true
		}
	}
	for _, id := range []string{"keywords:letter_frequency", "length_constraints:number_words", "punctuation:no_comma"} {
		if !perConstraint[id] {
			t.Errorf("metrics.parquet has no reward/mean for constraint %s (has %v)", id, perConstraint)
		}
	}
	if len(means) == 0 {
		t.Fatalf("no reward/mean in metrics.parquet:\n%s", out.String())
	}
	t.Logf("reward/mean by step: %v; %s", means, lines[len(lines)-1])
}
