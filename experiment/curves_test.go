package experiment

import (
	"bytes"
	"context"
	"encoding/json"
	"image/png"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/autoif/autoif/curves"
	"github.com/autoif/autoif/orchestrator"
)

func writeRun(t *testing.T, dir string, rewards []float64, sum *Summary) {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	var rows []orchestrator.MetricRow
	for i, r := range rewards {
		step := int64(i + 1)
		rows = append(rows,
			orchestrator.MetricRow{Time: time.Unix(int64(i), 0), Component: orchestrator.Component, Step: step, Name: "reward/mean", Value: r},
			orchestrator.MetricRow{Time: time.Unix(int64(i), 0), Component: "trainer", Step: step, Name: "loss", Value: 0.69 - 0.01*float64(i)})
	}
	if err := orchestrator.WriteMetrics(filepath.Join(dir, orchestrator.MetricsFile), rows); err != nil {
		t.Fatal(err)
	}
	if sum != nil {
		b, _ := json.Marshal(sum)
		if err := os.WriteFile(filepath.Join(dir, SummaryFile), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// Two runs overlay on every panel, one line each named after its directory, smoothed as
// asked; the run of `make run` adds its held-out evaluations, online and offline on one
// chart from the warm start's pass rate at step 0.
func TestCompareCurvesOverlaysRunsAndMarksHeldOutEvaluations(t *testing.T) {
	root := t.TempDir()
	tiny, other := filepath.Join(root, "tinyif"), filepath.Join(root, "async")
	writeRun(t, tiny, []float64{0.2, 0.4, 0.3}, &Summary{HeldOutBefore: 0.25, HeldOutAfter: 0.4, OfflineHeldOut: 0.3, Steps: 3})
	writeRun(t, other, []float64{0.1, 0.1}, nil)
	panels, err := ComparePanels(context.Background(), []string{tiny, other}, 0.5)
	if err != nil {
		t.Fatal(err)
	}
	reward := panels[0]
	if len(reward.Series) != 2 || reward.Series[0].Name != "tinyif" || reward.Series[1].Name != "async" {
		t.Fatalf("reward panel series %+v: want tinyif and async", reward.Series)
	}
	if !strings.Contains(reward.Title, "EMA 0.50") {
		t.Errorf("reward panel title %q does not say it is smoothed", reward.Title)
	}
	want := curves.Smooth([]curves.Point{{X: 1, Y: 0.2}, {X: 2, Y: 0.4}, {X: 3, Y: 0.3}}, 0.5)
	for i, p := range reward.Series[0].Points {
		if math.Abs(p.Y-want[i].Y) > 1e-12 {
			t.Fatalf("tinyif reward %v, want the smoothed %v", reward.Series[0].Points, want)
		}
	}
	held := panels[len(panels)-1]
	if !strings.HasPrefix(held.Title, "held-out pass rate") || len(held.Series) != 2 {
		t.Fatalf("last panel %+v: want the held-out pass rates of tinyif alone", held)
	}
	for _, s := range held.Series {
		p := s.Points
		if len(p) != 2 || p[0] != (curves.Point{X: 0, Y: 0.25}) || p[1].X != 3 {
			t.Errorf("%s: %v, want the warm start at step 0 and the policy after step 3", s.Name, p)
		}
	}
	if held.Series[0].Name != "tinyif online DPO" || held.Series[0].Points[1].Y != 0.4 ||
		held.Series[1].Name != "tinyif offline DPO" || held.Series[1].Points[1].Y != 0.3 {
		t.Errorf("held-out series %+v", held.Series)
	}

	var term bytes.Buffer
	out := filepath.Join(root, "compare.png")
	path, err := CompareCurves(context.Background(), []string{tiny, other}, &term, CurvesOptions{Smooth: 0.5, Out: out})
	if err != nil || path != out {
		t.Fatalf("CompareCurves: %q %v", path, err)
	}
	f, err := os.Open(out)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := png.Decode(f); err != nil {
		t.Fatalf("%s: %v", out, err)
	}
	for _, s := range []string{"tinyif", "async", "online DPO", "offline DPO"} {
		if !strings.Contains(term.String(), s) {
			t.Errorf("the terminal charts do not name %q", s)
		}
	}
}

// Two directories with one name would be one legend entry: refused, as is a weight that is
// not an EMA's.
func TestCompareCurvesRefusesAmbiguousRunsAndBadWeights(t *testing.T) {
	root := t.TempDir()
	a, b := filepath.Join(root, "x", "run"), filepath.Join(root, "y", "run")
	writeRun(t, a, []float64{0.1}, nil)
	writeRun(t, b, []float64{0.2}, nil)
	if _, err := ComparePanels(context.Background(), []string{a, b}, 0); err == nil || !strings.Contains(err.Error(), "same name") {
		t.Errorf("two runs named run: %v", err)
	}
	if _, err := ComparePanels(context.Background(), []string{a}, 1); err == nil || !strings.Contains(err.Error(), "[0, 1)") {
		t.Errorf("weight 1: %v", err)
	}
}
