package orchestrator

import "testing"

// Timing adds each component's seconds over the run and divides by the versions; per-
// instruction rows and the rollout's own step time are not counted twice.
func TestTimingSplitsTheRunByComponent(t *testing.T) {
	rows := []MetricRow{
		{Component: "rollout", Name: rolloutSampleSeconds, Value: 3},
		{Component: "rollout", Name: rolloutScoreSeconds, Value: 1},
		{Component: "rollout", Name: "rollout/step_s", Value: 4.5},
		{Component: "rollout", Name: rolloutSampleSeconds, Value: 5},
		{Component: "rollout", Name: rolloutScoreSeconds, Value: 1},
		{Component: "rollout", Name: rolloutSwapLatency, Value: 0.5},
		{Component: "rollout", Name: rolloutSwapLatency, Value: 1.5},
		{Component: "rollout", Name: "reward/mean", Value: 0.7, Label: "instr-1"},
		{Component: "trainer", Name: trainerStepSeconds, Value: 10},
		{Component: "trainer", Name: trainerStepSeconds, Value: 12},
		{Component: "trainer", Name: "loss", Value: 0.69},
	}
	got := timingOf(rows, 2)
	want := Timing{Versions: 2, SampleS: 4, ScoreS: 1, TrainS: 11, Swaps: 2, SwapLatencyS: 1, SwapLatencyMx: 1.5}
	if *got != want {
		t.Errorf("timing %+v, want %+v", *got, want)
	}
	if z := timingOf(nil, 0); z.SampleS != 0 || z.Swaps != 0 {
		t.Errorf("empty run: %+v", *z)
	}
}
