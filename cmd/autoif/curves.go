package main

import (
	"fmt"

	"github.com/urfave/cli/v2"

	"github.com/autoif/autoif/curves"
	"github.com/autoif/autoif/experiment"
)

func curvesCommand() *cli.Command {
	return &cli.Command{
		Name:      "curves",
		Usage:     "draw runs' reward and DPO curves, overlaid, in the terminal and as a PNG",
		ArgsUsage: "[RUN_DIR...]",
		Description: "Reads each RUN_DIR's metrics.parquet (default: the run directory of --run / --run-dir) and\n" +
			"draws reward/mean by step and the DPO curves (loss, rewards/margins, rewards/accuracies) as\n" +
			"braille charts, one line per run, then writes them as a multi-panel PNG: RUN_DIR/curves.png\n" +
			"for one run, --out (default ./curves.png) for several. --smooth applies TensorBoard's EMA\n" +
			"smoothing. A run of `autoif experiment tinyif` (make run) also gets its held-out evaluations\n" +
			"marked: the warm start's pass rate at step 0, the online and the offline DPO policies' after\n" +
			"the same steps, on one chart. It reads the files only, so it works during a run (they are\n" +
			"rewritten atomically) and after it.",
		Flags: []cli.Flag{
			&cli.IntFlag{Name: "width", Value: 64, Usage: "chart width in characters"},
			&cli.IntFlag{Name: "height", Value: 12, Usage: "chart height in characters"},
			&cli.Float64Flag{Name: "smooth", Usage: "EMA smoothing weight in [0, 1), as TensorBoard's slider (0.9 is heavy; 0: raw)"},
			&cli.StringFlag{Name: "out", Usage: "PNG path (default RUN_DIR/curves.png for one run, curves.png for several)"},
			&cli.BoolFlag{Name: "no-png", Usage: "do not write a PNG"},
		},
		Action: func(c *cli.Context) error {
			dirs := c.Args().Slice()
			if len(dirs) == 0 {
				dirs = []string{runDir(c)}
			}
			png, err := experiment.CompareCurves(c.Context, dirs, c.App.Writer, experiment.CurvesOptions{
				Smooth: c.Float64("smooth"),
				Term:   curves.TermOptions{Width: c.Int("width"), Height: c.Int("height")},
				Out:    c.String("out"),
				NoPNG:  c.Bool("no-png"),
			})
			if err != nil {
				return err
			}
			if png != "" {
				fmt.Fprintf(c.App.Writer, "\nwrote %s\n", png)
			}
			return nil
		},
	}
}
