// Package dashboard watches runs: it keeps the series a person looks at while a run trains
// (reward, the DPO metrics, throughput, policy lag, trainer timing) and its recent samples,
// and serves them on one HTTP listener as a web page updated live over Server-Sent Events
// and as Prometheus metrics. A live run feeds it through orchestrator.Options.Observer; a
// finished one from its run directory's files.
package dashboard

import (
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"sync"

	"github.com/autoif/autoif/orchestrator"
)

// Point is one recorded value, as the page receives it.
type Point struct {
	Run       string  `json:"r"`
	Component string  `json:"c"`
	Name      string  `json:"n"`
	Label     string  `json:"l,omitempty"`
	Step      int64   `json:"s"`
	Version   int64   `json:"v"`
	Value     float64 `json:"y"`
	Time      float64 `json:"t"` // Unix seconds
}

// Sample is one prompt of a step with its responses, scores, verdicts and pairs.
type Sample struct {
	Run         string                 `json:"run"`
	Step        int64                  `json:"step"`
	Version     int64                  `json:"version"`
	PromptID    string                 `json:"prompt_id"`
	Instruction string                 `json:"instruction_id"`
	Prompt      string                 `json:"prompt"`
	Responses   []string               `json:"responses"`
	Scores      []float64              `json:"scores"`
	Verdicts    []orchestrator.Verdict `json:"verdicts,omitempty"`
	Chosen      []string               `json:"chosen"`
	Rejected    []string               `json:"rejected"`
}

// trainerNames are the trainer's figures the page charts, under TRL's names.
var trainerNames = map[string]bool{
	"loss": true, "rewards/chosen": true, "rewards/rejected": true, "rewards/margins": true,
	"rewards/accuracies": true, "logps/chosen": true, "logps/rejected": true,
	"step_seconds": true, "idle_fraction": true,
}

// Charted says whether the page draws a metric row; the rest (per-constraint rewards, eval
// counts by instruction, queue figures) stays in metrics.parquet, so a long run does not
// grow the page's memory with series nobody plots.
func Charted(m *orchestrator.MetricRow) bool {
	switch m.Component {
	case orchestrator.Component:
		switch m.Name {
		case orchestrator.MetricRewardMean, orchestrator.MetricPairsPerSec, orchestrator.MetricPolicyVersion,
			orchestrator.MetricPolicyLag, orchestrator.MetricStepSeconds:
			return m.Label == ""
		}
		return false
	case "rollout":
		switch m.Name {
		case "reward/mean":
			// Per instruction; the overall figure is the orchestrator's.
			return m.Label != "" && !strings.HasPrefix(m.Label, "constraint:")
		case "policy/swap_latency_s":
			return true
		}
		return false
	}
	return trainerNames[m.Name] && m.Label == ""
}

// Hub holds the watched runs and fans their new points and samples out to the pages
// following them. It is safe for concurrent use.
type Hub struct {
	// MaxSamples is how many recent samples a run keeps for the page (default 200).
	MaxSamples int

	mu    sync.Mutex
	runs  []*runData
	subs  map[chan []byte]struct{}
	prom  *promMetrics
	names map[string]*runData
}

type runData struct {
	name    string
	points  []Point
	samples []Sample
}

// NewHub makes an empty hub.
func NewHub() *Hub {
	return &Hub{MaxSamples: 200, subs: map[chan []byte]struct{}{}, prom: newPromMetrics(), names: map[string]*runData{}}
}

func (h *Hub) run(name string) *runData {
	r := h.names[name]
	if r == nil {
		r = &runData{name: name}
		h.names[name] = r
		h.runs = append(h.runs, r)
	}
	return r
}

// Observer is the orchestrator.Observer that records a live run under name.
func (h *Hub) Observer(name string) orchestrator.Observer {
	h.mu.Lock()
	h.run(name)
	h.mu.Unlock()
	return runObserver{h, name}
}

type runObserver struct {
	h    *Hub
	name string
}

func (o runObserver) ObserveMetrics(rows []orchestrator.MetricRow) { o.h.AddMetrics(o.name, rows) }
func (o runObserver) ObserveSamples(rows []orchestrator.SampleRow) { o.h.AddSamples(o.name, rows) }

