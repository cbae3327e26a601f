package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/autoif/autoif/atomicfile"
	"github.com/autoif/autoif/experiment"
	"github.com/autoif/autoif/natsbus"
	"github.com/autoif/autoif/orchestrator"
	"github.com/autoif/autoif/trainer"
)

func experimentCommand() *cli.Command {
	return &cli.Command{
		Name:        "experiment",
		Usage:       "whole experiments on the bundled testbed",
		Subcommands: []*cli.Command{experimentTinyIFCommand(), childTrainerCommand(), childDPOCommand()},
	}
}

func experimentTinyIFCommand() *cli.Command {
	d := experiment.DefaultTinyIF()
	w := d.WarmStart
	return &cli.Command{
		Name:  "tinyif",
		Usage: "warm start (cached), held-out evaluation, online DPO, offline-DPO baseline, RUN_DIR/summary.json and curves (make run)",
		Description: "Builds a tiny byte-level policy and warm-starts it by SFT on tinyIF's partly compliant\n" +
			"examples (cached in --warm-start-dir), measures its held-out pass rate, runs online DPO with\n" +
			"every component in this process over NATS (embedded server unless --nats), measures again,\n" +
			"trains the offline-DPO baseline (pairs sampled once from the warm start, the same steps) and\n" +
			"measures it. RUN_DIR (default runs/tinyif) gets summary.json, metrics.parquet,\n" +
			"samples.parquet and curves.png; a directory left by an earlier experiment is replaced.",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "warm-start-dir", Value: w.Dir, Usage: "warm-start cache (trained when absent or made with other options)"},
			&cli.IntFlag{Name: "layers", Value: w.Shape.Layers, Usage: "policy decoder layers"},
			&cli.IntFlag{Name: "hidden", Value: w.Shape.Hidden, Usage: "policy hidden size"},
			&cli.IntFlag{Name: "heads", Value: w.Shape.Heads, Usage: "policy attention heads"},
			&cli.IntFlag{Name: "intermediate", Value: w.Shape.Intermediate, Usage: "policy SwiGLU width"},
			&cli.IntFlag{Name: "sft-steps", Value: w.Steps, Usage: "warm-start SFT steps"},
			&cli.IntFlag{Name: "sft-batch", Value: w.BatchSize, Usage: "warm-start SFT examples per step"},
			&cli.Float64Flag{Name: "sft-lr", Value: w.LR, Usage: "warm-start SFT peak learning rate (cosine)"},
			&cli.Float64Flag{Name: "comply", Value: w.Comply, Usage: "fraction of warm-start examples that follow their instruction"},
			&cli.StringFlag{Name: "mode", Value: string(d.Mode), Usage: "sync or async"},
			&cli.IntFlag{Name: "steps", Value: d.Steps, Usage: "DPO steps (policy versions), online and offline"},
			&cli.IntFlag{Name: "pairs-per-step", Value: d.PairsPerStep, Usage: "pairs per DPO step"},
			&cli.IntFlag{Name: "batch-size", Value: d.BatchSize, Usage: "pairs per micro-batch"},
			&cli.IntFlag{Name: "k", Value: d.K, Usage: "responses sampled per prompt"},
			&cli.IntFlag{Name: "prompts-per-step", Value: d.PromptsPerStep, Usage: "prompts a rollout worker samples together"},
			&cli.IntFlag{Name: "max-in-flight", Value: d.MaxInFlight, Usage: "prompts queued at most"},
			&cli.Int64Flag{Name: "max-lag", Value: d.MaxLag, Usage: "trainer's policy-lag bound"},
			&cli.IntFlag{Name: "ref-refresh-every", Usage: "online DPO: make the reference a copy of the policy every N versions (0: the warm start, frozen, as in AutoIF; the offline baseline's stays frozen)"},
			&cli.IntFlag{Name: "pairs-ahead", Value: d.PairsAhead, Usage: "async: stop sampling while this many pairs the trainer can still use wait for it, counting those the prompts in flight should make (-1: pairs-per-step × (1 + max-lag); 0: no bound)"},
			&cli.Float64Flag{Name: "lr", Value: d.LR, Usage: "DPO learning rate"},
			&cli.Float64Flag{Name: "beta", Value: d.Beta, Usage: "DPO beta"},
			&cli.IntFlag{Name: "max-new-tokens", Value: d.MaxNewTokens, Usage: "tokens per response at most"},
			&cli.IntFlag{Name: "rollout-workers", Value: d.RolloutWorkers, Usage: "rollout workers"},
			&cli.IntFlag{Name: "reward-workers", Value: d.RewardWorkers, Usage: "sandbox workers"},
			&cli.IntFlag{Name: "eval-prompts", Value: d.EvalPrompts, Usage: "held-out prompts evaluated (0: all)"},
			&cli.Float64Flag{Name: "eval-temperature", Value: d.EvalTemperature, Usage: "evaluation sampling temperature (0: greedy)"},
			&cli.Uint64Flag{Name: "seed", Value: d.Seed, Usage: "seed of everything"},
			&cli.IntFlag{Name: "train-chunk", Usage: "DPO steps per trainer child process, each resuming from the last one's checkpoint (0: train in this process)"},
		},
		Action: experimentTinyIFAction,
	}
}

