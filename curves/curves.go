// Package curves draws training curves twice: as braille charts in a terminal and as a
// multi-panel PNG, with axes, tick labels and titles, using only the standard library (a
// built-in 5×7 bitmap font draws the text). It knows nothing of where the numbers come from.
package curves

import (
	"fmt"
	"math"
	"sort"
	"strconv"
	"strings"
)

// Point is one (x, y) value of a series.
type Point struct{ X, Y float64 }

// Series is one named line.
type Series struct {
	Name   string
	Points []Point
}

// Panel is one chart: a title, axis labels and the lines drawn on it.
type Panel struct {
	Title  string
	XLabel string
	Series []Series
}

// Empty says the panel has nothing to draw.
func (p Panel) Empty() bool {
	for _, s := range p.Series {
		if len(finite(s.Points)) > 0 {
			return false
		}
	}
	return true
}

// finite drops NaN and infinite values, which no axis can hold.
func finite(pts []Point) []Point {
	out := pts[:0:0]
	for _, p := range pts {
		if !math.IsNaN(p.X) && !math.IsNaN(p.Y) && !math.IsInf(p.X, 0) && !math.IsInf(p.Y, 0) {
			out = append(out, p)
		}
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].X < out[j].X })
	return out
}

// bounds is a panel's data range, widened so a flat line or a single point still has an
// axis to sit on.
type bounds struct{ x0, x1, y0, y1 float64 }

func panelBounds(p Panel) bounds {
	b := bounds{math.Inf(1), math.Inf(-1), math.Inf(1), math.Inf(-1)}
	for _, s := range p.Series {
		for _, pt := range finite(s.Points) {
			b.x0, b.x1 = min(b.x0, pt.X), max(b.x1, pt.X)
			b.y0, b.y1 = min(b.y0, pt.Y), max(b.y1, pt.Y)
		}
	}
	if math.IsInf(b.x0, 0) {
		return bounds{0, 1, 0, 1}
	}
	if b.x1 == b.x0 {
		b.x0, b.x1 = b.x0-0.5, b.x1+0.5
	}
	if b.y1 == b.y0 {
		d := math.Max(math.Abs(b.y0)*0.1, 0.5)
		b.y0, b.y1 = b.y0-d, b.y1+d
	}
	return b
}

// niceTicks returns about n round tick values covering [lo, hi], and the range they span.
func niceTicks(lo, hi float64, n int) (ticks []float64, tlo, thi float64) {
	step := tickStep(lo, hi, n)
	first := math.Floor(lo/step + 1e-9)
	last := math.Ceil(hi/step - 1e-9)
	for i := first; i <= last; i++ {
		// Multiplying, not accumulating, keeps 0.1·3 from printing as 0.30000000000000004.
		v := i * step
		if i == 0 {
			v = 0
		}
		ticks = append(ticks, v)
	}
	return ticks, first * step, last * step
}

// xTicks are the x axis' ticks: steps and versions are whole numbers, so a panel whose x
// values all are gets no ticks between them.
func xTicks(p Panel, b bounds, n int) ([]float64, float64) {
	integral := true
	for _, s := range p.Series {
		for _, pt := range finite(s.Points) {
			integral = integral && pt.X == math.Trunc(pt.X)
		}
	}
	step := tickStep(b.x0, b.x1, n)
	if integral {
		// 2.5 steps between ticks would label half steps.
		step = max(math.Floor(step), 1)
	}
	var ticks []float64
	for i := math.Ceil(b.x0/step - 1e-9); i*step <= b.x1+1e-9; i++ {
		v := i * step
		if i == 0 {
			v = 0
		}
		ticks = append(ticks, v)
	}
	return ticks, step
}

// tickStep is the round step (1, 2, 2.5 or 5 times a power of ten) giving about n ticks.
func tickStep(lo, hi float64, n int) float64 {
	raw := (hi - lo) / float64(max(n-1, 1))
	mag := math.Pow(10, math.Floor(math.Log10(raw)))
	for _, m := range []float64{1, 2, 2.5, 5} {
		if m*mag >= raw*(1-1e-9) {
			return m * mag
		}
	}
	return 10 * mag
}

// formatTick writes a tick value compactly: integers plainly, others with the digits the
// step needs, very large or small values in e-notation.
func formatTick(v, step float64) string {
	if v == 0 {
		return "0"
	}
	a := math.Abs(v)
	if a >= 1e5 || a < 1e-3 {
		return strconv.FormatFloat(v, 'e', 1, 64)
	}
	digits := 0
	for p := 1.0; digits < 6 && math.Abs(step*p-math.Round(step*p)) > 1e-6*p; p *= 10 {
		digits++
	}
	out := strconv.FormatFloat(v, 'f', digits, 64)
	if strings.Contains(out, ".") {
		out = strings.TrimRight(strings.TrimRight(out, "0"), ".")
	}
	return out
}

func formatValue(v float64) string {
	a := math.Abs(v)
	switch {
	case v == 0:
		return "0"
	case a >= 1e5 || a < 1e-3:
		return strconv.FormatFloat(v, 'e', 2, 64)
	case a >= 100:
		return strconv.FormatFloat(v, 'f', 1, 64)
	default:
		return strconv.FormatFloat(v, 'f', 4, 64)
	}
}

// lastPoint summarises a series for a legend: its last value.
func lastPoint(s Series) string {
	pts := finite(s.Points)
	if len(pts) == 0 {
		return s.Name + " (no data)"
	}
	last := pts[len(pts)-1]
	return fmt.Sprintf("%s = %s at %s", s.Name, formatValue(last.Y), strings.TrimSuffix(formatValue(last.X), ".0000"))
}

// Smooth is TensorBoard's scalar smoothing: an exponential moving average with weight w in
// [0, 1), divided by 1 - w^n so the first points are not pulled towards the average's zero
// start. Points that are not finite pass through. w = 0 returns the points as they are.
func Smooth(pts []Point, w float64) []Point {
	if w <= 0 {
		return pts
	}
	out := make([]Point, len(pts))
	last, n := 0.0, 0
	for i, p := range pts {
		out[i] = p
		if math.IsNaN(p.Y) || math.IsInf(p.Y, 0) {
			continue
		}
		last = last*w + (1-w)*p.Y
		n++
		out[i].Y = last / (1 - math.Pow(w, float64(n)))
	}
	return out
}