// message is one SSE event's data: new points and samples, or (first) everything so far.
type message struct {
	Runs    []string `json:"runs,omitempty"`
	Points  []Point  `json:"points,omitempty"`
	Samples []Sample `json:"samples,omitempty"`
}

// AddMetrics records a run's metric rows: the charted ones for the page, all of them for
// Prometheus.
func (h *Hub) AddMetrics(run string, rows []orchestrator.MetricRow) {
	var pts []Point
	for i := range rows {
		m := &rows[i]
		if !Charted(m) {
			continue
		}
		pts = append(pts, Point{Run: run, Component: m.Component, Name: m.Name, Label: m.Label, Step: m.Step,
			Version: m.PolicyVersion, Value: m.Value, Time: float64(m.Time.UnixMicro()) / 1e6})
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	h.prom.observe(run, rows)
	if len(pts) == 0 {
		return
	}
	r := h.run(run)
	r.points = append(r.points, pts...)
	h.broadcast(message{Points: pts})
}

// AddSamples records a run's sample rows, keeping the newest MaxSamples.
func (h *Hub) AddSamples(run string, rows []orchestrator.SampleRow) {
	if len(rows) == 0 {
		return
	}
	out := make([]Sample, len(rows))
	for i := range rows {
		s := &rows[i]
		out[i] = Sample{Run: run, Step: s.Step, Version: s.PolicyVersion, PromptID: s.PromptID, Instruction: s.InstructionID,
			Prompt: s.Prompt, Responses: slices.Clone(s.Responses), Scores: slices.Clone(s.Scores),
			Verdicts: slices.Clone(s.Verdicts), Chosen: slices.Clone(s.Chosen), Rejected: slices.Clone(s.Rejected)}
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	r := h.run(run)
	r.samples = append(r.samples, out...)
	if n := max(h.MaxSamples, 1); len(r.samples) > n {
		r.samples = slices.Delete(r.samples, 0, len(r.samples)-n)
	}
	h.broadcast(message{Samples: out})
}

// LoadRunDir adds a finished (or running) run from its directory's metrics.parquet and
// samples.parquet, named by the directory's base name.
func (h *Hub) LoadRunDir(ctx context.Context, dir string) error {
	name := filepath.Base(filepath.Clean(dir))
	rows, err := orchestrator.ReadMetrics(ctx, filepath.Join(dir, orchestrator.MetricsFile))
	if err != nil {
		return fmt.Errorf("dashboard: %w", err)
	}
	samples, err := orchestrator.ReadSamples(ctx, filepath.Join(dir, orchestrator.SamplesFile))
	if err != nil {
		return fmt.Errorf("dashboard: %w", err)
	}
	h.mu.Lock()
	_, dup := h.names[name]
	h.mu.Unlock()
	if dup {
		return fmt.Errorf("dashboard: two runs named %q (%s): give run directories distinct names", name, dir)
	}
	h.AddMetrics(name, rows)
	h.AddSamples(name, samples)
	return nil
}

// broadcast hands a message to every follower; one too slow to keep up is dropped (its
// page reconnects and starts again from a snapshot) rather than slowing the run. h.mu is held.
func (h *Hub) broadcast(m message) {
	if len(h.subs) == 0 {
		return
	}
	data, err := json.Marshal(m)
	if err != nil {
		return
	}
	for ch := range h.subs {
		select {
		case ch <- data:
		default:
			delete(h.subs, ch)
			close(ch)
		}
	}
}

// subscribe returns everything recorded so far and a channel of what comes next, closed
// when the follower falls behind or unsubscribes.
func (h *Hub) subscribe() ([]byte, chan []byte, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	snap := message{Runs: []string{}}
	for _, r := range h.runs {
		snap.Runs = append(snap.Runs, r.name)
		snap.Points = append(snap.Points, r.points...)
		snap.Samples = append(snap.Samples, r.samples...)
	}
	data, err := json.Marshal(snap)
	if err != nil {
		return nil, nil, err
	}
	ch := make(chan []byte, 256)
	h.subs[ch] = struct{}{}
	return data, ch, nil
}

func (h *Hub) unsubscribe(ch chan []byte) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if _, ok := h.subs[ch]; ok {
		delete(h.subs, ch)
		close(ch)
	}
}
