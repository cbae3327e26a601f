package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"syscall"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/autoif/autoif/atomicfile"
	"github.com/autoif/autoif/experiment"
	"github.com/autoif/autoif/model"
	"github.com/autoif/autoif/natsbus"
	"github.com/autoif/autoif/orchestrator"
	"github.com/autoif/autoif/proto"
	"github.com/autoif/autoif/reward"
	"github.com/autoif/autoif/rollout"
	"github.com/autoif/autoif/trainer"
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
			"a state.json continues where it stopped.\n" +
			"With the embedded server the rest of the loop runs in this process too, each component on\n" +
			"its own NATS connection as if it were a process: the reward service, --rollout-workers\n" +
			"rollout workers and the trainer (trainer.RunStream), starting from --model (default: the\n" +
			"tinyIF warm start, trained into runs/tinyif-warmstart when absent). With --nats URL only the\n" +
			"orchestrator runs unless those flags ask for components; the others join with --nats URL\n" +
			"--run ID (autoif reward serve, autoif rollout, autoif train stream).\n" +
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
		Flags: append([]cli.Flag{
			&cli.BoolFlag{Name: "serve", Usage: "only keep the run's bus up until interrupted (no orchestration)"},
			&cli.BoolFlag{Name: "memory", Usage: "keep the run's streams in memory (nothing survives the process)"},
			&cli.IntFlag{Name: "replicas", Usage: "copies of the run's streams, bucket and object store across a NATS cluster (--nats URL of a cluster with at least as many members); default 1 for a new run, an existing run's count otherwise"},
			&cli.StringSliceFlag{Name: "prompts", Usage: "prompt sources: tinyif, tinyif:heldout, ifeval:FILE (IFEval rows, scored natively by the fraction of constraints followed; ifeval: alone is the official 541 prompts), or AutoIF JSONL files (rows with instruction/query/prompt and eval_func; instruction files join query files); a comma-separated list, or repeat the flag (default: tinyif)"},
			&cli.Float64Flag{Name: "min-func-accuracy", Value: def.MinFuncAccuracy, Usage: "drop verification functions whose cross-validation accuracy is below this (0 trusts the file)"},
			&cli.IntFlag{Name: "k", Value: def.K, Usage: "responses sampled per prompt (at least 2)"},
			&cli.StringFlag{Name: "mode", Value: string(def.Mode), Usage: "sync (one batch per policy version, on-policy) or async (sampling and training overlap)"},
			&cli.IntFlag{Name: "max-in-flight", Value: def.MaxInFlight, Usage: "prompts enqueued and not yet sampled at most (sync: the batch size)"},
			&cli.IntFlag{Name: "pairs-per-version", Value: def.PairsPerVersion, Usage: "pairs the trainer needs per policy version (batch size × grad accum × publish-every); sync mode samples more when a batch made fewer"},
			&cli.IntFlag{Name: "pairs-ahead", Value: def.PairsAhead, Usage: "async: stop sampling while this many pairs the trainer can still use wait for it, counting those the prompts in flight should make (-1: pairs-per-version × (1 + max-lag); 0: no bound)"},
			&cli.Int64Flag{Name: "max-lag", Value: def.MaxLag, Usage: "pairs sampled more than this many policy versions ago are stale (dropped by the trainer, counted as pairs/stale)"},
			&cli.Int64Flag{Name: "max-steps", Usage: "stop when the trainer has published this policy version (0: no limit)"},
			&cli.Int64Flag{Name: "max-pairs", Usage: "stop after this many preference pairs (0: no limit)"},
			&cli.DurationFlag{Name: "max-wall", Usage: "stop after this much run time, summed over resumes (0: no limit)"},
			&cli.IntFlag{Name: "epochs", Usage: "passes over the prompt set (0: cycle until a budget stops the run)"},
			&cli.Uint64Flag{Name: "seed", Value: def.Seed, Usage: "shuffle seed of the prompt order (fixed for a run: a resume must use the same)"},
			&cli.DurationFlag{Name: "flush-every", Value: def.FlushEvery, Usage: "how often metrics.parquet, samples.parquet and state.json are rewritten"},
			&cli.IntFlag{Name: "samples-per-step", Value: def.SamplesPerStep, Usage: "prompts per step kept in samples.parquet with their responses, scores and pairs"},
			&cli.IntFlag{Name: "warn-idle-prompts", Value: def.WarnIdlePrompts, Usage: "after this many prompts in a row made no preference pair, say why (ties, functions raising, bad returns, timeouts, prompts too long); 0: never"},
			&cli.IntFlag{Name: "max-idle-prompts", Value: def.MaxIdlePrompts, Usage: "stop the run with an error, saying why, after this many prompts in a row made no preference pair; 0: never"},
		}, append(watchFlags(), inProcessFlags()...)...),
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
	cfg.Prompts = listFlag(c.StringSlice("prompts"))
	cfg.MinFuncAccuracy = c.Float64("min-func-accuracy")
	cfg.K = c.Int("k")
	cfg.Mode = mode
	cfg.MaxInFlight = c.Int("max-in-flight")
	cfg.PairsAhead = c.Int("pairs-ahead")
	cfg.PairsPerVersion = c.Int("pairs-per-version")
	cfg.MaxLag = c.Int64("max-lag")
	cfg.MaxSteps = c.Int64("max-steps")
	cfg.MaxPairs = c.Int64("max-pairs")
	cfg.MaxWall = c.Duration("max-wall")
	cfg.Epochs = c.Int("epochs")
	cfg.Seed = c.Uint64("seed")
	cfg.FlushEvery = c.Duration("flush-every")
	cfg.SamplesPerStep = c.Int("samples-per-step")
	cfg.WarnIdlePrompts = c.Int("warn-idle-prompts")
	cfg.MaxIdlePrompts = c.Int("max-idle-prompts")
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
	ip, err := inProcessPlan(c)
	if err != nil {
		return err
	}
	if ip.any() {
		if err := checkModelDirs(c, "model"); err != nil {
			return err
		}
	}
	// The listener is taken before anything is written, so a port in use fails cleanly.
	watch, err := startWatch(ctx, c, run.ID)
	if err != nil {
		return err
	}
	defer watch.Close()
	dir := runDir(c)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("run directory: %w", err)
	}
	if cfgFile := c.String(flagConfig); cfgFile != "" {
		if err := atomicfile.Copy(cfgFile, filepath.Join(dir, "config.yaml"), 0o644); err != nil {
			return fmt.Errorf("run directory: %w", err)
		}
	}
	var level slog.Level
	_ = level.UnmarshalText([]byte(c.String(flagLogLevel))) // checked by setupLogging
	live, err := startLive(c.App.Writer, c.App.Writer == io.Writer(os.Stdout) && isTerminal(os.Stdout), dir, level)
	if err != nil {
		return err
	}
	defer live.Close()
	// Everything the run prints goes above the status line.
	defer func(w io.Writer) { c.App.Writer = w }(c.App.Writer)
	c.App.Writer = live.Out
	start := time.Now()
	bus, err := connectBus(ctx, c, "run")
	if err != nil {
		return err
	}
	defer bus.Close()
	setupCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	res, err := natsbus.EnsureRun(setupCtx, bus.JS, run, natsbus.RunOptions{Memory: c.Bool("memory"), Replicas: c.Int("replicas")})
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
	watch.announce(c.App.Writer)
	if c.Bool("serve") {
		fmt.Fprintf(c.App.Writer, "serving; join with --nats %s --run %s (Ctrl-C stops)\n", bus.URL(), run.ID)
		<-ctx.Done()
		slog.Info("run stopping", "run", run.ID)
		return nil
	}

	var sum orchestrator.Summary
	if ip.any() {
		lo, err := ip.loopOptions(ctx, c, run, bus, set, cfg, live.OnProgress)
		if err != nil {
			return err
		}
		lo.Orchestrator.Observer = watch.observer
		loop, err := experiment.NewLoop(lo)
		if err != nil {
			return err
		}
		mode := "sync mode (on-policy)"
		if cfg.Mode == orchestrator.ModeAsync {
			mode = fmt.Sprintf("async mode (max lag %d)", cfg.MaxLag)
		}
		workers, trainerHere := "rollout workers", "no trainer"
		if lo.RolloutWorkers == 1 {
			workers = "rollout worker"
		}
		if lo.Trainer != nil {
			trainerHere = "the trainer"
		}
		fmt.Fprintf(c.App.Writer, "orchestrating %d prompts (%d instructions) in %s, %d in flight; in this process: reward %s, %d %s, %s\n",
			len(set.Units), set.Instructions(), mode, cfg.MaxInFlight, lo.RewardMode, lo.RolloutWorkers, workers, trainerHere)
		if sum, err = loop.Run(ctx); err != nil {
			return err
		}
	} else {
		orc, err := orchestrator.New(bus.JS, res, set, cfg, orchestrator.Options{Out: c.App.Writer, OnProgress: live.OnProgress, Observer: watch.observer})
		if err != nil {
			return err
		}
		fmt.Fprintf(c.App.Writer, "orchestrating %d prompts (%d instructions) in %s mode, %d in flight, max lag %d; workers join with --nats %s --run %s\n",
			len(set.Units), set.Instructions(), cfg.Mode, cfg.MaxInFlight, cfg.MaxLag, bus.URL(), run.ID)
		if sum, err = orc.Run(ctx); err != nil {
			return err
		}
	}
	// The curves are a convenience; a run that finished is not failed by them.
	if png, err := orchestrator.WriteCurves(context.WithoutCancel(ctx), dir, nil, orchestrator.CurvesOptions{}); err != nil {
		slog.Warn("curves", "err", err)
	} else {
		slog.Info("curves written", "png", png)
	}
	var self, children syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &self)
	syscall.Getrusage(syscall.RUSAGE_CHILDREN, &children)
	sum.PeakRSSMB = float64(max(self.Maxrss, children.Maxrss)) / 1024 // KiB on Linux
	if t := sum.Timing; t != nil && t.Versions > 0 {
		fmt.Fprintf(c.App.Writer, "per policy version: sampling %.1fs, scoring %.1fs, training %.1fs; hot-swap latency %.2fs mean, %.2fs max (%d swaps); peak RSS %.0f MB\n",
			t.SampleS, t.ScoreS, t.TrainS, t.SwapLatencyS, t.SwapLatencyMx, t.Swaps, sum.PeakRSSMB)
	}
	line, _ := json.Marshal(sum)
	fmt.Fprintf(c.App.Writer, "%s\n", line)
	return nil
}

