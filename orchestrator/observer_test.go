package orchestrator

import (
	"context"
	"path/filepath"
	"slices"
	"sync"
	"testing"
)

// recordingObserver keeps copies of what it is shown, as an observer must.
type recordingObserver struct {
	mu      sync.Mutex
	metrics []MetricRow
	samples []SampleRow
}

func (o *recordingObserver) ObserveMetrics(rows []MetricRow) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.metrics = append(o.metrics, rows...)
}

func (o *recordingObserver) ObserveSamples(rows []SampleRow) {
	o.mu.Lock()
	defer o.mu.Unlock()
	for _, s := range rows {
		s.Responses, s.Scores, s.Verdicts = slices.Clone(s.Responses), slices.Clone(s.Scores), slices.Clone(s.Verdicts)
		s.Chosen, s.Rejected = slices.Clone(s.Chosen), slices.Clone(s.Rejected)
		o.samples = append(o.samples, s)
	}
}

func (o *recordingObserver) has(component string, step int64, name string) bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	return findMetric(o.metrics, component, step, name) >= 0
}

func (o *recordingObserver) stepSamples(step int64) []SampleRow {
	o.mu.Lock()
	defer o.mu.Unlock()
	var out []SampleRow
	for _, s := range o.samples {
		if s.Step == step {
			out = append(out, s)
		}
	}
	return out
}

// An observer (the dashboard, an event-file writer) sees every metrics batch as it is
// recorded, the orchestrator's own step aggregates included, and the sample rows of each
// step when it closes: prompt, the K responses with their scores and verdicts, the pairs.
func TestAnObserverSeesTheMetricsAndTheSamplesOfEachClosedStep(t *testing.T) {
	r := newTestRun(t)
	obs := &recordingObserver{}
	r.observer = obs
	cfg := r.config(ModeAsync, 4)
	stop, _ := r.start(cfg, testSet(8))
	r.work(4, 0, func(k int) float64 { return float64(k % 2) }, 1)
	r.publishVersion(1)
	r.publishMetrics("m1", 1, trainerEvents(1, 0.5, 1)...)
	r.eventually("step 1's samples and metrics", func() bool {
		return len(obs.stepSamples(1)) > 0 && obs.has(Component, 1, MetricRewardMean) && obs.has("trainer", 1, "loss")
	})
	if _, err := stop(); err != nil {
		t.Fatal(err)
	}
	samples := obs.stepSamples(1)
	if len(samples) != 4 {
		t.Fatalf("%d samples of step 1, want the 4 prompts sampled", len(samples))
	}
	for _, s := range samples {
		if s.PolicyVersion != 0 || s.Prompt == "" || len(s.Responses) != 4 || len(s.Scores) != 4 || len(s.Verdicts) != 4 ||
			len(s.Chosen) != 1 || len(s.Rejected) != 1 {
			t.Errorf("sample %+v: want version 0, the prompt, 4 responses with scores and verdicts, 1 pair", s)
		}
	}
	i := findMetric(obs.metrics, Component, 1, MetricRewardMean)
	if obs.metrics[i].Value != 0.5 {
		t.Errorf("step 1 reward/mean %g, want 0.5 (scores 0, 1, 0, 1)", obs.metrics[i].Value)
	}
}

// An observer of a resumed run starts with what the earlier process recorded, each row
// once: the dashboard of a run that was stopped and continued shows the whole run.
func TestAnObserverOfAResumedRunSeesTheEarlierRowsOnce(t *testing.T) {
	r := newTestRun(t)
	cfg := r.config(ModeAsync, 1)
	stop, _ := r.start(cfg, testSet(5))
	r.publishMetrics("m1", 0, trainerEvents(1, 0.5, 1)...)
	r.eventually("metrics flushed", func() bool {
		rows, _ := ReadMetrics(context.Background(), filepath.Join(r.dir, MetricsFile))
		return len(rows) == 3
	})
	if _, err := stop(); err != nil {
		t.Fatal(err)
	}
	obs := &recordingObserver{}
	r.observer = obs
	stop, _ = r.start(cfg, testSet(5))
	r.publishMetrics("m2", 0, trainerEvents(2, 0.4, 1)...)
	r.eventually("step 2's metrics", func() bool { return obs.has("trainer", 2, "loss") })
	if _, err := stop(); err != nil {
		t.Fatal(err)
	}
	obs.mu.Lock()
	defer obs.mu.Unlock()
	if len(obs.metrics) != 6 || obs.metrics[0].Step != 1 || obs.metrics[3].Step != 2 {
		t.Fatalf("observer saw %d rows %+v, want step 1's 3 recorded rows then step 2's 3", len(obs.metrics), obs.metrics)
	}
}
