package main

import (
	"fmt"

	"github.com/urfave/cli/v2"

	"github.com/autoif/autoif/curves"
	"github.com/autoif/autoif/orchestrator"
)

func curvesCommand() *cli.Command {
	return &cli.Command{
		Name:      "curves",
		Usage:     "draw a run's reward and DPO curves in the terminal and as RUN_DIR/curves.png",
		ArgsUsage: "[RUN_DIR]",
		Description: "Reads RUN_DIR/metrics.parquet (default: the run directory of --run / --run-dir) and draws\n" +
			"reward/mean by step and the DPO curves (loss, rewards/margins, rewards/accuracies) as braille\n" +
			"charts, then writes them as a multi-panel PNG next to the metrics. It reads the file only, so\n" +
			"it works during a run (the file is rewritten atomically) and after it.",
		Flags: []cli.Flag{
			&cli.IntFlag{Name: "width", Value: 64, Usage: "chart width in characters"},
			&cli.IntFlag{Name: "height", Value: 12, Usage: "chart height in characters"},
			&cli.BoolFlag{Name: "no-png", Usage: "do not write curves.png"},
		},
		Action: func(c *cli.Context) error {
			if c.NArg() > 1 {
				return fmt.Errorf("curves: want one run directory, got %d arguments %q (flags go before it)", c.NArg(), c.Args().Slice())
			}
			dir := c.Args().First()
			if dir == "" {
				dir = runDir(c)
			}
			png, err := orchestrator.WriteCurves(c.Context, dir, c.App.Writer, orchestrator.CurvesOptions{
				Term:  curves.TermOptions{Width: c.Int("width"), Height: c.Int("height")},
				NoPNG: c.Bool("no-png"),
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
