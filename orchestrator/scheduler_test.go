package orchestrator

import (
	"context"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestAsyncModeKeepsTheInFlightBoundFullButNeverOver(t *testing.T) {
	r := newTestRun(t)
	cfg := r.config(ModeAsync, 5)
	cfg.PairsAhead = 0 // the in-flight bound alone
	stop, out := r.start(cfg, testSet(40))

	r.eventually("the queue to fill to the bound", func() bool { return r.depth() == 5 })
	// With nothing happening, the run says what it waits for.
	r.eventually("a status line", func() bool {
		return strings.Contains(out.String(), "waiting   policy/version 0  in-flight 5  enqueued 5")
	})
	// With no worker taking any, the bound holds: nothing more is enqueued.
	time.Sleep(300 * time.Millisecond)
	if d := r.depth(); d != 5 {
		t.Fatalf("queue depth %d with no worker, want the bound 5", d)
	}
	for round := range 4 {
		r.work(3, 0, func(int) float64 { return 0.5 }, 1)
		r.eventually("the queue to refill", func() bool { return r.depth() == 5 })
		if d := r.depth(); d > 5 {
			t.Fatalf("round %d: queue depth %d over the bound", round, d)
		}
	}
	sum, err := stop()
	if err != nil {
		t.Fatal(err)
	}
	// 12 finished and 5 in flight: the worker's acks are what made room, one prompt each.
	if sum.Enqueued != 17 {
		t.Fatalf("enqueued %d prompts, want 17 (12 done + 5 in flight)", sum.Enqueued)
	}
	if len(r.seen) != 12 || len(slices.Compact(slices.Sorted(slices.Values(r.seen)))) != 12 {
		t.Fatalf("worker saw %v, want 12 distinct prompts", r.seen)
	}
}

func TestSyncModeWaitsForANewPolicyVersionBeforeTheNextBatch(t *testing.T) {
	r := newTestRun(t)
	cfg := r.config(ModeSync, 4)
	cfg.PairsPerVersion = 4
	cfg.K = 4 // the test worker's
	stop, out := r.start(cfg, testSet(40))

	r.eventually("the first batch", func() bool { return r.depth() == 4 })
	r.work(4, 0, func(k int) float64 { return float64(k % 2) }, 1)
	// The batch made 4 pairs, enough for the trainer: the orchestrator now waits for it.
	time.Sleep(500 * time.Millisecond)
	if d := r.depth(); d != 0 {
		t.Fatalf("queue depth %d before a new policy version, want 0 (sync mode waits)", d)
	}
	// The trainer reports its step through the same stream, then moves the policy key.
	tm := NewMetricsPublisher(r.bus.JS, r.res.Run, "trainer")
	if err := tm.Publish(context.Background(), 1, 1, map[string]float64{"loss": 0.69, "rewards/accuracies": 0.75, "rewards/margins": 0.2, "step_seconds": 0.42, "idle_fraction": 0.25}); err != nil {
		t.Fatal(err)
	}
	r.publishVersion(1)
	r.eventually("the second batch after version 1", func() bool { return r.depth() == 4 })
	r.work(4, 1, func(int) float64 { return 1 }, 1)
	// Acks reach the work queue asynchronously: until they land, the old batch would pass for
	// the next one.
	r.eventually("the second batch to be taken", func() bool { return r.depth() == 0 })
	r.publishVersion(2)
	r.eventually("the third batch after version 2", func() bool { return r.depth() == 4 })

	sum, err := stop()
	if err != nil {
		t.Fatal(err)
	}
	if sum.Enqueued != 12 || sum.Version != 2 || sum.Pairs != 8 {
		t.Fatalf("summary %+v, want 12 enqueued, version 2, 8 pairs", sum)
	}
	lines := out.String()
	// Step 1 ended with version 1: the rollouts sampled by version 0 scored 0.5 on average,
	// and the trainer's loss for step 1 is on the same line.
	if !strings.Contains(lines, "step 1 ") || !strings.Contains(lines, "policy/version 1") || !strings.Contains(lines, "reward/mean 0.500") ||
		!strings.Contains(lines, "loss 0.6900") || !strings.Contains(lines, "train 0.42s (idle 25%)") {
		t.Fatalf("step lines:\n%s\nwant step 1 with reward/mean 0.500, loss 0.6900 and the trainer's 0.42 s step, 25%% idle", lines)
	}
	if !strings.Contains(lines, "step 2 ") || !strings.Contains(lines, "reward/mean 1.000") {
		t.Fatalf("step lines:\n%s\nwant step 2 with reward/mean 1.000", lines)
	}
}

// The trainer takes exactly PairsPerVersion pairs and sync mode drops the rest, so once the
// pairs per prompt are known a batch is sized for one version's pairs (a quarter more, for
// luck), not the in-flight bound.
func TestSyncModeSizesABatchForTheNextVersionsPairs(t *testing.T) {
	r := newTestRun(t)
	cfg := r.config(ModeSync, 8)
	cfg.PairsPerVersion = 4
	cfg.K = 4
	stop, _ := r.start(cfg, testSet(40))

	r.eventually("a first batch of the in-flight bound", func() bool { return r.depth() == 8 })
	r.work(8, 0, func(k int) float64 { return float64(k % 2) }, 2) // 2 pairs per prompt
	r.eventually("the batch to be taken", func() bool { return r.depth() == 0 })
	r.publishVersion(1)
	// 4 pairs at 2 per prompt, and a quarter more: 3 prompts.
	r.eventually("a batch of 3 prompts after version 1", func() bool { return r.depth() == 3 })
	time.Sleep(300 * time.Millisecond)
	if d := r.depth(); d != 3 {
		t.Fatalf("queue depth %d, want a batch of 3", d)
	}
	if _, err := stop(); err != nil {
		t.Fatal(err)
	}
}

func TestSyncModeSamplesMoreWhenABatchMadeTooFewPairsForATrainingStep(t *testing.T) {
	r := newTestRun(t)
	cfg := r.config(ModeSync, 3)
	cfg.PairsPerVersion = 5
	cfg.K = 4 // the test worker's
	stop, _ := r.start(cfg, testSet(40))

	r.eventually("the first batch", func() bool { return r.depth() == 3 })
	r.work(3, 0, func(int) float64 { return 0 }, 1) // 3 pairs < 5: the trainer cannot step
	r.eventually("a top-up batch with no new version", func() bool { return r.depth() == 3 })
	r.work(3, 0, func(int) float64 { return 0 }, 1) // 6 pairs: enough
	time.Sleep(500 * time.Millisecond)
	if d := r.depth(); d != 0 {
		t.Fatalf("queue depth %d after enough pairs and no new version, want 0", d)
	}
	if _, err := stop(); err != nil {
		t.Fatal(err)
	}
}

func TestLagOfPairsIsCountedAgainstMaxLag(t *testing.T) {
	r := newTestRun(t)
	cfg := r.config(ModeAsync, 2)
	cfg.MaxLag = 1
	r.publishVersion(3)
	stop, _ := r.start(cfg, testSet(10))
	r.eventually("prompts", func() bool { return r.depth() == 2 })
	r.work(1, 3, func(int) float64 { return 1 }, 2) // lag 0
	r.work(1, 1, func(int) float64 { return 1 }, 2) // lag 2 > 1: stale
	r.eventually("pairs recorded", func() bool { _, s := r.loadState(); return s.Record.Pairs == 4 })
	r.publishVersion(4)
	r.eventually("step 4 in metrics.parquet", func() bool {
		rows, _ := ReadMetrics(context.Background(), filepath.Join(r.dir, MetricsFile))
		return findMetric(rows, Component, 4, MetricStalePairs) >= 0
	})
	sum, err := stop()
	if err != nil {
		t.Fatal(err)
	}
	if sum.StalePairs != 2 {
		t.Fatalf("stale pairs %d, want 2", sum.StalePairs)
	}
	rows, err := ReadMetrics(context.Background(), filepath.Join(r.dir, MetricsFile))
	if err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string]float64{MetricStalePairs: 2, MetricPolicyLag: 1, MetricPolicyLagMax: 2, MetricPairs: 4, MetricPolicyVersion: 4} {
		i := findMetric(rows, Component, 4, name)
		if i < 0 || rows[i].Value != want {
			t.Errorf("%s at step 4 = %v, want %v", name, valueAt(rows, i), want)
		}
	}
}

