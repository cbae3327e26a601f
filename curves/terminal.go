package curves

import (
	"fmt"
	"io"
	"math"
	"strings"
)

// TermOptions size a terminal chart; zero values mean the defaults.
type TermOptions struct {
	// Width and Height of the plot area in characters (default 64×12). Each character is a
	// 2×4 braille cell, so the curve has twice and four times that resolution.
	Width, Height int
}

func (o TermOptions) withDefaults() TermOptions {
	if o.Width <= 0 {
		o.Width = 64
	}
	if o.Height <= 0 {
		o.Height = 12
	}
	return o
}

// Terminal writes each panel as a braille chart with a y axis of tick labels, an x axis
// with its range and label, and a legend of each series' last value.
func Terminal(w io.Writer, panels []Panel, o TermOptions) error {
	o = o.withDefaults()
	var b strings.Builder
	for i, p := range panels {
		if i > 0 {
			b.WriteByte('\n')
		}
		termPanel(&b, p, o)
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// brailleBits[y][x] is the dot of pixel (x, y) within a 2×4 braille cell.
var brailleBits = [4][2]rune{{0x01, 0x08}, {0x02, 0x10}, {0x04, 0x20}, {0x40, 0x80}}

func termPanel(b *strings.Builder, p Panel, o TermOptions) {
	fmt.Fprintf(b, "%s\n", p.Title)
	if p.Empty() {
		fmt.Fprintf(b, "  (no data)\n")
		return
	}
	bd := panelBounds(p)
	yt, ylo, yhi := niceTicks(bd.y0, bd.y1, 5)
	W, H := o.Width, o.Height
	pw, ph := 2*W, 4*H
	cells := make([][]rune, H)
	for i := range cells {
		cells[i] = make([]rune, W)
	}
	set := func(x, y int) {
		if x < 0 || y < 0 || x >= pw || y >= ph {
			return
		}
		cells[y/4][x/2] |= brailleBits[y%4][x%2]
	}
	px := func(pt Point) (int, int) {
		x := int(math.Round((pt.X - bd.x0) / (bd.x1 - bd.x0) * float64(pw-1)))
		y := int(math.Round((yhi - pt.Y) / (yhi - ylo) * float64(ph-1)))
		return x, y
	}
	for _, s := range p.Series {
		pts := finite(s.Points)
		for i, pt := range pts {
			x, y := px(pt)
			if i == 0 {
				set(x, y)
				continue
			}
			x0, y0 := px(pts[i-1])
			line(x0, y0, x, y, set)
		}
	}
	// Y labels on the rows nearest each tick.
	labels := make([]string, H)
	step := 0.0
	if len(yt) > 1 {
		step = yt[1] - yt[0]
	}
	lw := 0
	for _, t := range yt {
		row := int(math.Round((yhi - t) / (yhi - ylo) * float64(H-1)))
		if row >= 0 && row < H && labels[row] == "" {
			labels[row] = formatTick(t, step)
			lw = max(lw, len(labels[row]))
		}
	}
	for r := range H {
		axis := "│"
		if labels[r] != "" {
			axis = "┤"
		}
		fmt.Fprintf(b, "%*s %s", lw, labels[r], axis)
		for _, c := range cells[r] {
			if c == 0 {
				b.WriteByte(' ')
			} else {
				b.WriteRune(0x2800 + c)
			}
		}
		b.WriteByte('\n')
	}
	fmt.Fprintf(b, "%*s └%s\n", lw, "", strings.Repeat("─", W))
	// X tick labels where they fit.
	xt, xstep := xTicks(p, bd, 6)
	axisRow := []rune(strings.Repeat(" ", W+2))
	next := 0
	if len(xt) > 0 && xt[0] > bd.x0+1e-9 {
		// The first round tick is off the axis: label where the data starts instead.
		s := formatTick(bd.x0, xstep/10)
		copy(axisRow[1:], []rune(s))
		next = 1 + len(s) + 2
	}
	for _, t := range xt {
		if t < bd.x0-1e-9 || t > bd.x1+1e-9 {
			continue
		}
		s := formatTick(t, xstep)
		col := 1 + int(math.Round((t-bd.x0)/(bd.x1-bd.x0)*float64(W-1))) - len(s)/2
		col = max(col, next)
		if col+len(s) > len(axisRow) {
			continue
		}
		copy(axisRow[col:], []rune(s))
		next = col + len(s) + 1
	}
	fmt.Fprintf(b, "%*s %s\n", lw, "", strings.TrimRight(string(axisRow), " "))
	if p.XLabel != "" {
		fmt.Fprintf(b, "%*s %*s\n", lw, "", (W+len(p.XLabel))/2, p.XLabel)
	}
	for _, s := range p.Series {
		fmt.Fprintf(b, "%*s   %s\n", lw, "", lastPoint(s))
	}
}

// line draws a segment with Bresenham's algorithm.
func line(x0, y0, x1, y1 int, set func(x, y int)) {
	dx, dy := abs(x1-x0), -abs(y1-y0)
	sx, sy := 1, 1
	if x0 > x1 {
		sx = -1
	}
	if y0 > y1 {
		sy = -1
	}
	err := dx + dy
	for {
		set(x0, y0)
		if x0 == x1 && y0 == y1 {
			return
		}
		e2 := 2 * err
		if e2 >= dy {
			err += dy
			x0 += sx
		}
		if e2 <= dx {
			err += dx
			y0 += sy
		}
	}
}

func abs(v int) int {
	if v < 0 {
		return -v
	}
	return v
}
