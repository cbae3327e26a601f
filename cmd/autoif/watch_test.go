package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/autoif/autoif/orchestrator"
)

// lockedBuffer is an output a running command writes while the test reads it.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

var dashboardURL = regexp.MustCompile(`dashboard (http://\S+/)`)

// startWatchedRun starts a short tinyIF run with --http on a free port and returns the
// dashboard's URL, the run's output and a channel that gets the run's error when it ends.
func startWatchedRun(t *testing.T, ctx context.Context, steps string, extra ...string) (string, *lockedBuffer, <-chan error) {
	t.Helper()
	if _, err := exec.LookPath("python3"); err != nil {
		t.Skip("python3 is needed for the reward sandbox")
	}
	modelDir := writeTinyPolicy(t)
	dir := filepath.Join(t.TempDir(), "run")
	out := &lockedBuffer{}
	app := newApp()
	app.Writer, app.ErrWriter = out, out
	args := append([]string{"autoif", "--run-dir", dir, "--log-level", "warn", "run", "--memory", "--http", "127.0.0.1:0",
		"--model", modelDir, "--reward-workers", "1", "--k", "4", "--max-new-tokens", "8",
		"--rollout-prompts-per-step", "4", "--max-in-flight", "8", "--pairs-per-version", "4", "--batch-size", "4",
		"--mode", "async", "--max-steps", steps, "--lr", "1e-3", "--flush-every", "200ms"}, extra...)
	done := make(chan error, 1)
	finished := make(chan struct{})
	ctx, cancel := context.WithCancel(ctx)
	go func() {
		done <- app.RunContext(ctx, args)
		close(finished)
	}()
	// A test that fails midway still stops the run before its directories are removed.
	t.Cleanup(func() { cancel(); <-finished })
	for {
		if m := dashboardURL.FindStringSubmatch(out.String()); m != nil {
			return m[1], out, done
		}
		select {
		case err := <-done:
			t.Fatalf("run ended before announcing its dashboard: %v\n%s", err, out.String())
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// A Prometheus scrape of a run's /metrics parses with the official text parser, and the
// step counter rises as the trainer publishes versions; --tensorboard writes the same run as
// event files an independent reader decodes.
func TestRunServesPrometheusMetricsAndWritesTensorBoardEvents(t *testing.T) {
	if testing.Short() {
		t.Skip("trains a model and starts Python reward workers")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	tb := filepath.Join(t.TempDir(), "tb")
	url, out, done := startWatchedRun(t, ctx, "4", "--tensorboard", tb)
	var steps []float64
	var last []byte
	for running := true; running; {
		select {
		case err := <-done:
			if err != nil {
				t.Fatalf("run: %v\n%s", err, out.String())
			}
			running = false
			continue
		case <-time.After(100 * time.Millisecond):
		}
		resp, err := http.Get(url + "metrics")
		if err != nil {
			continue // the run just ended and closed its listener
		}
		var body bytes.Buffer
		_, err = body.ReadFrom(resp.Body)
		resp.Body.Close()
		if err != nil {
			continue
		}
		p := expfmt.NewTextParser(model.LegacyValidation)
		fams, err := p.TextToMetricFamilies(bytes.NewReader(body.Bytes()))
		if err != nil {
			t.Fatalf("/metrics does not parse: %v\n%s", err, body.String())
		}
		last = body.Bytes()
		if f := fams["autoif_run_steps_total"]; f != nil {
			v := f.GetMetric()[0].GetCounter().GetValue()
			if len(steps) == 0 || v != steps[len(steps)-1] {
				steps = append(steps, v)
			}
		}
	}
	t.Logf("autoif_run_steps_total during the run: %v", steps)
	if len(steps) < 2 {
		t.Fatalf("autoif_run_steps_total took the values %v during the run: want it seen rising\n%s", steps, out.String())
	}
	for i := 1; i < len(steps); i++ {
		if steps[i] < steps[i-1] {
			t.Fatalf("autoif_run_steps_total went down: %v", steps)
		}
	}
	for _, name := range []string{"autoif_run_pairs_total", "autoif_run_reward_mean", "autoif_run_policy_version",
		"autoif_run_trainer_step_seconds_bucket", "autoif_run_sandbox_evaluations_total", "autoif_run_dpo{"} {
		if !bytes.Contains(last, []byte(name)) {
			t.Errorf("the last scrape has no %s:\n%s", name, last)
		}
	}
	if promtool, err := exec.LookPath("promtool"); err != nil {
		t.Log("promtool is not installed (Debian package prometheus): the lint check is skipped")
	} else {
		cmd := exec.Command(promtool, "check", "metrics")
		cmd.Stdin = bytes.NewReader(last)
		if b, err := cmd.CombinedOutput(); err != nil {
			t.Errorf("promtool check metrics: %v\n%s", err, b)
		}
	}
	if !strings.Contains(out.String(), "Prometheus metrics: "+url+"metrics") {
		t.Errorf("the run did not print where its metrics are:\n%s", out.String())
	}
	// The same run's TensorBoard events, read by the standard-library reader: the trainer's
	// loss at each of its steps and the orchestrator's reward curve.
	files, _ := filepath.Glob(filepath.Join(tb, "events.out.tfevents.*"))
	if len(files) != 1 {
		t.Fatalf("event files in %s: %v, want one", tb, files)
	}
	b, err := exec.Command("python3", filepath.Join("..", "..", "scripts", "read_tfevents.py"), files[0]).CombinedOutput()
	if err != nil {
		t.Fatalf("read_tfevents: %v\n%s", err, b)
	}
	seen := map[string]bool{}
	for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		var e struct {
			Step int64
			Tag  string
		}
		if err := json.Unmarshal([]byte(line), &e); err != nil {
			t.Fatalf("read_tfevents line %q: %v", line, err)
		}
		seen[fmt.Sprintf("%s@%d", e.Tag, e.Step)] = true
	}
	for _, k := range []string{"train/loss@1", "train/loss@2", "train/loss@3", "train/loss@4", "train/rewards/margins@4", "policy/version@4", "pairs/s@4"} {
		if !seen[k] {
			t.Errorf("the run's event file has no %s", k)
		}
	}
}

// `autoif dashboard` serves recorded runs until interrupted; `autoif export tensorboard`
// writes one as an event file. Both read the run directory's files only.
func TestDashboardAndExportServeRecordedRuns(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "finished")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	rows := []orchestrator.MetricRow{{Time: time.Now(), Component: orchestrator.Component, Step: 1, Name: "reward/mean", Value: 0.375},
		{Time: time.Now(), Component: "trainer", Step: 1, Name: "loss", Value: 0.69}}
	if err := orchestrator.WriteMetrics(filepath.Join(dir, orchestrator.MetricsFile), rows); err != nil {
		t.Fatal(err)
	}
	if err := orchestrator.WriteSamples(filepath.Join(dir, orchestrator.SamplesFile), nil); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	out := &lockedBuffer{}
	app := newApp()
	app.Writer, app.ErrWriter = out, out
	done := make(chan error, 1)
	go func() { done <- app.RunContext(ctx, []string{"autoif", "dashboard", "--http", "127.0.0.1:0", dir}) }()
	var url string
	for url == "" {
		if m := dashboardURL.FindStringSubmatch(out.String()); m != nil {
			url = m[1]
			break
		}
		select {
		case err := <-done:
			t.Fatalf("dashboard ended: %v\n%s", err, out.String())
		case <-time.After(20 * time.Millisecond):
		}
	}
	resp, err := http.Get(url + "metrics")
	if err != nil {
		t.Fatal(err)
	}
	var body bytes.Buffer
	body.ReadFrom(resp.Body)
	resp.Body.Close()
	if !strings.Contains(body.String(), `autoif_run_reward_mean{run="finished"} 0.375`) {
		t.Errorf("/metrics of the recorded run:\n%s", body.String())
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("dashboard after an interrupt: %v", err)
	}

	app = newApp()
	var eout bytes.Buffer
	app.Writer, app.ErrWriter = &eout, &eout
	if err := app.Run([]string{"autoif", "export", "tensorboard", dir}); err != nil {
		t.Fatal(err)
	}
	files, _ := filepath.Glob(filepath.Join(dir, "tensorboard", "events.out.tfevents.*"))
	if len(files) != 1 || !strings.Contains(eout.String(), "wrote 2 scalars to "+files[0]) {
		t.Errorf("export wrote %v and said %q, want one event file of 2 scalars", files, eout.String())
	}
}
