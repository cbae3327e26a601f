package main

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/autoif/autoif/natsbus"
	"github.com/autoif/autoif/orchestrator"
)

func runCommand() *cli.Command {
	def := orchestrator.DefaultConfig()
	return &cli.Command{
		Name:  "run",
		Usage: "own a run: its NATS bus and resources, the prompt schedule, the policy-lag bound, metrics and budgets",
		Description: "With no --nats URL, an embedded NATS server keeps its JetStream store in the run\n" +
			"directory. The run's resources are created, or checked when they exist. The orchestrator then\n" +
			"enqueues prompt units for the rollout workers (sync: one batch per policy version; async: keep\n" +
			"--max-in-flight prompts queued), records metrics.parquet and samples.parquet in the run\n" +
			"directory, prints a line per step and stops at the first budget reached. A run directory with\n" +
			"a state.json continues where it stopped. Rollout workers and the trainer join with\n" +
			"--nats URL --run ID (autoif rollout, autoif train stream).\n" +
			"With --serve only the bus is kept up, until interrupted, for components started as separate\n" +
			"processes (autoif reward serve --nats URL ...).\n" +
			"The configuration is checked, prompt files included, before anything starts. In a config\n" +
			"file the flags go in the run section:\n\n" +
			"    run-id: exp1\n" +
			"    run:\n" +
			"      prompts: [dpo_query_w_funcs.jsonl]\n" +
			"      mode: async\n" +
			"      max-in-flight: 32\n" +
			"      max-lag: 2\n" +
			"      max-steps: 200",
		Flags: []cli.Flag{
			&cli.BoolFlag{Name: "serve", Usage: "only keep the run's bus up until interrupted (no orchestration)"},
			&cli.BoolFlag{Name: "memory", Usage: "keep the run's streams in memory (nothing survives the process)"},
			&cli.StringSliceFlag{Name: "prompts", Usage: "prompt sources: tinyif, tinyif:heldout, or AutoIF JSONL files (rows with instruction/query/prompt and eval_func; instruction files join query files) (default: tinyif)"},
			&cli.Float64Flag{Name: "min-func-accuracy", Value: def.MinFuncAccuracy, Usage: "drop verification functions whose cross-validation accuracy is below this (0 trusts the file)"},
			&cli.IntFlag{Name: "k", Value: def.K, Usage: "responses sampled per prompt (at least 2)"},
			&cli.StringFlag{Name: "mode", Value: string(def.Mode), Usage: "sync (one batch per policy version, on-policy) or async (sampling and training overlap)"},
			&cli.IntFlag{Name: "max-in-flight", Value: def.MaxInFlight, Usage: "prompts enqueued and not yet sampled at most (sync: the batch size)"},
			&cli.IntFlag{Name: "pairs-per-version", Value: def.PairsPerVersion, Usage: "pairs the trainer needs per policy version (batch size × grad accum × publish-every); sync mode samples more when a batch made fewer"},
			&cli.Int64Flag{Name: "max-lag", Value: def.MaxLag, Usage: "pairs sampled more than this many policy versions ago are stale (dropped by the trainer, counted as pairs/stale)"},
			&cli.Int64Flag{Name: "max-steps", Usage: "stop when the trainer has published this policy version (0: no limit)"},
			&cli.Int64Flag{Name: "max-pairs", Usage: "stop after this many preference pairs (0: no limit)"},
			&cli.DurationFlag{Name: "max-wall", Usage: "stop after this much run time, summed over resumes (0: no limit)"},
			&cli.IntFlag{Name: "epochs", Usage: "passes over the prompt set (0: cycle until a budget stops the run)"},
			&cli.Uint64Flag{Name: "seed", Value: def.Seed, Usage: "shuffle seed of the prompt order (fixed for a run: a resume must use the same)"},
			&cli.DurationFlag{Name: "flush-every", Value: def.FlushEvery, Usage: "how often metrics.parquet, samples.parquet and state.json are rewritten"},
			&cli.IntFlag{Name: "samples-per-step", Value: def.SamplesPerStep, Usage: "prompts per step kept in samples.parquet with their responses, scores and pairs"},
		},
		Action: runAction,
	}
}

// runConfig maps the run command's flags onto the orchestrator's configuration.
func runConfig(c *cli.Context) (orchestrator.Config, error) {
	cfg := orchestrator.DefaultConfig()
	mode, err := orchestrator.ParseMode(c.String("mode"))
	if err != nil {
		return cfg, fmt.Errorf("config: %w", err)
	}
	cfg.RunDir = runDir(c)
	cfg.Prompts = c.StringSlice("prompts")
	cfg.MinFuncAccuracy = c.Float64("min-func-accuracy")
	cfg.K = c.Int("k")
	cfg.Mode = mode
	cfg.MaxInFlight = c.Int("max-in-flight")
	cfg.PairsPerVersion = c.Int("pairs-per-version")
	cfg.MaxLag = c.Int64("max-lag")
	cfg.MaxSteps = c.Int64("max-steps")
	cfg.MaxPairs = c.Int64("max-pairs")
	cfg.MaxWall = c.Duration("max-wall")
	cfg.Epochs = c.Int("epochs")
	cfg.Seed = c.Uint64("seed")
	cfg.FlushEvery = c.Duration("flush-every")
	cfg.SamplesPerStep = c.Int("samples-per-step")
	return cfg, nil
}

func runAction(c *cli.Context) error {
	ctx := c.Context
	run, err := runFromFlags(c)
	if err != nil {
		return err
	}
	// Everything that can be wrong with the configuration fails here, before a directory
	// is made or a server started.
	cfg, err := runConfig(c)
	if err != nil {
		return err
	}
	set, err := orchestrator.Prepare(cfg)
	if err != nil {
		return err
	}
	dir := runDir(c)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("run directory: %w", err)
	}
	if cfgFile := c.String(flagConfig); cfgFile != "" {
		if err := copyFileAtomic(cfgFile, filepath.Join(dir, "config.yaml")); err != nil {
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
	if c.Bool("serve") {
		fmt.Fprintf(c.App.Writer, "serving; join with --nats %s --run %s (Ctrl-C stops)\n", bus.URL(), run.ID)
		<-ctx.Done()
		slog.Info("run stopping", "run", run.ID)
		return nil
	}

	orc, err := orchestrator.New(bus.JS, res, set, cfg, orchestrator.Options{Out: c.App.Writer})
	if err != nil {
		return err
	}
	fmt.Fprintf(c.App.Writer, "orchestrating %d prompts (%d instructions) in %s mode, %d in flight, max lag %d; workers join with --nats %s --run %s\n",
		len(set.Units), set.Instructions(), cfg.Mode, cfg.MaxInFlight, cfg.MaxLag, bus.URL(), run.ID)
	sum, err := orc.Run(ctx)
	if err != nil {
		return err
	}
	// The curves are a convenience; a run that finished is not failed by them.
	if png, err := orchestrator.WriteCurves(context.WithoutCancel(ctx), dir, nil, orchestrator.CurvesOptions{}); err != nil {
		slog.Warn("curves", "err", err)
	} else {
		slog.Info("curves written", "png", png)
	}
	line, _ := json.Marshal(sum)
	fmt.Fprintf(c.App.Writer, "%s\n", line)
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
