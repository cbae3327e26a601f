package tensorboard

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/autoif/autoif/orchestrator"
)

// readEvents decodes event files with scripts/read_tfevents.py, a reader that shares no code
// with the writer (standard-library Python: its own CRC32C, its own protobuf decoding).
func readEvents(t *testing.T, path string) ([]map[string]any, error) {
	t.Helper()
	if _, err := exec.LookPath("python3"); err != nil {
		t.Skip("python3 is needed for the independent event-file reader")
	}
	cmd := exec.Command("python3", filepath.Join("..", "scripts", "read_tfevents.py"), path)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, &exec.ExitError{ProcessState: cmd.ProcessState, Stderr: stderr.Bytes()}
	}
	var recs []map[string]any
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		var m map[string]any
		if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
			t.Fatalf("reader line %q: %v", sc.Text(), err)
		}
		recs = append(recs, m)
	}
	return recs, nil
}

// runRows are the metrics of a small run, as the three components record them.
func runRows() []orchestrator.MetricRow {
	t0 := time.Date(2026, 12, 6, 12, 0, 0, 0, time.UTC)
	var rows []orchestrator.MetricRow
	add := func(c string, step int64, name string, v float64, label string, version int64) {
		rows = append(rows, orchestrator.MetricRow{Time: t0.Add(time.Duration(len(rows)) * 1500 * time.Microsecond),
			Component: c, Step: step, Name: name, Value: v, Label: label, PolicyVersion: version, Seq: uint64(len(rows) + 1)})
	}
	for s := int64(1); s <= 6; s++ {
		add("rollout", 10+s, "reward/mean", 0.1*float64(s), "", s-1)
		add("rollout", 10+s, "reward/mean", 0.2, "instr_a", s-1)
		add("rollout", 10+s, "reward/mean", 0.3, "constraint:instr_a", s-1)
		add("rollout", 10+s, "policy/swap_latency_s", 0.05*float64(s), "", s-1)
		add("trainer", s, "loss", 0.6931-0.01*float64(s), "", s-1)
		add("trainer", s, "rewards/margins", 0.003*float64(s), "", s-1)
		add("trainer", s, "rewards/accuracies", 0.5+0.05*float64(s), "", s-1)
		add(orchestrator.Component, s, "reward/mean", 0.25+0.01*float64(s), "", s)
		add(orchestrator.Component, s, "pairs/s", 1.5, "", s)
		add(orchestrator.Component, s, "evals/pass", 12, "instr_a", s)
		add(orchestrator.Component, s, "policy/lag", math.Pi, "", s)
	}
	return rows
}

// Exporting a run writes an event file whose every scalar an independent reader finds at its
// step, under its tag, with its value (as the float32 TensorBoard keeps) and wall time.
func TestExportedEventsDecodeWithAnIndependentReader(t *testing.T) {
	run := t.TempDir()
	rows := runRows()
	if err := orchestrator.WriteMetrics(filepath.Join(run, orchestrator.MetricsFile), rows); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(t.TempDir(), "tb")
	path, n, err := Export(context.Background(), run, out)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(filepath.Base(path), "events.out.tfevents.") {
		t.Errorf("event file %s: want the events.out.tfevents.* name TensorBoard looks for", path)
	}
	recs, err := readEvents(t, path)
	if err != nil {
		t.Fatalf("reader: %v (%s)", err, err.(*exec.ExitError).Stderr)
	}
	if len(recs) == 0 || recs[0]["file_version"] != FileVersion {
		t.Fatalf("first record %v: want file_version %q", recs[:min(1, len(recs))], FileVersion)
	}
	got := recs[1:]
	type want struct {
		tag  string
		step int64
		v    float32
		wall float64
	}
	var wants []want
	for i := range rows {
		if tag, step, ok := Tag(&rows[i]); ok {
			wants = append(wants, want{tag, step, float32(rows[i].Value), float64(rows[i].Time.UnixMicro()) / 1e6})
		}
	}
	if len(got) != len(wants) || n != len(wants) {
		t.Fatalf("reader found %d scalars, export reported %d, want %d", len(got), n, len(wants))
	}
	for i, w := range wants {
		g := got[i]
		if g["tag"] != w.tag || int64(g["step"].(float64)) != w.step || float32(g["value"].(float64)) != w.v ||
			math.Abs(g["wall_time"].(float64)-w.wall) > 1e-6 {
			t.Errorf("scalar %d: got %v, want %+v", i, g, w)
		}
	}
	// What a person looks for in TensorBoard is there under the names TRL uses.
	tags := map[string]bool{}
	for _, g := range got {
		tags[g["tag"].(string)] = true
	}
	for _, tag := range []string{"train/loss", "train/rewards/margins", "train/rewards/accuracies", "reward/mean",
		"pairs/s", "policy/lag", "rollout/reward/mean", "reward/mean/instr_a", "rollout/policy/swap_latency_s"} {
		if !tags[tag] {
			t.Errorf("no %s among the tags %v", tag, tags)
		}
	}
	for _, tag := range []string{"reward/mean/constraint:instr_a", "evals/pass"} {
		if tags[tag] {
			t.Errorf("%s is exported: per-constraint and per-instruction counts stay in metrics.parquet", tag)
		}
	}
}

// The reader checks the framing: a flipped byte in a record is a CRC error, not a silently
// wrong value (so the test above would notice a writer whose CRCs are off).
func TestReaderRejectsACorruptRecord(t *testing.T) {
	w, err := Create(t.TempDir(), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Scalar("train/loss", 3, time.Now(), 0.5); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(w.Path())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := readEvents(t, w.Path()); err != nil {
		t.Fatalf("intact file: %v", err)
	}
	b[len(b)-6] ^= 0x40 // inside the last record's value
	if err := os.WriteFile(w.Path(), b, 0o644); err != nil {
		t.Fatal(err)
	}
	_, err = readEvents(t, w.Path())
	if err == nil || !strings.Contains(string(err.(*exec.ExitError).Stderr), "bad data CRC") {
		t.Fatalf("corrupt file: %v, want a bad data CRC", err)
	}
}

// Exporting a directory that holds no run fails with one error and leaves no event file.
func TestExportOfAMissingRunLeavesNothing(t *testing.T) {
	out := filepath.Join(t.TempDir(), "tb")
	_, _, err := Export(context.Background(), filepath.Join(t.TempDir(), "no-run"), out)
	if err == nil || !strings.Contains(err.Error(), "metrics.parquet") {
		t.Fatalf("err %v, want one naming metrics.parquet", err)
	}
	if entries, _ := os.ReadDir(out); len(entries) > 0 {
		t.Fatalf("%s holds %d files after a failed export", out, len(entries))
	}
}
