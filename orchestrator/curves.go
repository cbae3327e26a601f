package orchestrator

import (
	"context"
	"fmt"
	"io"
	"path/filepath"
	"sort"

	"github.com/autoif/autoif/curves"
)

// CurvePanels are a run's reward curve and DPO curves: reward/mean by step, then loss,
// rewards/margins and rewards/accuracies by trainer step.
func CurvePanels(rows []MetricRow) []curves.Panel {
	panels := []curves.Panel{rewardPanel(rows)}
	for _, name := range []string{"loss", "rewards/margins", "rewards/accuracies"} {
		panels = append(panels, curves.Panel{Title: name, XLabel: "step",
			Series: []curves.Series{{Name: name, Points: byStep(rows, name, func(m *MetricRow) bool {
				return m.Component != Component && m.Component != "rollout"
			})}}})
	}
	return panels
}

// rewardPanel uses the orchestrator's per-step reward; a run recorded without it (the
// rollout workers' metrics alone) falls back to their step means by policy version.
func rewardPanel(rows []MetricRow) curves.Panel {
	pts := byStep(rows, MetricRewardMean, func(m *MetricRow) bool { return m.Component == Component })
	if len(pts) > 0 {
		return curves.Panel{Title: "reward/mean", XLabel: "step", Series: []curves.Series{{Name: "reward/mean", Points: pts}}}
	}
	sum, n := map[int64]float64{}, map[int64]float64{}
	for i := range rows {
		m := &rows[i]
		if m.Component == "rollout" && m.Name == MetricRewardMean && m.Label == "" && m.PolicyVersion >= 0 {
			sum[m.PolicyVersion] += m.Value
			n[m.PolicyVersion]++
		}
	}
	for v, s := range sum {
		pts = append(pts, curves.Point{X: float64(v), Y: s / n[v]})
	}
	sort.Slice(pts, func(i, j int) bool { return pts[i].X < pts[j].X })
	return curves.Panel{Title: "reward/mean", XLabel: "policy version", Series: []curves.Series{{Name: "reward/mean", Points: pts}}}
}

// byStep is one run-wide value per step (the last one recorded, should a step report twice).
func byStep(rows []MetricRow, name string, keep func(*MetricRow) bool) []curves.Point {
	last := map[int64]float64{}
	for i := range rows {
		m := &rows[i]
		if m.Name == name && m.Label == "" && keep(m) {
			last[m.Step] = m.Value
		}
	}
	pts := make([]curves.Point, 0, len(last))
	for s, v := range last {
		pts = append(pts, curves.Point{X: float64(s), Y: v})
	}
	sort.Slice(pts, func(i, j int) bool { return pts[i].X < pts[j].X })
	return pts
}

// CurvesOptions shape WriteCurves' output.
type CurvesOptions struct {
	Term  curves.TermOptions
	Image curves.ImageOptions
	// NoPNG skips RUN_DIR/curves.png.
	NoPNG bool
}

// WriteCurves reads RUN_DIR/metrics.parquet, draws its curves on term (when not nil) and
// writes RUN_DIR/curves.png. It returns the PNG's path ("" with NoPNG).
func WriteCurves(ctx context.Context, runDir string, term io.Writer, o CurvesOptions) (string, error) {
	path := filepath.Join(runDir, MetricsFile)
	rows, err := ReadMetrics(ctx, path)
	if err != nil {
		return "", fmt.Errorf("curves: %w", err)
	}
	panels := CurvePanels(rows)
	if term != nil {
		if err := curves.Terminal(term, panels, o.Term); err != nil {
			return "", fmt.Errorf("curves: %w", err)
		}
	}
	if o.NoPNG {
		return "", nil
	}
	if o.Image.Title == "" {
		o.Image.Title = filepath.Base(filepath.Clean(runDir))
	}
	out := filepath.Join(runDir, CurvesFile)
	if err := curves.WritePNG(out, panels, o.Image); err != nil {
		return "", err
	}
	return out, nil
}
