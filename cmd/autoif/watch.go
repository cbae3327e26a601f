package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"

	"github.com/urfave/cli/v2"

	"github.com/autoif/autoif/dashboard"
	"github.com/autoif/autoif/orchestrator"
	"github.com/autoif/autoif/tensorboard"
)

// watchFlags are the ways to follow a run while it trains.
func watchFlags() []cli.Flag {
	return []cli.Flag{
		&cli.StringFlag{Name: "http", Usage: "serve a live dashboard (GET /) and Prometheus metrics (GET /metrics) on this address, e.g. 127.0.0.1:8080 (port 0 picks one; off by default)"},
		&cli.StringFlag{Name: "tensorboard", Usage: "write the run's metrics as TensorBoard event files in this directory as they are recorded (tensorboard --logdir DIR)"},
	}
}

// watch is what follows a run: the dashboard's listener, if any, and the observer that
// feeds them.
type watch struct {
	server   *dashboard.Server
	tb       *tensorboard.Observer
	observer orchestrator.Observer
}

func startWatch(ctx context.Context, c *cli.Context, runID string) (*watch, error) {
	w := &watch{}
	if addr := c.String("http"); addr != "" {
		hub := dashboard.NewHub()
		srv, err := dashboard.Start(ctx, addr, hub)
		if err != nil {
			return nil, err
		}
		w.server = srv
		w.observer = hub.Observer(runID)
	}
	if dir := c.String("tensorboard"); dir != "" {
		tb, err := tensorboard.NewObserver(dir)
		if err != nil {
			w.Close()
			return nil, fmt.Errorf("--tensorboard: %w", err)
		}
		w.tb = tb
		w.observer = observers{w.observer, tb}
	}
	return w, nil
}

// observers hands each record to several observers, skipping absent ones.
type observers []orchestrator.Observer

func (obs observers) ObserveMetrics(rows []orchestrator.MetricRow) {
	for _, o := range obs {
		if o != nil {
			o.ObserveMetrics(rows)
		}
	}
}

func (obs observers) ObserveSamples(rows []orchestrator.SampleRow) {
	for _, o := range obs {
		if o != nil {
			o.ObserveSamples(rows)
		}
	}
}

// announce says where the dashboard is.
func (w *watch) announce(out io.Writer) {
	if w.server != nil {
		fmt.Fprintf(out, "dashboard %s  (Prometheus metrics: %smetrics)\n", w.server.URL, w.server.URL)
	}
	if w.tb != nil {
		fmt.Fprintf(out, "tensorboard events %s\n", w.tb.Path())
	}
}

// Close stops the dashboard and closes the event file; a failed write of the latter is
// reported, but the run that recorded it has not failed.
func (w *watch) Close() {
	if w.server != nil {
		w.server.Close()
	}
	if w.tb != nil {
		if err := w.tb.Close(); err != nil {
			slog.Warn("tensorboard events", "path", w.tb.Path(), "err", err)
		}
	}
}

func exportCommand() *cli.Command {
	return &cli.Command{
		Name:  "export",
		Usage: "write a recorded run in another tool's format",
		Subcommands: []*cli.Command{{
			Name:      "tensorboard",
			Usage:     "write RUN_DIR/metrics.parquet as a TensorBoard event file",
			ArgsUsage: "RUN_DIR",
			Description: "Writes the run's scalars (the trainer's under TRL's train/* tags, the orchestrator's\n" +
				"reward/mean, pairs/s, policy/*, the rollout workers' under rollout/*) as a new\n" +
				"events.out.tfevents.* file in --out (default RUN_DIR/tensorboard), for tensorboard --logdir.",
			Flags: []cli.Flag{
				&cli.StringFlag{Name: "out", Usage: "directory for the event file (default RUN_DIR/tensorboard)"},
			},
			Action: func(c *cli.Context) error {
				if c.NArg() != 1 {
					return fmt.Errorf("export tensorboard: want one run directory, got %d arguments %q (flags go before it)", c.NArg(), c.Args().Slice())
				}
				dir := c.Args().First()
				out := c.String("out")
				if out == "" {
					out = filepath.Join(dir, "tensorboard")
				}
				path, n, err := tensorboard.Export(c.Context, dir, out)
				if err != nil {
					return err
				}
				fmt.Fprintf(c.App.Writer, "wrote %d scalars to %s\n", n, path)
				return nil
			},
		}},
	}
}

func dashboardCommand() *cli.Command {
	return &cli.Command{
		Name:      "dashboard",
		Usage:     "serve the dashboard and Prometheus metrics of recorded runs, overlaid, or of a live run on a NATS bus",
		ArgsUsage: "[RUN_DIR...]",
		Description: "Reads each RUN_DIR's metrics.parquet and samples.parquet and serves the same page as\n" +
			"`autoif run --http` (curves of every run overlaid, EMA smoothing, recent samples) until\n" +
			"interrupted. Runs are named by their directories' base names, which must differ.\n" +
			"With --nats URL it also follows the run --run live through its metrics stream (a run on\n" +
			"another machine): its curves, from the run's start, but no samples (those are assembled by\n" +
			"the run's orchestrator; `autoif run --http` shows them).",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "http", Value: "127.0.0.1:8080", Usage: "address to serve on (port 0 picks one)"},
		},
		Action: func(c *cli.Context) error {
			live := c.String(flagNATS) != ""
			if c.NArg() == 0 && !live {
				return fmt.Errorf("dashboard: want run directories, or --nats URL --run ID for a live run")
			}
			hub := dashboard.NewHub()
			for _, dir := range c.Args().Slice() {
				if err := hub.LoadRunDir(c.Context, dir); err != nil {
					return err
				}
			}
			follow := func() error { return nil }
			if live {
				run, err := runFromFlags(c)
				if err != nil {
					return err
				}
				bus, err := connectBus(c.Context, c, "dashboard")
				if err != nil {
					return err
				}
				defer bus.Close()
				stream, err := bus.JS.Stream(c.Context, run.MetricsStream())
				if err != nil {
					return fmt.Errorf("dashboard: run %s on %s: %w", run.ID, bus.URL(), err)
				}
				follow = func() error { return hub.Follow(c.Context, stream, run.ID) }
			}
			srv, err := dashboard.Start(c.Context, c.String("http"), hub)
			if err != nil {
				return err
			}
			defer srv.Close()
			fmt.Fprintf(c.App.Writer, "dashboard %s  (Prometheus metrics: %smetrics); Ctrl-C stops\n", srv.URL, srv.URL)
			if err := follow(); err != nil {
				return err
			}
			<-c.Context.Done()
			return nil
		},
	}
}
