package orchestrator

// Timing says where a run's time went per policy version, from the metrics its components
// published: the rollout workers' decoding and scoring (rollout/sample_s, rollout/score_s),
// the trainer's steps (step_seconds) and the workers' hot-swap latency (publication of a
// version to the first step sampling with it). With several workers sampling at once their
// seconds add up, so sampling can exceed the wall time.
type Timing struct {
	Versions      int64   `json:"versions"`
	SampleS       float64 `json:"sample_s_per_version"`
	ScoreS        float64 `json:"score_s_per_version"`
	TrainS        float64 `json:"train_s_per_version"`
	Swaps         int     `json:"swaps"`
	SwapLatencyS  float64 `json:"swap_latency_s_mean"`
	SwapLatencyMx float64 `json:"swap_latency_s_max"`
}

// Metric names of other components that Timing reads (rollout's and trainer's constants).
const (
	rolloutSampleSeconds = "rollout/sample_s"
	rolloutScoreSeconds  = "rollout/score_s"
	rolloutSwapLatency   = "policy/swap_latency_s"
	trainerStepSeconds   = "step_seconds"
)

func timingOf(rows []MetricRow, versions int64) *Timing {
	t := &Timing{Versions: versions}
	for _, m := range rows {
		switch {
		case m.Label != "":
		case m.Name == rolloutSampleSeconds:
			t.SampleS += m.Value
		case m.Name == rolloutScoreSeconds:
			t.ScoreS += m.Value
		case m.Name == rolloutSwapLatency:
			t.Swaps++
			t.SwapLatencyS += m.Value
			t.SwapLatencyMx = max(t.SwapLatencyMx, m.Value)
		case m.Name == trainerStepSeconds && m.Component != "rollout":
			t.TrainS += m.Value
		}
	}
	if t.Swaps > 0 {
		t.SwapLatencyS /= float64(t.Swaps)
	}
	if versions > 0 {
		n := float64(versions)
		t.SampleS, t.ScoreS, t.TrainS = t.SampleS/n, t.ScoreS/n, t.TrainS/n
	}
	return t
}
