package curves

import (
	"bytes"
	"fmt"
	"image"
	"image/color"
	"image/png"
	"math"

	"github.com/autoif/autoif/atomicfile"
)

// ImageOptions lay out the PNG; zero values mean the defaults.
type ImageOptions struct {
	// Columns of panels (default 2); PanelWidth×PanelHeight is each panel's size in pixels
	// (default 560×340).
	Columns                 int
	PanelWidth, PanelHeight int
	// Title is drawn across the top when set.
	Title string
}

func (o ImageOptions) withDefaults() ImageOptions {
	if o.Columns <= 0 {
		o.Columns = 2
	}
	if o.PanelWidth <= 0 {
		o.PanelWidth = 560
	}
	if o.PanelHeight <= 0 {
		o.PanelHeight = 340
	}
	return o
}

var (
	colBackground = color.RGBA{255, 255, 255, 255}
	colAxis       = color.RGBA{40, 40, 40, 255}
	colGrid       = color.RGBA{225, 225, 225, 255}
	colText       = color.RGBA{20, 20, 20, 255}
	colMuted      = color.RGBA{110, 110, 110, 255}
	// A colour-blind-safe palette (Okabe-Ito).
	palette = []color.RGBA{{0, 114, 178, 255}, {213, 94, 0, 255}, {0, 158, 115, 255}, {204, 121, 167, 255}, {230, 159, 0, 255}, {86, 180, 233, 255}}
)

// Image draws the panels in a grid.
func Image(panels []Panel, o ImageOptions) *image.RGBA {
	o = o.withDefaults()
	rows := max(1, (len(panels)+o.Columns-1)/o.Columns)
	cols := min(o.Columns, max(1, len(panels)))
	top := 0
	if o.Title != "" {
		top = 34
	}
	img := image.NewRGBA(image.Rect(0, 0, cols*o.PanelWidth, top+rows*o.PanelHeight))
	fill(img, img.Bounds(), colBackground)
	if o.Title != "" {
		drawText(img, (img.Bounds().Dx()-textWidth(o.Title, 2))/2, 10, o.Title, 2, colText)
	}
	for i, p := range panels {
		x0, y0 := (i%o.Columns)*o.PanelWidth, top+(i/o.Columns)*o.PanelHeight
		drawPanel(img, image.Rect(x0, y0, x0+o.PanelWidth, y0+o.PanelHeight), p)
	}
	return img
}

// WritePNG draws the panels and writes them to path atomically.
func WritePNG(path string, panels []Panel, o ImageOptions) error {
	var buf bytes.Buffer
	if err := png.Encode(&buf, Image(panels, o)); err != nil {
		return fmt.Errorf("curves png: %w", err)
	}
	if err := atomicfile.WriteFile(path, buf.Bytes(), 0o644); err != nil {
		return fmt.Errorf("curves png: %w", err)
	}
	return nil
}