func experimentTinyIFAction(c *cli.Context) error {
	o := experiment.DefaultTinyIF()
	run, err := runFromFlags(c)
	if err != nil {
		return err
	}
	mode, err := orchestrator.ParseMode(c.String("mode"))
	if err != nil {
		return fmt.Errorf("config: %w", err)
	}
	o.Run, o.Mode = run, mode
	o.RunDir = c.String(flagRunDir)
	if o.RunDir == "" {
		o.RunDir = filepath.Join("runs", "tinyif")
	}
	o.NATS = busOptions(c, "experiment")
	o.NATS.StoreDir = ""
	o.WarmStart.Dir = c.String("warm-start-dir")
	o.WarmStart.Shape.Layers, o.WarmStart.Shape.Hidden = c.Int("layers"), c.Int("hidden")
	o.WarmStart.Shape.Heads, o.WarmStart.Shape.Intermediate = c.Int("heads"), c.Int("intermediate")
	o.WarmStart.Steps, o.WarmStart.BatchSize, o.WarmStart.LR = c.Int("sft-steps"), c.Int("sft-batch"), c.Float64("sft-lr")
	o.WarmStart.Comply = c.Float64("comply")
	o.WarmStart.Seed = c.Uint64("seed")
	o.Steps, o.PairsPerStep, o.BatchSize = c.Int("steps"), c.Int("pairs-per-step"), c.Int("batch-size")
	o.K, o.PromptsPerStep, o.MaxInFlight, o.MaxLag = c.Int("k"), c.Int("prompts-per-step"), c.Int("max-in-flight"), c.Int64("max-lag")
	o.PairsAhead = c.Int("pairs-ahead")
	if o.RefRefreshEvery = c.Int("ref-refresh-every"); o.RefRefreshEvery < 0 {
		return fmt.Errorf("--ref-refresh-every %d: must be 0 (frozen reference) or more", o.RefRefreshEvery)
	}
	o.LR, o.Beta, o.MaxNewTokens = c.Float64("lr"), c.Float64("beta"), c.Int("max-new-tokens")
	o.RolloutWorkers, o.RewardWorkers = c.Int("rollout-workers"), c.Int("reward-workers")
	o.EvalPrompts, o.EvalTemperature, o.Seed = c.Int("eval-prompts"), c.Float64("eval-temperature"), c.Uint64("seed")
	o.Out, o.Logger = c.App.Writer, slog.Default()
	if chunk := c.Int("train-chunk"); chunk > 0 {
		o.RunTrainer = func(ctx context.Context, url string, res *natsbus.RunResources, so trainer.StreamOptions) error {
			r, err := newChildRunner(c, url, chunk)
			if err != nil {
				return err
			}
			return r.trainer(ctx, res, so, true)
		}
		o.RunOfflineDPO = func(ctx context.Context, ro trainer.RunOptions, pairs []*trainer.Pair) error {
			r, err := newChildRunner(c, "", chunk)
			if err != nil {
				return err
			}
			return r.offlineDPO(ctx, ro, pairs)
		}
	}

	sum, err := experiment.RunTinyIF(c.Context, o)
	if err != nil {
		return err
	}
	// The curves are a convenience; a finished experiment is not failed by them.
	if png, err := orchestrator.WriteCurves(context.WithoutCancel(c.Context), o.RunDir, c.App.Writer, orchestrator.CurvesOptions{}); err != nil {
		slog.Warn("curves", "err", err)
	} else {
		slog.Info("curves written", "png", png)
	}
	line, _ := json.Marshal(map[string]any{
		"heldout_pass_rate_before": sum.HeldOutBefore, "heldout_pass_rate_after": sum.HeldOutAfter,
		"offline_dpo_heldout_pass_rate": sum.OfflineHeldOut, "wall_s": sum.WallS, "steps": sum.Steps,
		"pairs": sum.Pairs, "median_hot_swap_latency_s": sum.MedianHotSwapS, "summary": filepath.Join(o.RunDir, experiment.SummaryFile),
	})
	fmt.Fprintf(c.App.Writer, "%s\n", line)
	return nil
}

