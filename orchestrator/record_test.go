package orchestrator

import (
	"context"
	"fmt"
	"io"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/autoif/autoif/natsbus"
	"github.com/autoif/autoif/proto"
)

func trainerEvents(step int64, loss, acc float64) []proto.MetricEvent {
	now := time.Now().UTC()
	return []proto.MetricEvent{
		{Time: now, Component: "trainer", Step: step, Name: "loss", Value: loss},
		{Time: now, Component: "trainer", Step: step, Name: "rewards/accuracies", Value: acc},
		{Time: now, Component: "trainer", Step: step, Name: "rewards/margins", Value: 1 - loss},
	}
}

func TestMetricsParquetRoundTrips(t *testing.T) {
	path := filepath.Join(t.TempDir(), MetricsFile)
	t0 := time.Date(2026, 11, 21, 12, 0, 0, 123456000, time.UTC)
	rows := []MetricRow{
		{Time: t0, Component: "rollout", Step: 1, Name: "reward/mean", Value: 0.25, Label: "", PolicyVersion: 0, Seq: 1},
		{Time: t0.Add(time.Second), Component: "rollout", Step: 1, Name: "reward/mean", Value: 0.5, Label: "tinyif:upper", PolicyVersion: 0, Seq: 1},
		{Time: t0.Add(2 * time.Second), Component: "trainer", Step: 7, Name: "loss", Value: 0.693147, Label: "", PolicyVersion: -1, Seq: 9},
	}
	if err := WriteMetrics(path, rows); err != nil {
		t.Fatal(err)
	}
	got, err := ReadMetrics(context.Background(), path)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, rows) {
		t.Fatalf("read back\n%+v\nwant\n%+v", got, rows)
	}
	// An empty run still writes a readable file.
	if err := WriteMetrics(path, nil); err != nil {
		t.Fatal(err)
	}
	if got, err := ReadMetrics(context.Background(), path); err != nil || len(got) != 0 {
		t.Fatalf("empty file: %d rows, %v", len(got), err)
	}
}

func TestSamplesParquetRoundTrips(t *testing.T) {
	path := filepath.Join(t.TempDir(), SamplesFile)
	rows := []SampleRow{
		{Step: 3, PolicyVersion: 2, PromptID: "p1", InstructionID: "i1", Prompt: "say hi in caps",
			Responses: []string{"HI", "hi"}, Scores: []float64{1, 0}, Chosen: []string{"HI"}, Rejected: []string{"hi"}, RolloutsSeq: 4, PairsSeq: 5},
		{Step: 3, PolicyVersion: 2, PromptID: "p2", Responses: []string{"a", "b"}, Scores: []float64{0, 0}, Chosen: []string{}, Rejected: []string{}, RolloutsSeq: 4},
	}
	if err := WriteSamples(path, rows); err != nil {
		t.Fatal(err)
	}
	got, err := ReadSamples(context.Background(), path)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, rows) {
		t.Fatalf("read back\n%+v\nwant\n%+v", got, rows)
	}
}

func TestMetricsFromTheStreamLandInMetricsParquetOnce(t *testing.T) {
	r := newTestRun(t)
	cfg := r.config(ModeAsync, 1)
	r.publishMetrics("m1", 0, proto.MetricEvent{Time: time.Now().UTC(), Component: "rollout", Step: 1, Name: "reward/mean", Value: 0.125})
	stop, _ := r.start(cfg, testSet(5))
	r.publishMetrics("m2", 0, trainerEvents(1, 0.5, 1)...)
	r.eventually("metrics flushed", func() bool {
		rows, _ := ReadMetrics(context.Background(), filepath.Join(r.dir, MetricsFile))
		return len(rows) == 4
	})
	if _, err := stop(); err != nil {
		t.Fatal(err)
	}
	// A crash between the renames of metrics.parquet and state.json leaves the file ahead
	// of the committed position; the next process drops those rows and reads them again.
	st, err := LoadState(r.dir)
	if err != nil || st == nil {
		t.Fatalf("state: %v", err)
	}
	st.Record.MetricsNext = 2
	if err := st.save(r.dir); err != nil {
		t.Fatal(err)
	}
	// A second process over the same run directory reads on from where the first stopped.
	stop, _ = r.start(cfg, testSet(5))
	r.publishMetrics("m3", 0, trainerEvents(2, 0.4, 1)...)
	r.eventually("new metrics flushed", func() bool {
		rows, _ := ReadMetrics(context.Background(), filepath.Join(r.dir, MetricsFile))
		return len(rows) >= 7
	})
	if _, err := stop(); err != nil {
		t.Fatal(err)
	}
	rows, err := ReadMetrics(context.Background(), filepath.Join(r.dir, MetricsFile))
	if err != nil {
		t.Fatal(err)
	}
	if len(rows) != 7 {
		t.Fatalf("%d rows, want 7 (1 + 3 + 3, none twice): %+v", len(rows), rows)
	}
	if rows[0].Name != "reward/mean" || rows[0].Value != 0.125 || rows[0].PolicyVersion != 0 || rows[0].Seq != 1 {
		t.Fatalf("first row %+v", rows[0])
	}
}

