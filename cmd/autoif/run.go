package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/autoif/autoif/natsbus"
	"github.com/urfave/cli/v2"
)

func runCommand() *cli.Command {
	return &cli.Command{
		Name:  "run",
		Usage: "own a run: start or join its NATS bus, create its streams, policy bucket and checkpoint store",
		Description: "With no --nats URL, an embedded NATS server keeps its JetStream store in the run\n" +
			"directory. The run's resources are created, or checked when they exist, so a run can be\n" +
			"resumed. With --serve the bus stays up until interrupted, for components started as\n" +
			"separate processes (autoif reward serve --nats URL ...).",
		Flags: []cli.Flag{
			&cli.BoolFlag{Name: "serve", Usage: "keep the run's bus up until interrupted"},
			&cli.BoolFlag{Name: "memory", Usage: "keep the run's streams in memory (nothing survives the process)"},
		},
		Action: runAction,
	}
}

func runAction(c *cli.Context) error {
	ctx := c.Context
	run, err := runFromFlags(c)
	if err != nil {
		return err
	}
	dir := runDir(c)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("run directory: %w", err)
	}
	if cfg := c.String(flagConfig); cfg != "" {
		if err := copyFileAtomic(cfg, filepath.Join(dir, "config.yaml")); err != nil {
			return fmt.Errorf("run directory: %w", err)
		}
	}
	start := time.Now()
	bus, err := connectBus(ctx, c, "run")
	if err != nil {
		return err
	}
	defer bus.Close()
	setupCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	res, err := natsbus.EnsureRun(setupCtx, bus.JS, run, natsbus.RunOptions{Memory: c.Bool("memory")})
	if err != nil {
		return err
	}
	version := "none"
	if e, err := res.Policy.Get(setupCtx, "current"); err == nil {
		version = string(e.Value())
	}
	pairs, err := res.Pairs.Info(setupCtx)
	if err != nil {
		return fmt.Errorf("run %s: %w", run.ID, err)
	}
	slog.Info("run ready", "run", run.ID, "dir", dir, "nats", bus.URL(), "embedded", bus.Embedded() != nil,
		"policy_version", version, "pairs_stored", pairs.State.Msgs, "setup", time.Since(start).Round(time.Millisecond))
	fmt.Fprintf(c.App.Writer, "run %s ready on %s\n  prompts  %s (work queue)\n  pairs    %s\n  metrics  %s\n  policy   KV %s, object store %s\n",
		run.ID, bus.URL(), run.Prompts(), run.Pairs(), run.Metrics(), run.PolicyBucket(), run.CheckpointBucket())
	if !c.Bool("serve") {
		return nil
	}
	fmt.Fprintf(c.App.Writer, "serving; join with --nats %s --run %s (Ctrl-C stops)\n", bus.URL(), run.ID)
	<-ctx.Done()
	slog.Info("run stopping", "run", run.ID)
	return nil
}

// copyFileAtomic copies src to dst through a temporary file, so dst is never half-written.
func copyFileAtomic(src, dst string) error {
	data, err := os.ReadFile(src)
	if err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(dst), ".tmp-"+filepath.Base(dst))
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), dst)
}