func (r *testRun) loadState() (bool, *State) {
	s, err := LoadState(r.dir)
	if err != nil || s == nil {
		return false, &State{}
	}
	return true, s
}

func findMetric(rows []MetricRow, component string, step int64, name string) int {
	for i, m := range rows {
		if m.Component == component && m.Step == step && m.Name == name && m.Label == "" {
			return i
		}
	}
	return -1
}

func valueAt(rows []MetricRow, i int) any {
	if i < 0 {
		return "missing"
	}
	return rows[i].Value
}

func TestRunStopsAtTheFirstBudgetReached(t *testing.T) {
	cases := []struct {
		name   string
		budget func(*Config)
		drive  func(r *testRun)
		want   string
	}{
		{"policy versions", func(c *Config) { c.MaxSteps = 2 }, func(r *testRun) {
			r.publishVersion(1)
			r.publishVersion(2)
		}, "steps"},
		{"pairs", func(c *Config) { c.MaxPairs = 3 }, func(r *testRun) {
			r.work(2, 0, func(int) float64 { return 1 }, 2)
		}, "pairs"},
		{"wall time", func(c *Config) { c.MaxWall = 300 * time.Millisecond }, func(*testRun) {}, "wall time"},
		{"one epoch", func(c *Config) { c.Epochs = 1 }, func(r *testRun) {
			r.work(6, 0, func(int) float64 { return 1 }, 0)
		}, "epochs"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := newTestRun(t)
			cfg := r.config(ModeAsync, 3)
			tc.budget(&cfg)
			orc, err := New(r.bus.JS, r.res, testSet(6), cfg, Options{Out: &syncBuffer{}, PollInterval: 20 * time.Millisecond, Logger: quiet()})
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			type result struct {
				sum Summary
				err error
			}
			done := make(chan result, 1)
			go func() {
				sum, err := orc.Run(ctx)
				done <- result{sum, err}
			}()
			r.eventually("prompts", func() bool { return r.depth() > 0 })
			tc.drive(r)
			res := <-done
			if res.err != nil || res.sum.Reason != tc.want {
				t.Fatalf("run ended with %+v, %v; want reason %q", res.sum, res.err, tc.want)
			}
			if _, st := r.loadState(); st.StopReason != tc.want {
				t.Fatalf("state.json stop reason %q, want %q", st.StopReason, tc.want)
			}
			// A run over budget stops at once when resumed, having spent its wall time.
			if tc.want == "wall time" {
				orc, err := New(r.bus.JS, r.res, testSet(6), cfg, Options{Out: &syncBuffer{}, Logger: quiet()})
				if err != nil {
					t.Fatal(err)
				}
				start := time.Now()
				sum, err := orc.Run(ctx)
				if err != nil || sum.Reason != "wall time" || time.Since(start) > 2*time.Second {
					t.Fatalf("resumed run: %+v, %v after %s; want an immediate wall-time stop", sum, err, time.Since(start))
				}
			}
		})
	}
}