func TestResumedRunContinuesWithoutReenqueueingPrompts(t *testing.T) {
	r := newTestRun(t)
	set := testSet(12)
	cfg := r.config(ModeAsync, 3)
	cfg.Epochs = 1

	stop, _ := r.start(cfg, set)
	r.eventually("first prompts", func() bool { return r.depth() == 3 })
	r.work(5, 0, func(int) float64 { return 1 }, 0)
	r.eventually("queue refilled", func() bool { return r.depth() == 3 })
	sum, err := stop()
	if err != nil {
		t.Fatal(err)
	}
	if sum.Reason != "interrupted" || sum.Enqueued != 8 {
		t.Fatalf("first process: %+v, want interrupted with 8 enqueued", sum)
	}

	// A crash right after the broker stored a batch of prompts, before state.json recorded
	// them, leaves the cursor behind: the next process publishes those prompts again under
	// the same message ids, and JetStream keeps one copy.
	st, err := LoadState(r.dir)
	if err != nil || st == nil {
		t.Fatalf("state: %v", err)
	}
	st.Cursor -= 5
	st.Enqueued -= 5
	if err := st.save(r.dir); err != nil {
		t.Fatal(err)
	}

	// The second process finds 3 prompts still queued and enqueues only the 4 never sent.
	stop, _ = r.start(cfg, set)
	r.work(7, 0, func(int) float64 { return 1 }, 0)
	r.eventually("the epoch to end the run", func() bool { _, s := r.loadState(); return s.StopReason == "epochs" })
	sum, err = stop()
	if err != nil {
		t.Fatal(err)
	}
	if sum.Reason != "epochs" || sum.Rollouts != 48 {
		t.Fatalf("second process: %+v, want epochs with 48 rollouts", sum)
	}
	if r.depth() != 0 {
		t.Fatalf("queue depth %d after the epoch, want 0", r.depth())
	}
	seen := slices.Sorted(slices.Values(r.seen))
	var want []string
	for _, u := range set.Units {
		want = append(want, u.PromptID)
	}
	if !slices.Equal(seen, slices.Sorted(slices.Values(want))) {
		t.Fatalf("worker saw %v, want each of the 12 prompts exactly once", r.seen)
	}
	// Epoch order is the seeded shuffle, the same across processes.
	orc, err := New(r.bus.JS, r.res, set, cfg, Options{})
	if err != nil {
		t.Fatal(err)
	}
	var order []string
	for _, i := range orc.permutation(0) {
		order = append(order, set.Units[i].PromptID)
	}
	if !slices.Equal(order, r.seen) {
		t.Fatalf("worker order %v, want the epoch's shuffle %v", r.seen, order)
	}
}

func TestResumeRefusesAnotherPromptSetOrSeed(t *testing.T) {
	r := newTestRun(t)
	cfg := r.config(ModeAsync, 2)
	stop, _ := r.start(cfg, testSet(6))
	r.eventually("prompts", func() bool { return r.depth() == 2 })
	if _, err := stop(); err != nil {
		t.Fatal(err)
	}
	for name, tc := range map[string]struct {
		set  *PromptSet
		seed uint64
	}{"other prompts": {testSet(7), cfg.Seed}, "other seed": {testSet(6), cfg.Seed + 1}} {
		c := cfg
		c.Seed = tc.seed
		if _, err := New(r.bus.JS, r.res, tc.set, c, Options{}); err == nil {
			t.Errorf("%s: resumed, want an error", name)
		}
	}
}

func TestResumeRefusesStreamsThatWereRecreated(t *testing.T) {
	r := newTestRun(t)
	cfg := r.config(ModeAsync, 1)
	r.publishMetrics("m1", 0, trainerEvents(1, 0.5, 1)...)
	stop, _ := r.start(cfg, testSet(3))
	r.eventually("metrics read", func() bool { _, s := r.loadState(); return s.Record.MetricsNext == 2 })
	if _, err := stop(); err != nil {
		t.Fatal(err)
	}
	if err := r.bus.JS.DeleteStream(context.Background(), r.res.Run.MetricsStream()); err != nil {
		t.Fatal(err)
	}
	res, err := natsbus.EnsureRun(context.Background(), r.bus.JS, r.res.Run, natsbus.RunOptions{})
	if err != nil {
		t.Fatal(err)
	}
	orc, err := New(r.bus.JS, res, testSet(3), cfg, Options{Out: &syncBuffer{}, Logger: quiet()})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := orc.Run(context.Background()); err == nil || !strings.Contains(err.Error(), "use a new run directory") {
		t.Fatalf("got %v, want a refusal to read on past the recreated stream", err)
	}
}

// Pairs past the trainer's lag bound on arrival count as stale: max_lag in async mode, and
// any lag at all in sync mode, which is on-policy whatever max_lag says.
func TestStalePairsFollowTheTrainersLagBound(t *testing.T) {
	for _, tc := range []struct {
		mode      Mode
		lag       int64 // versions behind on arrival
		wantStale int64
	}{
		{ModeAsync, 1, 0},
		{ModeAsync, 2, 0},
		{ModeAsync, 3, 2},
		{ModeSync, 0, 0},
		{ModeSync, 1, 2},
	} {
		t.Run(fmt.Sprintf("%s lag %d", tc.mode, tc.lag), func(t *testing.T) {
			cfg := DefaultConfig()
			cfg.Mode, cfg.MaxLag = tc.mode, 2
			r := newRecorder(RecordState{}, cfg, &PromptSet{}, io.Discard, time.Second)
			r.onVersion(5, time.Now(), 0, 0)
			pairs := []proto.Pair{{PairID: "a", PromptID: "p", PolicyVersion: 5 - tc.lag}, {PairID: "b", PromptID: "p", PolicyVersion: 5 - tc.lag}}
			r.onPairs(1, pairs, time.Now())
			if r.st.StalePairs != tc.wantStale {
				t.Fatalf("%d stale pairs, want %d", r.st.StalePairs, tc.wantStale)
			}
		})
	}
}