// inProcessFlags choose the components `autoif run` starts next to its orchestrator. Their
// defaults depend on the bus: with the embedded server nobody else can join easily, so the
// whole loop runs here; with --nats URL the components are expected as separate processes.
func inProcessFlags() []cli.Flag {
	d := experiment.DefaultTinyIF()
	return append([]cli.Flag{
		&cli.IntFlag{Name: "rollout-workers", Usage: "rollout workers started in this process (default: 1 with the embedded server, 0 with --nats)"},
		&cli.BoolFlag{Name: "trainer", Usage: "start the trainer in this process (default: with the embedded server; --trainer=false to join one as a process)"},
		&cli.StringFlag{Name: "reward", Usage: "reward for in-process rollout workers: service (a reward service in this process, reached over NATS), local (a sandbox pool called directly) or external (autoif reward serve elsewhere); default service with the embedded server, external with --nats"},
		&cli.IntFlag{Name: "reward-workers", Usage: "sandbox workers of an in-process reward pool (default: number of CPUs)"},
		returnsFlag(),
		unsafeNoSandboxFlag(),
		&cli.StringFlag{Name: "model", Usage: "starting policy and frozen reference of in-process components (default: the tinyIF warm start in --warm-start-dir, trained when absent)"},
		&cli.StringFlag{Name: "warm-start-dir", Value: d.WarmStart.Dir, Usage: "where the default tinyIF warm start is cached"},
		&cli.IntFlag{Name: "rollout-prompts-per-step", Value: d.PromptsPerStep, Usage: "prompts an in-process rollout worker samples together"},
		&cli.IntFlag{Name: "max-new-tokens", Value: d.MaxNewTokens, Usage: "tokens per sampled response at most"},
		&cli.Float64Flag{Name: "temperature", Value: d.Temperature, Usage: "sampling temperature (the paper's 0.8)"},
		&cli.StringFlag{Name: "selection", Value: string(rollout.ModeAutoIF), Usage: "in-process rollout workers' pair rule: autoif (chosen >= 0.5, rejected == 0, up to 2×2), best-worst, or margin (fractional scores such as IFEval's fraction of constraints followed rarely reach 0: use best-worst or margin)"},
		&cli.Float64Flag{Name: "lr", Value: d.LR, Usage: "in-process trainer: DPO learning rate (constant)"},
		&cli.Float64Flag{Name: "beta", Value: d.Beta, Usage: "in-process trainer: DPO beta"},
		&cli.IntFlag{Name: "batch-size", Value: d.BatchSize, Usage: "in-process trainer: pairs per micro-batch (a step takes --pairs-per-version pairs)"},
		&cli.IntFlag{Name: "ref-refresh-every", Usage: "in-process trainer: make the DPO reference a copy of the policy every N published versions (0: the starting policy, frozen, as in AutoIF)"},
		gradCheckpointFlag(),
		&cli.IntFlag{Name: "train-chunk", Usage: "in-process trainer: run it as child processes of this many steps each, resuming from its checkpoints, which also exercises resume (0: a goroutine of this process)"},
	}, loraFlags()...)
}

