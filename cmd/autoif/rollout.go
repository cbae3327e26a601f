package main

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"path/filepath"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/autoif/autoif/natsbus"
	"github.com/autoif/autoif/reward"
	"github.com/autoif/autoif/rollout"
)

func rolloutCommand() *cli.Command {
	return &cli.Command{
		Name:  "rollout",
		Usage: "rollout worker: sample K responses per prompt, score them, publish preference pairs",
		Description: "Joins a run (--nats URL --run ID), pulls prompt units from its work queue (shared by all\n" +
			"rollout workers of the run), samples K responses per prompt with the current policy, scores\n" +
			"them with the code-execution reward, and publishes AutoIF preference pairs, scored rollouts\n" +
			"and metrics. It follows the run's policy key and swaps to each new version between steps.\n" +
			"With no published version yet, --model is the initial policy (version 0).",
		Flags: append([]cli.Flag{
			&cli.StringFlag{Name: "model", Usage: "initial policy checkpoint (version 0) when the run has no published version"},
			&cli.IntFlag{Name: "k", Value: 8, Usage: "responses sampled per prompt"},
			&cli.Float64Flag{Name: "temperature", Value: 0.8, Usage: "sampling temperature (the paper's 0.8)"},
			&cli.Float64Flag{Name: "top-p", Value: 1, Usage: "nucleus sampling mass (1 keeps all)"},
			&cli.IntFlag{Name: "top-k", Usage: "keep the k most likely tokens (0 keeps all)"},
			&cli.IntFlag{Name: "max-new-tokens", Value: 128, Usage: "tokens per response at most"},
			&cli.IntFlag{Name: "prompts-per-step", Value: 8, Usage: "prompt units sampled together in one step (× K rows in one batch)"},
			&cli.StringFlag{Name: "selection", Value: string(rollout.ModeAutoIF), Usage: "pair rule: autoif (chosen >= 0.5, rejected == 0, up to 2×2), best-worst, or margin"},
			&cli.Float64Flag{Name: "chosen-min", Value: 0.5, Usage: "autoif: lowest score of a chosen response"},
			&cli.IntFlag{Name: "max-chosen", Value: 2, Usage: "autoif: chosen responses per prompt at most"},
			&cli.IntFlag{Name: "max-rejected", Value: 2, Usage: "autoif: rejected responses per prompt at most"},
			&cli.Float64Flag{Name: "margin", Usage: "margin: smallest score difference of a pair (0: any difference)"},
			&cli.IntFlag{Name: "max-pairs", Usage: "margin: pairs per prompt at most (0: no cap)"},
			&cli.Uint64Flag{Name: "seed", Usage: "sampling and selection seed (0: random; workers must not share one)"},
			&cli.BoolFlag{Name: "chat-template", Value: true, Usage: "render prompts with the tokenizer's chat template (--chat-template=false for raw prompts)"},
			&cli.StringFlag{Name: "cache-dir", Usage: "where downloaded policy checkpoints go (default <run dir>/rollout-cache/<name>)"},
			&cli.StringFlag{Name: "durable", Value: "rollout", Usage: "prompt consumer shared by the run's rollout workers"},
			&cli.DurationFlag{Name: "ack-wait", Value: 2 * time.Minute, Usage: "how long a dead worker's prompts wait before another worker gets them"},
			&cli.IntFlag{Name: "threads", Usage: "sampling goroutines (default: number of CPUs)"},
			&cli.StringFlag{Name: "name", Usage: "worker name in logs and metrics (default host-pid)"},
			&cli.StringFlag{Name: "reward", Value: "local", Usage: "local (a sandbox pool in this process) or service (the reward service on the bus: autoif reward serve)"},
			&cli.BoolFlag{Name: "memory", Usage: "the run keeps its streams in memory (as `autoif run --memory`)"},
		}, rewardPoolFlags()...),
		Action: rolloutAction,
	}
}

func rolloutAction(c *cli.Context) error {
	ctx := c.Context
	run, err := runFromFlags(c)
	if err != nil {
		return err
	}
	mode, err := rollout.ParseMode(c.String("selection"))
	if err != nil {
		return err
	}
	if err := checkModelDirs(c, "model"); err != nil {
		return err
	}
	bus, err := connectBus(ctx, c, "rollout")
	if err != nil {
		return err
	}
	defer bus.Close()
	setupCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
	res, err := natsbus.EnsureRun(setupCtx, bus.JS, run, natsbus.RunOptions{Memory: c.Bool("memory")})
	cancel()
	if err != nil {
		return err
	}

	var scorer reward.Scorer
	switch c.String("reward") {
	case "local":
		opts, err := rewardPoolOptions(c)
		if err != nil {
			return err
		}
		pool, err := startRewardPool(c, opts)
		if err != nil {
			return fmt.Errorf("rollout: reward pool: %w", err)
		}
		defer pool.Close()
		scorer = pool
	case "service":
		client, err := reward.NewClient(bus.NC, reward.ClientOptions{Deadline: c.Duration("deadline")})
		if err != nil {
			return fmt.Errorf("rollout: reward client: %w", err)
		}
		defer client.Close()
		scorer = client
	default:
		return fmt.Errorf("--reward %q: want local or service", c.String("reward"))
	}

	name := c.String("name")
	if name == "" {
		name = rollout.DefaultName()
	}
	cacheDir := c.String("cache-dir")
	if cacheDir == "" {
		cacheDir = filepath.Join(runDir(c), "rollout-cache", name)
	}
	opts := rollout.Options{
		K: c.Int("k"), Temperature: c.Float64("temperature"), TopP: c.Float64("top-p"), TopK: c.Int("top-k"),
		MaxNewTokens: c.Int("max-new-tokens"), PromptsPerStep: c.Int("prompts-per-step"),
		Selection: rollout.SelectOptions{
			Mode: mode, ChosenMin: c.Float64("chosen-min"), MaxChosen: c.Int("max-chosen"), MaxRejected: c.Int("max-rejected"),
			Margin: c.Float64("margin"), MaxPairs: c.Int("max-pairs"), Seed: c.Uint64("seed"),
		},
		Seed: c.Uint64("seed"), ChatTemplate: c.Bool("chat-template"), ModelDir: c.String("model"),
		Durable: c.String("durable"), AckWait: c.Duration("ack-wait"), Threads: c.Int("threads"),
		Name: name, CacheDir: cacheDir, Logger: slog.Default(),
	}
	w, err := rollout.New(bus.JS, res, scorer, opts)
	if err != nil {
		return err
	}
	err = w.Run(ctx)
	st, _ := json.Marshal(w.Stats())
	fmt.Fprintf(c.App.Writer, "%s\n", st)
	return err
}
