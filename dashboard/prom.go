package dashboard

import (
	"net/http"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/autoif/autoif/orchestrator"
)

// promMetrics are a hub's Prometheus series, labelled by run, in a registry of their own (so
// two hubs in one process, as in the tests, do not collide).
type promMetrics struct {
	reg           *prometheus.Registry
	steps         *prometheus.CounterVec
	pairs         *prometheus.CounterVec
	stale         *prometheus.CounterVec
	tied          *prometheus.CounterVec
	rollouts      *prometheus.CounterVec
	evals         *prometheus.CounterVec
	failures      *prometheus.CounterVec
	rewardMean    *prometheus.GaugeVec
	version       *prometheus.GaugeVec
	lag           *prometheus.GaugeVec
	pairsPerSec   *prometheus.GaugeVec
	dpo           *prometheus.GaugeVec
	idle          *prometheus.GaugeVec
	trainerStep   *prometheus.HistogramVec
	swapLatency   *prometheus.HistogramVec
	orchestration *prometheus.HistogramVec
	handler       http.Handler
}

func newPromMetrics() *promMetrics {
	const ns = "autoif_run"
	run := []string{"run"}
	counter := func(name, help string, labels ...string) *prometheus.CounterVec {
		return prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: name, Help: help}, append(run, labels...))
	}
	gauge := func(name, help string, labels ...string) *prometheus.GaugeVec {
		return prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: ns, Name: name, Help: help}, append(run, labels...))
	}
	hist := func(name, help string, buckets []float64) *prometheus.HistogramVec {
		return prometheus.NewHistogramVec(prometheus.HistogramOpts{Namespace: ns, Name: name, Help: help, Buckets: buckets}, run)
	}
	m := &promMetrics{
		reg:         prometheus.NewRegistry(),
		steps:       counter("steps_total", "Steps closed: policy versions the orchestrator has seen published."),
		pairs:       counter("pairs_total", "Preference pairs recorded."),
		stale:       counter("stale_pairs_total", "Pairs already past the trainer's lag bound on arrival."),
		tied:        counter("tied_prompts_total", "Prompts whose responses all scored the same (no pair)."),
		rollouts:    counter("rollouts_total", "Scored responses recorded."),
		evals:       counter("sandbox_evaluations_total", "Verification function runs, by outcome (pass, fail, skipped, timeout, error).", "outcome"),
		failures:    counter("sandbox_failures_total", "Verification function errors, by kind (exception:ValueError, timeout, ...).", "kind"),
		rewardMean:  gauge("reward_mean", "Mean score of the rollouts of the last closed step."),
		version:     gauge("policy_version", "The policy version the last closed step ended on."),
		lag:         gauge("policy_lag", "Mean versions behind current of the last step's pairs, on arrival."),
		pairsPerSec: gauge("pairs_per_second", "Pairs over the last step's wall time."),
		dpo:         gauge("dpo", "The trainer's last DPO figure, under TRL's name (loss, rewards/margins, ...).", "metric"),
		idle:        gauge("trainer_idle_fraction", "Share of the trainer's last step spent waiting for pairs."),
		trainerStep: hist("trainer_step_seconds", "Trainer compute time per published step.", prometheus.ExponentialBuckets(0.01, 2, 16)),
		swapLatency: hist("policy_swap_latency_seconds", "From a policy's publication to a rollout worker's first step sampling with it.", prometheus.ExponentialBuckets(0.01, 2, 14)),
		orchestration: hist("step_seconds", "Wall time between two policy publications.",
			prometheus.ExponentialBuckets(0.05, 2, 16)),
	}
	m.reg.MustRegister(m.steps, m.pairs, m.stale, m.tied, m.rollouts, m.evals, m.failures, m.rewardMean, m.version,
		m.lag, m.pairsPerSec, m.dpo, m.idle, m.trainerStep, m.swapLatency, m.orchestration)
	m.handler = promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{})
	return m
}

// observe folds a run's metric rows into its series.
func (m *promMetrics) observe(run string, rows []orchestrator.MetricRow) {
	for i := range rows {
		r := &rows[i]
		switch r.Component {
		case orchestrator.Component:
			if r.Label != "" {
				continue
			}
			switch {
			case r.Name == orchestrator.MetricPolicyVersion:
				m.steps.WithLabelValues(run).Inc()
				m.version.WithLabelValues(run).Set(r.Value)
			case r.Name == orchestrator.MetricPairs:
				m.pairs.WithLabelValues(run).Add(r.Value)
			case r.Name == orchestrator.MetricStalePairs:
				m.stale.WithLabelValues(run).Add(r.Value)
			case r.Name == orchestrator.MetricRollouts:
				m.rollouts.WithLabelValues(run).Add(r.Value)
			case r.Name == orchestrator.MetricRewardMean:
				m.rewardMean.WithLabelValues(run).Set(r.Value)
			case r.Name == orchestrator.MetricPolicyLag:
				m.lag.WithLabelValues(run).Set(r.Value)
			case r.Name == orchestrator.MetricPairsPerSec:
				m.pairsPerSec.WithLabelValues(run).Set(r.Value)
			case r.Name == orchestrator.MetricStepSeconds:
				m.orchestration.WithLabelValues(run).Observe(r.Value)
			case r.Name == orchestrator.MetricEvalPass:
				m.evals.WithLabelValues(run, "pass").Add(r.Value)
			case r.Name == orchestrator.MetricEvalFail:
				m.evals.WithLabelValues(run, "fail").Add(r.Value)
			case r.Name == orchestrator.MetricEvalSkipped:
				m.evals.WithLabelValues(run, "skipped").Add(r.Value)
			case r.Name == orchestrator.MetricEvalTimeouts:
				m.evals.WithLabelValues(run, "timeout").Add(r.Value)
				if r.Value > 0 {
					m.failures.WithLabelValues(run, "timeout").Add(r.Value)
				}
			case r.Name == orchestrator.MetricEvalErrors:
				m.evals.WithLabelValues(run, "error").Add(r.Value)
			case strings.HasPrefix(r.Name, orchestrator.MetricEvalErrors+"/"):
				m.failures.WithLabelValues(run, strings.TrimPrefix(r.Name, orchestrator.MetricEvalErrors+"/")).Add(r.Value)
			}
		case "rollout":
			switch r.Name {
			case "rollout/ties_dropped":
				m.tied.WithLabelValues(run).Add(r.Value)
			case "policy/swap_latency_s":
				m.swapLatency.WithLabelValues(run).Observe(r.Value)
			}
		default:
			if r.Label != "" || !trainerNames[r.Name] {
				continue
			}
			switch r.Name {
			case "step_seconds":
				m.trainerStep.WithLabelValues(run).Observe(r.Value)
			case "idle_fraction":
				m.idle.WithLabelValues(run).Set(r.Value)
			default:
				m.dpo.WithLabelValues(run, r.Name).Set(r.Value)
			}
		}
	}
}
