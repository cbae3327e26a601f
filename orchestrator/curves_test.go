package orchestrator

import (
	"bytes"
	"context"
	"image/png"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// syntheticRun is the metrics of a run whose reward rises and whose DPO loss falls.
func syntheticRun(steps int) []MetricRow {
	t0 := time.Date(2026, 11, 21, 12, 0, 0, 0, time.UTC)
	var rows []MetricRow
	seq := uint64(1)
	for s := 1; s <= steps; s++ {
		x := float64(s)
		at := t0.Add(time.Duration(s) * time.Second)
		rows = append(rows,
			MetricRow{Time: at, Component: "rollout", Step: x2i(x), Name: "reward/mean", Value: 0.1 + 0.3*x/float64(steps), PolicyVersion: int64(s - 1), Seq: seq},
			MetricRow{Time: at, Component: Component, Step: int64(s), Name: MetricRewardMean, Value: 0.2 + 0.5*(1-math.Exp(-x/8)), PolicyVersion: int64(s), Seq: seq + 1},
			MetricRow{Time: at, Component: "trainer", Step: int64(s), Name: "loss", Value: 0.69 * math.Exp(-x/30), PolicyVersion: -1, Seq: seq + 2},
			MetricRow{Time: at, Component: "trainer", Step: int64(s), Name: "rewards/margins", Value: 0.05 * x, PolicyVersion: -1, Seq: seq + 2},
			MetricRow{Time: at, Component: "trainer", Step: int64(s), Name: "rewards/accuracies", Value: math.Min(1, 0.5+x/80), PolicyVersion: -1, Seq: seq + 2},
		)
		seq += 3
	}
	return rows
}

func x2i(x float64) int64 { return int64(x) }

func TestCurvesRenderFromAMetricsFile(t *testing.T) {
	dir := t.TempDir()
	if err := WriteMetrics(filepath.Join(dir, MetricsFile), syntheticRun(60)); err != nil {
		t.Fatal(err)
	}
	var term bytes.Buffer
	out, err := WriteCurves(context.Background(), dir, &term, CurvesOptions{})
	if err != nil {
		t.Fatal(err)
	}
	text := term.String()
	for _, want := range []string{"reward/mean\n", "loss\n", "rewards/margins\n", "rewards/accuracies\n", "┤", "└", "step"} {
		if !strings.Contains(text, want) {
			t.Errorf("terminal charts lack %q:\n%s", want, text)
		}
	}
	if strings.Contains(text, "(no data)") {
		t.Errorf("a panel has no data:\n%s", text)
	}
	f, err := os.Open(out)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	img, err := png.Decode(f)
	if err != nil {
		t.Fatal(err)
	}
	if b := img.Bounds(); b.Dx() < 800 || b.Dy() < 600 {
		t.Fatalf("curves.png is %v, want four readable panels", b)
	}
	ink := 0
	b := img.Bounds()
	for y := b.Min.Y; y < b.Max.Y; y++ {
		for x := b.Min.X; x < b.Max.X; x++ {
			if r, g, bl, _ := img.At(x, y).RGBA(); r>>8 < 200 || g>>8 < 200 || bl>>8 < 200 {
				ink++
			}
		}
	}
	if frac := float64(ink) / float64(b.Dx()*b.Dy()); frac < 0.01 || frac > 0.5 {
		t.Fatalf("%.3f of curves.png is ink, want a drawing, not a blank or a blot", frac)
	}
	if os.Getenv("AUTOIF_KEEP_CURVES") != "" {
		data, _ := os.ReadFile(out)
		os.WriteFile(os.Getenv("AUTOIF_KEEP_CURVES"), data, 0o644)
	}
}

func TestRewardCurveFallsBackToRolloutMetricsByPolicyVersion(t *testing.T) {
	var rows []MetricRow
	for _, r := range syntheticRun(10) {
		if r.Component == "rollout" {
			rows = append(rows, r)
		}
	}
	p := CurvePanels(rows)[0]
	if p.XLabel != "policy version" || len(p.Series[0].Points) != 10 {
		t.Fatalf("reward panel %+v, want 10 points by policy version", p)
	}
}

func TestCurvesOfAMissingRunDirectoryFailNamingTheFile(t *testing.T) {
	dir := t.TempDir()
	_, err := WriteCurves(context.Background(), dir, nil, CurvesOptions{})
	if err == nil || !strings.Contains(err.Error(), filepath.Join(dir, MetricsFile)) {
		t.Fatalf("got %v, want an error naming metrics.parquet", err)
	}
}
