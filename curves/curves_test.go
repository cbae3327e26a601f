package curves

import (
	"bytes"
	"image/png"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func rising(n int) []Point {
	var pts []Point
	for i := 1; i <= n; i++ {
		pts = append(pts, Point{float64(i), 0.2 + 0.6*(1-math.Exp(-float64(i)/10))})
	}
	return pts
}

func TestTerminalChartHasAxesTicksAndTheCurve(t *testing.T) {
	var b bytes.Buffer
	p := Panel{Title: "reward/mean", XLabel: "step", Series: []Series{{Name: "reward/mean", Points: rising(50)}}}
	if err := Terminal(&b, []Panel{p}, TermOptions{Width: 40, Height: 8}); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	lines := strings.Split(strings.TrimRight(out, "\n"), "\n")
	if lines[0] != "reward/mean" {
		t.Fatalf("first line %q, want the title", lines[0])
	}
	braille := 0
	for _, r := range out {
		if r > 0x2800 && r <= 0x28FF {
			braille++
		}
	}
	if braille < 40 {
		t.Fatalf("%d braille cells, want the curve across the width:\n%s", braille, out)
	}
	for _, want := range []string{"┤", "└" + strings.Repeat("─", 40), "0.2", "0.8", "step", "reward/mean = 0.7"} {
		if !strings.Contains(out, want) {
			t.Errorf("chart lacks %q:\n%s", want, out)
		}
	}
	// The curve rises: its first column's dots sit lower than its last column's.
	first, last := -1, -1
	for row, l := range lines[1:9] {
		cells := []rune(l[strings.IndexAny(l, "┤│")+3:])
		if len(cells) > 0 && cells[0] != ' ' && first < 0 {
			first = row
		}
		if len(cells) >= 40 && cells[39] != ' ' && last < 0 {
			last = row
		}
	}
	if !(last >= 0 && first > last) {
		t.Fatalf("rising curve drawn with first column at row %d and last at row %d:\n%s", first, last, out)
	}
}

func TestTerminalChartSaysWhenAPanelHasNoData(t *testing.T) {
	var b bytes.Buffer
	nan := []Point{{1, math.NaN()}}
	if err := Terminal(&b, []Panel{{Title: "loss"}, {Title: "margins", Series: []Series{{Name: "m", Points: nan}}}}, TermOptions{}); err != nil {
		t.Fatal(err)
	}
	if got := strings.Count(b.String(), "(no data)"); got != 2 {
		t.Fatalf("%d panels say no data, want 2:\n%s", got, b.String())
	}
}

func TestPNGHasOnePanelPerChartWithInk(t *testing.T) {
	panels := []Panel{
		{Title: "reward/mean", XLabel: "step", Series: []Series{{Name: "reward/mean", Points: rising(30)}}},
		{Title: "loss", XLabel: "step", Series: []Series{{Name: "loss", Points: []Point{{1, 0.69}, {2, 0.6}, {3, 0.52}}}}},
		{Title: "rewards/margins", XLabel: "step", Series: []Series{{Name: "rewards/margins", Points: []Point{{5, 0.1}}}}},
		{Title: "rewards/accuracies", XLabel: "step"},
	}
	path := filepath.Join(t.TempDir(), "curves.png")
	if err := WritePNG(path, panels, ImageOptions{Title: "run test"}); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	img, err := png.Decode(f)
	if err != nil {
		t.Fatal(err)
	}
	b := img.Bounds()
	if b.Dx() != 2*560 || b.Dy() != 34+2*340 {
		t.Fatalf("image %v, want 2×2 panels of 560×340 under a title", b)
	}
	// Each panel has dark ink (axes, text) and, where there is data, the series colour.
	for i := range panels {
		x0, y0 := (i%2)*560, 34+(i/2)*340
		dark, coloured := 0, 0
		for y := y0; y < y0+340; y++ {
			for x := x0; x < x0+560; x++ {
				r, g, bl, _ := img.At(x, y).RGBA()
				r, g, bl = r>>8, g>>8, bl>>8
				if r < 80 && g < 80 && bl < 80 {
					dark++
				}
				if r == 0 && g == 114 && bl == 178 {
					coloured++
				}
			}
		}
		if dark < 200 {
			t.Errorf("panel %d (%s): %d dark pixels, want axes and labels", i, panels[i].Title, dark)
		}
		if hasData := !panels[i].Empty(); hasData != (coloured > 20) {
			t.Errorf("panel %d (%s): %d pixels of the series colour, data %v", i, panels[i].Title, coloured, hasData)
		}
	}
}

func TestNiceTicksAreRoundAndCoverTheRange(t *testing.T) {
	cases := []struct {
		lo, hi float64
		want   string
	}{
		{0.213, 0.787, "0.2 0.4 0.6 0.8"},
		{1, 120, "0 25 50 75 100 125"},
		{-0.05, 0.3, "-0.1 0 0.1 0.2 0.3"}, {0, 1, "0 0.2 0.4 0.6 0.8 1"}, {0.5, 0.75, "0.5 0.55 0.6 0.65 0.7 0.75"},
	}
	for _, tc := range cases {
		ticks, lo, hi := niceTicks(tc.lo, tc.hi, 6)
		var got []string
		for _, v := range ticks {
			got = append(got, formatTick(v, ticks[1]-ticks[0]))
		}
		if strings.Join(got, " ") != tc.want || lo > tc.lo || hi < tc.hi {
			t.Errorf("niceTicks(%g, %g) = %v [%g, %g], want %s", tc.lo, tc.hi, got, lo, hi, tc.want)
		}
	}
}

// Smoothing is TensorBoard's: debiased, so a constant curve stays where it is instead of
// rising from zero, and each point is the weighted average of those before it.
func TestSmoothIsTensorBoardsDebiasedEMA(t *testing.T) {
	flat := Smooth([]Point{{1, 3}, {2, 3}, {3, 3}}, 0.9)
	for _, p := range flat {
		if math.Abs(p.Y-3) > 1e-12 {
			t.Fatalf("smoothed constant: %v, want 3 throughout", flat)
		}
	}
	// w=0.5 over 0, 10: (0.5·0 + 0.5·10) / (1 - 0.25) = 6.667, the second value weighted
	// twice the first.
	got := Smooth([]Point{{1, 0}, {2, math.NaN()}, {3, 10}}, 0.5)
	if got[0].Y != 0 || !math.IsNaN(got[1].Y) || math.Abs(got[2].Y-20.0/3) > 1e-12 || got[2].X != 3 {
		t.Fatalf("Smooth(0, NaN, 10; 0.5) = %v, want 0, NaN passed through, 6.667", got)
	}
	raw := []Point{{1, 5}, {2, 1}}
	if s := Smooth(raw, 0); &s[0] != &raw[0] {
		t.Error("weight 0 copied the points: it should leave them as they are")
	}
}

// Steps are whole numbers: an axis of steps never labels a half step, whatever its width.
func TestStepAxesLabelWholeSteps(t *testing.T) {
	for _, last := range []float64{3, 12, 17, 24, 130} {
		var pts []Point
		for x := 1.0; x <= last; x++ {
			pts = append(pts, Point{x, x})
		}
		p := Panel{Series: []Series{{Points: pts}}}
		for _, n := range []int{6, 7} {
			ticks, _ := xTicks(p, panelBounds(p), n)
			for _, v := range ticks {
				if v != math.Trunc(v) {
					t.Errorf("steps 1..%g, %d ticks: tick %g", last, n, v)
				}
			}
		}
	}
}