// inProcess is what `autoif run` starts besides its orchestrator.
type inProcess struct {
	rolloutWorkers int
	trainer        bool
	reward         string
	returns        reward.Returns
	selection      rollout.Mode
	lora           *model.LoRAConfig
}

func (ip inProcess) any() bool { return ip.rolloutWorkers > 0 || ip.trainer }

func inProcessPlan(c *cli.Context) (inProcess, error) {
	embedded := c.String(flagNATS) == ""
	ip := inProcess{rolloutWorkers: c.Int("rollout-workers"), trainer: c.Bool("trainer"), reward: c.String("reward")}
	if !c.IsSet("rollout-workers") && embedded {
		ip.rolloutWorkers = 1
	}
	if !c.IsSet("trainer") {
		ip.trainer = embedded
	}
	if ip.reward == "" {
		ip.reward = experiment.RewardExternal
		if embedded {
			ip.reward = experiment.RewardService
		}
	}
	if ip.rolloutWorkers < 0 {
		return ip, fmt.Errorf("--rollout-workers %d: want 0 or more", ip.rolloutWorkers)
	}
	if n := c.Int("ref-refresh-every"); n < 0 {
		return ip, fmt.Errorf("--ref-refresh-every %d: must be 0 (frozen reference) or more", n)
	}
	switch ip.reward {
	case experiment.RewardService, experiment.RewardLocal, experiment.RewardExternal:
	default:
		return ip, fmt.Errorf("--reward %q: want service, local or external", ip.reward)
	}
	returns, err := reward.ParseReturns(c.String("returns"))
	if err != nil {
		return ip, fmt.Errorf("--returns: %w", err)
	}
	ip.returns = returns
	if ip.selection, err = rollout.ParseMode(c.String("selection")); err != nil {
		return ip, fmt.Errorf("--selection: %w", err)
	}
	if ip.lora, err = loraConfig(c); err != nil {
		return ip, err
	}
	return ip, nil
}