// With PairsAhead, async mode samples only what the current policy may still make (the
// prompts in flight counted at the pairs per prompt seen so far), stops once it has, and
// starts again when the trainer publishes the next version.
func TestAsyncModeWaitsForTheNextVersionOncePairsAheadArrived(t *testing.T) {
	r := newTestRun(t)
	cfg := r.config(ModeAsync, 3)
	cfg.PairsAhead = 4
	stop, _ := r.start(cfg, testSet(40))

	r.eventually("the queue to fill to the bound", func() bool { return r.depth() == 3 })
	r.work(3, 0, func(k int) float64 { return float64(k % 2) }, 1) // 3 pairs of version 0 < 4
	r.eventually("one prompt for the one pair missing", func() bool { return r.depth() == 1 })
	time.Sleep(300 * time.Millisecond)
	if d := r.depth(); d != 1 {
		t.Fatalf("queue depth %d one pair short at one pair per prompt, want 1", d)
	}
	r.work(1, 0, func(k int) float64 { return float64(k % 2) }, 1) // 4 pairs: as many as may be ahead
	time.Sleep(500 * time.Millisecond)
	if d := r.depth(); d != 0 {
		t.Fatalf("queue depth %d with 4 pairs ahead of the trainer, want 0", d)
	}
	r.publishVersion(1)
	r.eventually("a refill to the bound after version 1", func() bool { return r.depth() == 3 })
	if _, err := stop(); err != nil {
		t.Fatal(err)
	}
}
