package tensorboard

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/autoif/autoif/orchestrator"
)

// Tag is the TensorBoard tag and step of a metric row, ok false for rows left out. The
// trainer's figures get TRL's tags (the Hugging Face Trainer logs them under "train/":
// train/loss, train/rewards/margins, ...), by trainer step; the orchestrator's keep their
// names (reward/mean, pairs/s, policy/lag, evals/...), by step; the rollout workers' are put
// under rollout/ (their reward per instruction under reward/mean/<instruction>), by the policy
// version they sampled with. Per-constraint rewards and per-instruction eval counts stay in
// metrics.parquet: they would bury the curves in tags.
func Tag(m *orchestrator.MetricRow) (tag string, step int64, ok bool) {
	switch m.Component {
	case orchestrator.Component:
		return m.Name, m.Step, m.Label == ""
	case "rollout":
		if m.PolicyVersion < 0 {
			return "", 0, false
		}
		switch {
		case m.Label == "":
			return "rollout/" + strings.TrimPrefix(m.Name, "rollout/"), m.PolicyVersion, true
		case m.Name == "reward/mean" && !strings.HasPrefix(m.Label, "constraint:"):
			return "reward/mean/" + m.Label, m.PolicyVersion, true
		}
		return "", 0, false
	}
	return "train/" + m.Name, m.Step, m.Label == ""
}

// Observer writes a live run's metrics to an event file as they are recorded
// (orchestrator.Options.Observer).
type Observer struct {
	mu  sync.Mutex
	w   *Writer
	err error
}

// NewObserver starts an event file in dir for a live run.
func NewObserver(dir string) (*Observer, error) {
	w, err := Create(dir, time.Now())
	if err != nil {
		return nil, err
	}
	return &Observer{w: w}, nil
}

// Path is the event file's path.
func (o *Observer) Path() string { return o.w.Path() }

// ObserveMetrics appends the rows' scalars and flushes them, so TensorBoard sees each step
// as it lands. A write error stops the writing (the run goes on) and is kept for Close.
func (o *Observer) ObserveMetrics(rows []orchestrator.MetricRow) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.err != nil {
		return
	}
	n := 0
	for i := range rows {
		if tag, step, ok := Tag(&rows[i]); ok {
			if o.err = o.w.Scalar(tag, step, rows[i].Time, rows[i].Value); o.err != nil {
				return
			}
			n++
		}
	}
	if n > 0 {
		o.err = o.w.Flush()
	}
}

// ObserveSamples ignores samples: TensorBoard gets scalars only.
func (o *Observer) ObserveSamples([]orchestrator.SampleRow) {}

// Close closes the event file and returns the first error writing it met.
func (o *Observer) Close() error {
	o.mu.Lock()
	defer o.mu.Unlock()
	if err := o.w.Close(); o.err == nil {
		o.err = err
	}
	return o.err
}

// Export writes the scalars of a run directory's metrics.parquet as a new event file in
// out, returning its path and how many scalars it holds. A failed export leaves no file.
func Export(ctx context.Context, runDir, out string) (string, int, error) {
	rows, err := orchestrator.ReadMetrics(ctx, filepath.Join(runDir, orchestrator.MetricsFile))
	if err != nil {
		return "", 0, fmt.Errorf("export tensorboard: %w", err)
	}
	w, err := Create(out, time.Now())
	if err != nil {
		return "", 0, err
	}
	n := 0
	for i := range rows {
		tag, step, ok := Tag(&rows[i])
		if !ok {
			continue
		}
		if err = w.Scalar(tag, step, rows[i].Time, rows[i].Value); err != nil {
			break
		}
		n++
	}
	if cerr := w.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(w.Path())
		return "", 0, err
	}
	return w.Path(), n, nil
}