// loopOptions wires the in-process components to the run, each on its own connection to the
// bus the orchestrator uses.
func (ip inProcess) loopOptions(ctx context.Context, c *cli.Context, run proto.Run, bus *natsbus.Bus, set *orchestrator.PromptSet, cfg orchestrator.Config, onProgress func(orchestrator.Progress)) (experiment.LoopOptions, error) {
	dir := runDir(c)
	modelDir := c.String("model")
	if modelDir == "" {
		ws := experiment.DefaultWarmStart()
		ws.Dir = c.String("warm-start-dir")
		fmt.Fprintf(c.App.Writer, "no --model: using the tinyIF warm start in %s\n", ws.Dir)
		info, cached, err := experiment.EnsureWarmStart(ctx, ws)
		if err != nil {
			return experiment.LoopOptions{}, err
		}
		slog.Info("warm start", "dir", ws.Dir, "params", info.Params, "cached", cached)
		modelDir = ws.Dir
	}
	no := busOptions(c, "run")
	no.URL, no.StoreDir = bus.URL(), ""
	lo := experiment.LoopOptions{
		NATS: no, RunOptions: natsbus.RunOptions{Memory: c.Bool("memory"), Replicas: c.Int("replicas")}, Run: run,
		Set: set, Config: cfg, Orchestrator: orchestrator.Options{Out: c.App.Writer, OnProgress: onProgress},
		RewardMode: ip.reward, Reward: reward.Options{Workers: c.Int("reward-workers"), Returns: ip.returns, UnsafeNoSandbox: c.Bool("unsafe-no-sandbox")},
		RolloutWorkers: ip.rolloutWorkers,
		Rollout: rollout.Options{
			K: cfg.K, Temperature: c.Float64("temperature"), MaxNewTokens: c.Int("max-new-tokens"),
			PromptsPerStep: c.Int("rollout-prompts-per-step"), Seed: cfg.Seed, ChatTemplate: true,
			Selection: rollout.SelectOptions{Mode: ip.selection},
			ModelDir:  modelDir, CacheDir: filepath.Join(dir, "rollout-cache"), Name: "rollout",
		},
	}
	if ip.trainer {
		to := trainer.DefaultOptions()
		to.Optim.LR, to.Loss.Beta, to.BatchSize = c.Float64("lr"), c.Float64("beta"), c.Int("batch-size")
		to.GradCheckpoint = c.Bool("grad-checkpoint")
		to.LoRA = ip.lora
		if to.Optim.LR <= 0 || to.Loss.Beta <= 0 || to.BatchSize <= 0 {
			return lo, fmt.Errorf("--lr %g, --beta %g and --batch-size %d must be positive", to.Optim.LR, to.Loss.Beta, to.BatchSize)
		}
		lo.Trainer = &trainer.StreamOptions{
			ModelDir: modelDir, OutDir: filepath.Join(dir, "trainer"), Trainer: to,
			PairsPerStep: cfg.PairsPerVersion, MaxPolicyLag: cfg.TrainerMaxLag(), Steps: int(cfg.MaxSteps),
			RefRefreshEvery: c.Int("ref-refresh-every"),
		}
		if chunk := c.Int("train-chunk"); chunk > 0 {
			memory := c.Bool("memory")
			lo.RunTrainer = func(ctx context.Context, url string, res *natsbus.RunResources, so trainer.StreamOptions) error {
				r, err := newChildRunner(c, url, chunk)
				if err != nil {
					return err
				}
				if so.Steps == 0 {
					// No step budget: children of chunk steps each until the run ends.
					so.Steps = math.MaxInt
				}
				return r.trainer(ctx, res, so, memory)
			}
		}
	}
	return lo, nil
}