// The trainer's compiled graphs are not all given back when it drops them (each new batch
// shape costs memory for the life of the process: a 30-step online run on tinyIF grew past
// 17 GB). Until the trainer fixes that, the experiment runs its DPO training in child
// processes of a few steps each, which resume from the checkpoints the trainer writes anyway:
// RunStream's exactly-once and RunDPO's resume make a restart lose and repeat nothing.

// childTrainerCommand is the online trainer as a child process: experiment.TrainStream (metrics
// on the run's metrics stream) until --steps.
func childTrainerCommand() *cli.Command {
	return &cli.Command{
		Name:   "trainer",
		Usage:  "(internal) online trainer child process of an experiment",
		Hidden: true,
		Flags: append([]cli.Flag{
			&cli.StringFlag{Name: "model", Required: true},
			&cli.StringFlag{Name: "out", Required: true},
			&cli.IntFlag{Name: "steps", Required: true},
			&cli.IntFlag{Name: "pairs-per-step", Value: 16},
			&cli.IntFlag{Name: "batch-size", Value: 8},
			&cli.Float64Flag{Name: "lr", Value: 1e-4},
			&cli.Float64Flag{Name: "beta", Value: 0.1},
			&cli.Int64Flag{Name: "max-lag", Value: -1},
			&cli.IntFlag{Name: "ref-refresh-every"},
			&cli.BoolFlag{Name: "memory"},
			&cli.DurationFlag{Name: "ack-wait", Value: time.Minute, Usage: "how long a dead trainer's pulled pairs wait before redelivery"},
			gradCheckpointFlag(),
		}, loraFlags()...),
		Action: func(c *cli.Context) error {
			lc, err := loraConfig(c)
			if err != nil {
				return err
			}
			bus, res, err := joinRun(c, "trainer")
			if err != nil {
				return err
			}
			defer bus.Close()
			to := trainer.DefaultOptions()
			to.BatchSize, to.Optim.LR, to.Loss.Beta = c.Int("batch-size"), c.Float64("lr"), c.Float64("beta")
			to.GradCheckpoint, to.LoRA = c.Bool("grad-checkpoint"), lc
			return experiment.TrainStream(c.Context, bus.JS, res, trainer.StreamOptions{
				ModelDir: c.String("model"), OutDir: c.String("out"), KeepLast: 2, Trainer: to,
				PairsPerStep: c.Int("pairs-per-step"), MaxPolicyLag: c.Int64("max-lag"), Steps: c.Int("steps"),
				RefRefreshEvery: c.Int("ref-refresh-every"),
				Consumer:        natsbus.ConsumerOptions{Durable: "trainer", AckWait: c.Duration("ack-wait")},
			})
		},
	}
}

// childDPOCommand is offline DPO as a child process: trainer.RunDPO on token-id pairs, resuming
// from --out's checkpoints, until --steps.
func childDPOCommand() *cli.Command {
	return &cli.Command{
		Name:   "dpo",
		Usage:  "(internal) offline DPO child process of an experiment",
		Hidden: true,
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "pairs", Required: true},
			&cli.StringFlag{Name: "model", Required: true},
			&cli.StringFlag{Name: "out", Required: true},
			&cli.IntFlag{Name: "steps", Required: true},
			&cli.IntFlag{Name: "batch-size", Value: 8},
			&cli.IntFlag{Name: "grad-accum", Value: 1},
			&cli.Float64Flag{Name: "lr", Value: 1e-4},
			&cli.Float64Flag{Name: "beta", Value: 0.1},
			&cli.Uint64Flag{Name: "seed", Value: 1},
		},
		Action: func(c *cli.Context) error {
			pairs, err := trainer.LoadPairs(c.String("pairs"), trainer.TextOptions{})
			if err != nil {
				return err
			}
			to := trainer.DefaultOptions()
			to.BatchSize, to.Optim.LR, to.Loss.Beta = c.Int("batch-size"), c.Float64("lr"), c.Float64("beta")
			_, _, err = trainer.RunDPO(c.Context, trainer.RunOptions{
				ModelDir: c.String("model"), OutDir: c.String("out"), Trainer: to, GradAccum: c.Int("grad-accum"),
				Steps: c.Int("steps"), SaveEvery: 1, KeepLast: 1, Seed: c.Uint64("seed"),
			}, pairs)
			return err
		},
	}
}

// checkpointStep is the global step of out's newest checkpoint (0 with none).
func checkpointStep(out string) (int, error) {
	dirs, err := trainer.Checkpoints(out)
	if err != nil || len(dirs) == 0 {
		return 0, err
	}
	data, err := os.ReadFile(filepath.Join(dirs[len(dirs)-1], "trainer_state.json"))
	if err != nil {
		return 0, err
	}
	var st trainer.State
	if err := json.Unmarshal(data, &st); err != nil {
		return 0, fmt.Errorf("%s: %w", dirs[len(dirs)-1], err)
	}
	return st.GlobalStep, nil
}