func drawPanel(img *image.RGBA, r image.Rectangle, p Panel) {
	const (
		padL, padR, padT, padB = 16, 20, 40, 58
	)
	title := p.Title
	drawText(img, r.Min.X+(r.Dx()-textWidth(title, 2))/2, r.Min.Y+12, title, 2, colText)
	bd := panelBounds(p)
	yt, ylo, yhi := niceTicks(bd.y0, bd.y1, 6)
	xt, xstep := xTicks(p, bd, 7)
	ystep := 1.0
	if len(yt) > 1 {
		ystep = yt[1] - yt[0]
	}
	lw := 0
	for _, t := range yt {
		lw = max(lw, textWidth(formatTick(t, ystep), 1))
	}
	plot := image.Rect(r.Min.X+padL+lw+8, r.Min.Y+padT, r.Max.X-padR, r.Max.Y-padB)
	if p.Empty() {
		strokeRect(img, plot, colGrid)
		msg := "NO DATA"
		drawText(img, plot.Min.X+(plot.Dx()-textWidth(msg, 2))/2, plot.Min.Y+plot.Dy()/2-7, msg, 2, colMuted)
		return
	}
	px := func(x float64) int {
		return plot.Min.X + int(math.Round((x-bd.x0)/(bd.x1-bd.x0)*float64(plot.Dx()-1)))
	}
	py := func(y float64) int {
		return plot.Max.Y - 1 - int(math.Round((y-ylo)/(yhi-ylo)*float64(plot.Dy()-1)))
	}
	// Grid and tick labels.
	for _, t := range yt {
		y := py(t)
		hline(img, plot.Min.X, plot.Max.X-1, y, colGrid)
		hline(img, plot.Min.X-4, plot.Min.X-1, y, colAxis)
		s := formatTick(t, ystep)
		drawText(img, plot.Min.X-7-textWidth(s, 1), y-3, s, 1, colText)
	}
	lastRight := math.MinInt
	for _, t := range xt {
		if t < bd.x0-1e-9 || t > bd.x1+1e-9 {
			continue
		}
		x := px(t)
		vline(img, x, plot.Min.Y, plot.Max.Y-1, colGrid)
		vline(img, x, plot.Max.Y, plot.Max.Y+3, colAxis)
		s := formatTick(t, xstep)
		left := x - textWidth(s, 1)/2
		if left > lastRight+6 {
			drawText(img, left, plot.Max.Y+8, s, 1, colText)
			lastRight = left + textWidth(s, 1)
		}
	}
	// Axes.
	vline(img, plot.Min.X, plot.Min.Y, plot.Max.Y-1, colAxis)
	hline(img, plot.Min.X, plot.Max.X-1, plot.Max.Y-1, colAxis)
	if p.XLabel != "" {
		drawText(img, plot.Min.X+(plot.Dx()-textWidth(p.XLabel, 1))/2, plot.Max.Y+22, p.XLabel, 1, colText)
	}
	// Lines, clipped to the plot; single points and short series get markers too.
	for si, s := range p.Series {
		c := palette[si%len(palette)]
		pts := finite(s.Points)
		set := func(x, y int) {
			for dy := 0; dy < 2; dy++ {
				for dx := 0; dx < 2; dx++ {
					if image.Pt(x+dx, y+dy).In(plot) {
						img.SetRGBA(x+dx, y+dy, c)
					}
				}
			}
		}
		for i, pt := range pts {
			x, y := px(pt.X), py(pt.Y)
			if i > 0 {
				line(px(pts[i-1].X), py(pts[i-1].Y), x, y, set)
			}
			if len(pts) <= 40 {
				fill(img, image.Rect(x-2, y-2, x+3, y+3).Intersect(plot), c)
			}
		}
	}
	// Legend below the axis label: each series' colour, name and last value.
	lx := plot.Min.X
	for si, s := range p.Series {
		c := palette[si%len(palette)]
		text := lastPoint(s)
		if lx+14+textWidth(text, 1) > r.Max.X {
			break
		}
		fill(img, image.Rect(lx, plot.Max.Y+37, lx+10, plot.Max.Y+44), c)
		drawText(img, lx+14, plot.Max.Y+37, text, 1, colText)
		lx += 14 + textWidth(text, 1) + 18
	}
}

func drawText(img *image.RGBA, x, y int, s string, scale int, c color.RGBA) {
	for _, r := range s {
		g := glyph(r)
		for gy := range glyphH {
			for gx := range glyphW {
				if g[gy][gx] == '#' {
					fill(img, image.Rect(x+gx*scale, y+gy*scale, x+(gx+1)*scale, y+(gy+1)*scale), c)
				}
			}
		}
		x += (glyphW + 1) * scale
	}
}

func fill(img *image.RGBA, r image.Rectangle, c color.RGBA) {
	r = r.Intersect(img.Bounds())
	for y := r.Min.Y; y < r.Max.Y; y++ {
		for x := r.Min.X; x < r.Max.X; x++ {
			img.SetRGBA(x, y, c)
		}
	}
}

func hline(img *image.RGBA, x0, x1, y int, c color.RGBA) { fill(img, image.Rect(x0, y, x1+1, y+1), c) }
func vline(img *image.RGBA, x, y0, y1 int, c color.RGBA) { fill(img, image.Rect(x, y0, x+1, y1+1), c) }

func strokeRect(img *image.RGBA, r image.Rectangle, c color.RGBA) {
	hline(img, r.Min.X, r.Max.X-1, r.Min.Y, c)
	hline(img, r.Min.X, r.Max.X-1, r.Max.Y-1, c)
	vline(img, r.Min.X, r.Min.Y, r.Max.Y-1, c)
	vline(img, r.Max.X-1, r.Min.Y, r.Max.Y-1, c)
}
