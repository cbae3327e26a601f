package serve

import (
	"net/http"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// metrics are the server's Prometheus series, in a registry of its own (so two servers in
// one process, as in the tests, do not collide).
type metrics struct {
	reg                     *prometheus.Registry
	requests                *prometheus.CounterVec
	rejected                prometheus.Counter
	promptTokens, genTokens prometheus.Counter
	batch, ttft, itl        prometheus.Histogram
	policyVersion           prometheus.Gauge
	handler                 http.Handler
}

func newMetrics(s *Server) *metrics {
	const ns = "autoif_serve"
	m := &metrics{
		reg: prometheus.NewRegistry(),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "requests_total",
			Help: "Completion requests admitted, by endpoint."}, []string{"endpoint"}),
		rejected: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Name: "rejected_total",
			Help: "Requests answered 503 because the queue was full."}),
		promptTokens: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Name: "prompt_tokens_total",
			Help: "Prompt tokens of completed requests."}),
		genTokens: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Name: "generation_tokens_total",
			Help: "Completion tokens of completed requests."}),
		batch: prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: ns, Name: "batch_size",
			Help: "Sequences in each decode step.", Buckets: []float64{1, 2, 4, 8, 16, 32, 64, 128}}),
		ttft: prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: ns, Name: "time_to_first_token_seconds",
			Help: "From admission to a request's first token.", Buckets: prometheus.ExponentialBuckets(0.005, 2, 14)}),
		itl: prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: ns, Name: "inter_token_latency_seconds",
			Help: "Between consecutive tokens of a request.", Buckets: prometheus.ExponentialBuckets(0.001, 2, 14)}),
		policyVersion: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: ns, Name: "policy_version",
			Help: "The policy version new requests start on."}),
	}
	m.reg.MustRegister(m.requests, m.rejected, m.promptTokens, m.genTokens, m.batch, m.ttft, m.itl, m.policyVersion,
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: ns, Name: "queue_depth", Help: "Requests waiting for batch slots."},
			func() float64 { _, q := s.engine.load(); return float64(q) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: ns, Name: "running_sequences", Help: "Sequences holding a batch slot."},
			func() float64 { r, _ := s.engine.load(); return float64(r) }),
	)
	m.handler = promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{})
	return m
}

func (m *metrics) serveHTTP(w http.ResponseWriter, r *http.Request) { m.handler.ServeHTTP(w, r) }

func (m *metrics) observeStep(batch int) { m.batch.Observe(float64(batch)) }

func (m *metrics) request(endpoint string, _ *request) { m.requests.WithLabelValues(endpoint).Inc() }

func (m *metrics) completed(u *usage) {
	m.promptTokens.Add(float64(u.PromptTokens))
	m.genTokens.Add(float64(u.CompletionTokens))
}