// childRunner runs this binary's hidden subcommands as child processes.
type childRunner struct {
	exe    string
	global []string // global flags: bus, run, logging
	chunk  int
}

func newChildRunner(c *cli.Context, natsURL string, chunk int) (*childRunner, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("child trainer: %w", err)
	}
	g := []string{"--nats", natsURL, "--run", c.String(flagRun), "--log-level", c.String(flagLogLevel)}
	for _, f := range []string{"nats-user", "nats-password", "nats-token", "nats-creds", "nats-ca", "nats-cert", "nats-key"} {
		if v := c.String(f); v != "" {
			g = append(g, "--"+f, v)
		}
	}
	return &childRunner{exe: exe, global: g, chunk: max(1, chunk)}, nil
}

// runChunks runs args with --steps raised by chunk each time until out's checkpoints reach
// steps. An interrupted child is asked to stop (SIGINT) and given time to hand its pairs back.
func (r *childRunner) runChunks(ctx context.Context, what, out string, steps int, args []string) error {
	for {
		done, err := checkpointStep(out)
		if err != nil {
			return fmt.Errorf("%s: %w", what, err)
		}
		if done >= steps || ctx.Err() != nil {
			return nil
		}
		target := min(steps, done+r.chunk)
		argv := append(append(append([]string(nil), r.global...), args...), "--steps", strconv.Itoa(target))
		cmd := exec.CommandContext(ctx, r.exe, argv...)
		cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
		cmd.Cancel = func() error { return cmd.Process.Signal(os.Interrupt) }
		cmd.WaitDelay = 30 * time.Second
		if err := cmd.Run(); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("%s (steps %d to %d): %w", what, done, target, err)
		}
		if after, err := checkpointStep(out); err == nil && after <= done {
			return fmt.Errorf("%s: a child made no progress past step %d", what, done)
		}
	}
}

func (r *childRunner) trainer(ctx context.Context, res *natsbus.RunResources, so trainer.StreamOptions, memory bool) error {
	args := []string{"experiment", "trainer", "--model", so.ModelDir, "--out", so.OutDir,
		"--pairs-per-step", strconv.Itoa(so.PairsPerStep), "--batch-size", strconv.Itoa(so.Trainer.BatchSize),
		"--lr", strconv.FormatFloat(so.Trainer.Optim.LR, 'g', -1, 64), "--beta", strconv.FormatFloat(so.Trainer.Loss.Beta, 'g', -1, 64),
		"--max-lag", strconv.FormatInt(so.MaxPolicyLag, 10), "--ref-refresh-every", strconv.Itoa(so.RefRefreshEvery)}
	if memory {
		args = append(args, "--memory")
	}
	if so.Trainer.GradCheckpoint {
		args = append(args, "--grad-checkpoint")
	}
	if lc := so.Trainer.LoRA; lc != nil {
		args = append(args, "--lora-rank", strconv.Itoa(lc.Rank), "--lora-alpha", strconv.FormatFloat(lc.Alpha, 'g', -1, 64),
			"--lora-dropout", strconv.FormatFloat(lc.Dropout, 'g', -1, 64), "--lora-targets", strings.Join(lc.Targets, ","))
	}
	return r.runChunks(ctx, "trainer", so.OutDir, so.Steps, args)
}

func (r *childRunner) offlineDPO(ctx context.Context, ro trainer.RunOptions, pairs []*trainer.Pair) error {
	if err := os.MkdirAll(ro.OutDir, 0o755); err != nil {
		return err
	}
	path := filepath.Join(ro.OutDir, "pairs.jsonl")
	err := atomicfile.Write(path, 0o644, func(w io.Writer) error {
		enc := json.NewEncoder(w)
		for _, p := range pairs {
			if err := enc.Encode(map[string]any{"id": p.ID, "prompt_ids": p.Prompt, "chosen_ids": p.Chosen, "rejected_ids": p.Rejected}); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("offline dpo: %w", err)
	}
	args := []string{"experiment", "dpo", "--pairs", path, "--model", ro.ModelDir, "--out", ro.OutDir,
		"--batch-size", strconv.Itoa(ro.Trainer.BatchSize), "--grad-accum", strconv.Itoa(ro.GradAccum),
		"--lr", strconv.FormatFloat(ro.Trainer.Optim.LR, 'g', -1, 64), "--beta", strconv.FormatFloat(ro.Trainer.Loss.Beta, 'g', -1, 64),
		"--seed", strconv.FormatUint(ro.Seed, 10)}
	return r.runChunks(ctx, "offline dpo", ro.OutDir, ro.Steps, args)
}
