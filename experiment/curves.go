package experiment

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/autoif/autoif/curves"
	"github.com/autoif/autoif/orchestrator"
)

// CurvesOptions shape CompareCurves' charts.
type CurvesOptions struct {
	// Smooth is the EMA weight of TensorBoard's smoothing slider (0: raw curves).
	Smooth float64
	Term   curves.TermOptions
	Image  curves.ImageOptions
	// Out is the PNG's path (default RUN_DIR/curves.png for one run; curves.png for several).
	Out   string
	NoPNG bool
}

// CompareCurves draws the reward and DPO curves of one or more run directories overlaid,
// one line per run, smoothed, plus a panel of held-out evaluations where a run has a
// summary.json (`autoif experiment tinyif`, i.e. `make run`): the pass rate of the warm start
// and of the online and offline DPO policies after the same number of steps, online and
// offline drawn on one chart. It returns the PNG's path ("" with NoPNG).
func CompareCurves(ctx context.Context, dirs []string, term io.Writer, o CurvesOptions) (string, error) {
	panels, err := ComparePanels(ctx, dirs, o.Smooth)
	if err != nil {
		return "", err
	}
	if term != nil {
		if err := curves.Terminal(term, panels, o.Term); err != nil {
			return "", fmt.Errorf("curves: %w", err)
		}
	}
	if o.NoPNG {
		return "", nil
	}
	out := o.Out
	if out == "" {
		out = orchestrator.CurvesFile
		if len(dirs) == 1 {
			out = filepath.Join(dirs[0], orchestrator.CurvesFile)
		}
	}
	if o.Image.Title == "" {
		for i, d := range dirs {
			if i > 0 {
				o.Image.Title += " vs "
			}
			o.Image.Title += filepath.Base(filepath.Clean(d))
		}
	}
	if err := curves.WritePNG(out, panels, o.Image); err != nil {
		return "", err
	}
	return out, nil
}

// ComparePanels are CompareCurves' charts: each run's curves (smoothed by the EMA weight
// smooth) overlaid panel by panel, then the held-out evaluations of the runs that have them.
func ComparePanels(ctx context.Context, dirs []string, smooth float64) ([]curves.Panel, error) {
	if len(dirs) == 0 {
		return nil, errors.New("curves: no run directory")
	}
	if smooth < 0 || smooth >= 1 {
		return nil, fmt.Errorf("curves: --smooth %g: want a weight in [0, 1)", smooth)
	}
	var panels []curves.Panel
	var held curves.Panel
	names := map[string]string{}
	for _, dir := range dirs {
		name := filepath.Base(filepath.Clean(dir))
		if other, ok := names[name]; ok {
			return nil, fmt.Errorf("curves: %s and %s have the same name %q: the legend could not tell them apart", other, dir, name)
		}
		names[name] = dir
		rows, err := orchestrator.ReadMetrics(ctx, filepath.Join(dir, orchestrator.MetricsFile))
		if err != nil {
			return nil, fmt.Errorf("curves: %w", err)
		}
		prefix := ""
		if len(dirs) > 1 {
			prefix = name + " "
		}
		for i, p := range orchestrator.CurvePanels(rows) {
			if i == len(panels) {
				panels = append(panels, curves.Panel{Title: p.Title, XLabel: p.XLabel})
				if smooth > 0 {
					panels[i].Title += fmt.Sprintf(" (smoothed, EMA %.2f)", smooth)
				}
			}
			for _, s := range p.Series {
				n := s.Name
				if prefix != "" {
					n = name
				}
				panels[i].Series = append(panels[i].Series, curves.Series{Name: n, Points: curves.Smooth(s.Points, smooth)})
			}
		}
		sum, err := readSummary(dir)
		if err != nil {
			return nil, err
		}
		if sum != nil {
			// Evaluations are few and exact: marked, never smoothed.
			start := curves.Point{X: 0, Y: sum.HeldOutBefore}
			held.Series = append(held.Series,
				curves.Series{Name: prefix + "online DPO", Points: []curves.Point{start, {X: float64(sum.Steps), Y: sum.HeldOutAfter}}},
				curves.Series{Name: prefix + "offline DPO", Points: []curves.Point{start, {X: float64(sum.Steps), Y: sum.OfflineHeldOut}}})
		}
	}
	if len(held.Series) > 0 {
		held.Title, held.XLabel = "held-out pass rate (warm start at step 0)", "step"
		panels = append(panels, held)
	}
	return panels, nil
}

// readSummary reads RUN_DIR/summary.json when the run has one (nil when not).
func readSummary(dir string) (*Summary, error) {
	b, err := os.ReadFile(filepath.Join(dir, SummaryFile))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("curves: %w", err)
	}
	var s Summary
	if err := json.Unmarshal(b, &s); err != nil {
		return nil, fmt.Errorf("curves: %s: %w", filepath.Join(dir, SummaryFile), err)
	}
	return &s, nil
}
