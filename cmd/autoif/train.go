package main

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/autoif/autoif/model"
	"github.com/autoif/autoif/natsbus"
	"github.com/autoif/autoif/tokenizer"
	"github.com/autoif/autoif/torchref"
	"github.com/autoif/autoif/trainer"
)

func trainCommand() *cli.Command {
	return &cli.Command{
		Name:  "train",
		Usage: "DPO and SFT training (offline files, or online from the run's pair stream)",
		Subcommands: []*cli.Command{
			trainDPOCommand(),
			trainSFTCommand(),
			trainStreamCommand(),
			trainCheckLedgerCommand(),
		},
	}
}

// optimFlags are shared by every training command.
func optimFlags(defaultLR float64) []cli.Flag {
	return append([]cli.Flag{
		&cli.StringFlag{Name: "model", Usage: "starting policy checkpoint directory (Hugging Face layout; required)"},
		&cli.StringFlag{Name: "out", Usage: "output directory: checkpoint-N/ directories and the final model (required)"},
		&cli.StringFlag{Name: "optim", Value: "adamw", Usage: "adamw or sgd"},
		&cli.Float64Flag{Name: "lr", Value: defaultLR, Usage: "peak learning rate"},
		&cli.StringFlag{Name: "schedule", Value: "constant", Usage: "constant, linear or cosine (the last two decay to 0 at the last step)"},
		&cli.IntFlag{Name: "warmup-steps", Usage: "linear warmup steps before the schedule"},
		&cli.Float64Flag{Name: "weight-decay", Usage: "weight decay (decoupled for adamw)"},
		&cli.Float64Flag{Name: "momentum", Usage: "sgd momentum"},
		&cli.Float64Flag{Name: "max-grad-norm", Value: 1, Usage: "clip the global gradient norm to this (0 = no clipping)"},
		&cli.IntFlag{Name: "batch-size", Value: 4, Usage: "pairs (sft: examples) per micro-batch"},
		&cli.IntFlag{Name: "grad-accum", Value: 1, Usage: "micro-batches per optimiser step"},
		gradCheckpointFlag(),
		&cli.IntFlag{Name: "steps", Usage: "optimiser steps in all (default: --epochs over the data)"},
		&cli.IntFlag{Name: "epochs", Value: 1, Usage: "passes over the data when --steps is not given"},
		&cli.IntFlag{Name: "max-len", Usage: "skip (and count) inputs longer than this many tokens (default: the model's max_position_embeddings)"},
		&cli.IntFlag{Name: "save-every", Usage: "write a checkpoint every N steps (0: only at the end)"},
		&cli.IntFlag{Name: "keep-last", Value: 3, Usage: "checkpoints kept (older ones are deleted; -1 keeps all)"},
		&cli.Uint64Flag{Name: "seed", Value: 1, Usage: "data shuffle seed (and a LoRA adapter's initialisation and dropout masks)"},
		&cli.BoolFlag{Name: "no-shuffle", Usage: "visit the data in file order"},
		&cli.BoolFlag{Name: "no-resume", Usage: "start afresh even if --out holds checkpoints"},
		&cli.BoolFlag{Name: "chat", Value: true, Usage: "render text prompts through the tokenizer's chat template (--chat=false: plain text)"},
		&cli.BoolFlag{Name: "no-eos", Usage: "do not end text responses with the tokenizer's EOS token"},
	}, loraFlags()...)
}

// loraFlags are the LoRA options of every command that trains; their defaults are PEFT's
// LoraConfig's (alpha 8, dropout 0), except that the adapter targets all seven projections.
func loraFlags() []cli.Flag {
	return []cli.Flag{
		&cli.IntFlag{Name: "lora-rank", Usage: "train a LoRA adapter of this rank on the frozen model instead of the model itself (0: full fine-tuning); checkpoints and the output are PEFT adapters"},
		&cli.Float64Flag{Name: "lora-alpha", Value: 8, Usage: "LoRA alpha: the adapter's output is scaled by alpha/rank (PEFT's default 8)"},
		&cli.Float64Flag{Name: "lora-dropout", Usage: "dropout on the adapter's input while training, 0 <= p < 1 (PEFT's default 0)"},
		&cli.StringFlag{Name: "lora-targets", Value: strings.Join(model.LoRATargets, ","), Usage: "projections the adapter adapts, comma-separated (default: all seven)"},
	}
}

// loraConfig reads the LoRA flags: nil when --lora-rank is 0.
func loraConfig(c *cli.Context) (*model.LoRAConfig, error) {
	rank := c.Int("lora-rank")
	if rank == 0 {
		for _, f := range []string{"lora-alpha", "lora-dropout", "lora-targets"} {
			if c.IsSet(f) {
				return nil, fmt.Errorf("--%s needs --lora-rank", f)
			}
		}
		return nil, nil
	}
	lc := &model.LoRAConfig{Rank: rank, Alpha: c.Float64("lora-alpha"), Dropout: c.Float64("lora-dropout"),
		Targets: listFlag([]string{c.String("lora-targets")})}
	if err := lc.Validate(); err != nil {
		return nil, err
	}
	return lc, nil
}

func dpoFlags() []cli.Flag {
	return []cli.Flag{
		&cli.StringFlag{Name: "ref", Usage: "frozen reference checkpoint (default: --model)"},
		&cli.StringFlag{Name: "loss", Value: trainer.LossSigmoid, Usage: "sigmoid (DPO), ipo or hinge"},
		&cli.Float64Flag{Name: "beta", Value: 0.1, Usage: "DPO beta (IPO tau)"},
		&cli.Float64Flag{Name: "label-smoothing", Usage: "conservative DPO label smoothing in [0, 0.5)"},
		&cli.BoolFlag{Name: "length-normalize", Usage: "average completion log-probs over tokens instead of summing"},
		&cli.Float64Flag{Name: "nll-alpha", Usage: "add alpha × the chosen response's mean token NLL (RPO)"},
	}
}

func trainDPOCommand() *cli.Command {
	return &cli.Command{
		Name:  "dpo",
		Usage: "DPO on a pairs file: AutoIF dpo_pairs.jsonl, TRL prompt/chosen/rejected JSONL, or the same with *_ids token ids",
		Flags: append(append(optimFlags(1e-6), dpoFlags()...),
			&cli.StringFlag{Name: "pairs", Usage: "pairs JSONL file (required)"}),
		Action: func(c *cli.Context) error {
			if err := requireModelFlags(c, "model", "pairs", "out"); err != nil {
				return err
			}
			text, err := textOptions(c)
			if err != nil {
				return err
			}
			pairs, err := trainer.LoadPairs(c.String("pairs"), text)
			if err != nil {
				return err
			}
			ro, err := runOptions(c)
			if err != nil {
				return err
			}
			start := time.Now()
			tr, m, err := trainer.RunDPO(c.Context, ro, pairs)
			if err != nil {
				return err
			}
			return printTrainSummary(c, tr, m, start)
		},
	}
}

func trainSFTCommand() *cli.Command {
	return &cli.Command{
		Name:  "sft",
		Usage: "supervised fine-tuning (response NLL) on alpaca-style JSON, or JSONL prompt/response or *_ids",
		Flags: append(optimFlags(1e-5), &cli.StringFlag{Name: "data", Usage: "SFT data file (required)"}),
		Action: func(c *cli.Context) error {
			if err := requireModelFlags(c, "model", "data", "out"); err != nil {
				return err
			}
			text, err := textOptions(c)
			if err != nil {
				return err
			}
			examples, err := trainer.LoadSFT(c.String("data"), text)
			if err != nil {
				return err
			}
			ro, err := runOptions(c)
			if err != nil {
				return err
			}
			start := time.Now()
			tr, m, err := trainer.RunSFT(c.Context, ro, examples)
			if err != nil {
				return err
			}
			return printTrainSummary(c, tr, m, start)
		},
	}
}

func trainStreamCommand() *cli.Command {
	flags := append(optimFlags(1e-6), dpoFlags()...)
	flags = append(flags,
		&cli.IntFlag{Name: "publish-every", Value: 1, Usage: "publish a new policy version every N steps"},
		&cli.Int64Flag{Name: "max-policy-lag", Value: -1, Usage: "skip pairs sampled more than N versions ago (0: only the current policy's, as a sync-mode run needs; -1 keeps all); use the run's max-lag for an async run"},
		&cli.IntFlag{Name: "ref-refresh-every", Usage: "make the DPO reference a copy of the policy every N published versions (0: the starting policy, or --ref, frozen, as in AutoIF)"},
		&cli.StringFlag{Name: "durable", Value: "trainer", Usage: "JetStream durable consumer name"},
		&cli.DurationFlag{Name: "ack-wait", Value: 5 * time.Minute, Usage: "how long a pulled batch may wait for its checkpoint before redelivery"},
		&cli.BoolFlag{Name: "memory", Usage: "the run's streams are in memory (as `autoif run --memory` makes them)"},
	)
	return &cli.Command{
		Name:  "stream",
		Usage: "online DPO: pull pairs from the run's JetStream stream, publish each new policy to its object store and KV",
		Flags: flags,
		Action: func(c *cli.Context) error {
			if err := requireModelFlags(c, "model", "out"); err != nil {
				return err
			}
			if err := checkModelDirs(c, "model", "ref"); err != nil {
				return err
			}
			ro, err := runOptions(c)
			if err != nil {
				return err
			}
			if c.Bool("no-resume") {
				// The checkpoints hold the pairs applied but not yet acknowledged and the ledger's
				// length: starting over in the same directory would apply pairs twice.
				return errors.New("train stream always resumes from --out's checkpoints, which keep its pairs exactly-once; to start over, use a new --out (and a new --durable consumer)")
			}
			bus, res, err := joinRun(c, "trainer")
			if err != nil {
				return err
			}
			defer bus.Close()
			return trainer.RunStream(c.Context, res, trainer.StreamOptions{
				ModelDir: ro.ModelDir, RefDir: ro.RefDir, OutDir: ro.OutDir, KeepLast: ro.KeepLast,
				Trainer: ro.Trainer, PairsPerStep: ro.Trainer.BatchSize * ro.GradAccum,
				PublishEvery: c.Int("publish-every"), MaxPolicyLag: c.Int64("max-policy-lag"), Steps: ro.Steps,
				RefRefreshEvery: c.Int("ref-refresh-every"),
				Consumer:        natsbus.ConsumerOptions{Durable: c.String("durable"), AckWait: c.Duration("ack-wait")},
				OnStep: func(m trainer.Metrics, s trainer.StreamStep) {
					slog.Info("step", "step", m.Step, "loss", m.Loss, "rewards/accuracies", m.Accuracy,
						"rewards/margins", m.RewardsMargins, "grad_norm", m.GradNorm, "policy/version", s.Version,
						"policy/lag", s.MeanLag, "policy/lag_max", s.MaxLag, "waited_for_pairs", s.Waited.Round(time.Millisecond))
				},
			})
		},
	}
}

// gradCheckpointFlag is --grad-checkpoint (trainer.Options.GradCheckpoint) of every command
// that trains.
func gradCheckpointFlag() cli.Flag {
	return &cli.BoolFlag{Name: "grad-checkpoint", Usage: "recompute each decoder layer's forward in the backward instead of keeping its activations (about a quarter more compute; the activations of a layer's input only)"}
}

func textOptions(c *cli.Context) (trainer.TextOptions, error) {
	o := trainer.TextOptions{Chat: c.Bool("chat"), NoEOS: c.Bool("no-eos")}
	if _, err := os.Stat(filepath.Join(c.String("model"), "tokenizer.json")); err == nil {
		tok, err := tokenizer.Load(c.String("model"))
		if err != nil {
			return o, err
		}
		o.Tokenizer = tok
	}
	return o, nil
}

// runOptions maps the shared flags onto trainer.RunOptions, with a progress bar on a
// terminal and a plain line per step otherwise.
func runOptions(c *cli.Context) (trainer.RunOptions, error) {
	opts := trainer.DefaultOptions()
	opts.Optim = trainer.OptimOptions{
		Name: c.String("optim"), LR: c.Float64("lr"), Schedule: c.String("schedule"),
		WarmupSteps: c.Int("warmup-steps"), WeightDecay: c.Float64("weight-decay"),
		Momentum: c.Float64("momentum"), MaxGradNorm: c.Float64("max-grad-norm"),
	}
	if opts.Optim.LR <= 0 {
		return trainer.RunOptions{}, fmt.Errorf("--lr %g: must be positive", opts.Optim.LR)
	}
	if c.Command.Name != "sft" {
		opts.Loss = trainer.LossOptions{
			Type: c.String("loss"), Beta: c.Float64("beta"), LabelSmoothing: c.Float64("label-smoothing"),
			LengthNormalize: c.Bool("length-normalize"), NLLAlpha: c.Float64("nll-alpha"),
		}
		if opts.Loss.Beta <= 0 {
			return trainer.RunOptions{}, fmt.Errorf("--beta %g: must be positive", opts.Loss.Beta)
		}
	}
	opts.BatchSize = c.Int("batch-size")
	opts.MaxLen = c.Int("max-len")
	opts.GradCheckpoint = c.Bool("grad-checkpoint")
	opts.Seed = c.Uint64("seed")
	lc, err := loraConfig(c)
	if err != nil {
		return trainer.RunOptions{}, err
	}
	opts.LoRA = lc
	if opts.BatchSize <= 0 || c.Int("grad-accum") <= 0 {
		return trainer.RunOptions{}, errors.New("--batch-size and --grad-accum must be positive")
	}
	ro := trainer.RunOptions{
		ModelDir: c.String("model"), OutDir: c.String("out"), Trainer: opts,
		GradAccum: c.Int("grad-accum"), Steps: c.Int("steps"), Epochs: c.Int("epochs"),
		SaveEvery: c.Int("save-every"), KeepLast: c.Int("keep-last"), Seed: c.Uint64("seed"),
		NoShuffle: c.Bool("no-shuffle"), NoResume: c.Bool("no-resume"),
	}
	if c.Command.Name != "sft" {
		ro.RefDir = c.String("ref")
	}
	if ro.Steps > 0 && (opts.Optim.Schedule == "linear" || opts.Optim.Schedule == "cosine") {
		ro.Trainer.Optim.TotalSteps = ro.Steps
	}
	bar := progressPrinter(c)
	tty := isTerminal(os.Stderr)
	ro.Progress = func(done, total int, m trainer.Metrics) {
		if tty {
			bar("train", done, total)
			return
		}
		if m.SFT {
			fmt.Fprintf(os.Stderr, "step %d/%d loss %.4f logps/response %.3f grad_norm %.4f lr %.3g\n",
				done, total, m.Loss, m.LogpsChosen, m.GradNorm, m.LR)
			return
		}
		fmt.Fprintf(os.Stderr, "step %d/%d loss %.4f rewards/accuracies %.3f rewards/margins %.4f logps/chosen %.3f grad_norm %.4f lr %.3g\n",
			done, total, m.Loss, m.Accuracy, m.RewardsMargins, m.LogpsChosen, m.GradNorm, m.LR)
	}
	return ro, nil
}

// printTrainSummary ends with a JSON line of the last step's metrics.
func printTrainSummary(c *cli.Context, tr *trainer.Trainer, m trainer.Metrics, start time.Time) error {
	res := map[string]any{}
	for k, v := range m.Map() {
		res[k] = v
	}
	res["steps"] = tr.StepCount()
	res["seconds"] = roundFigure(time.Since(start).Seconds(), 2)
	skipped := 0
	for k, v := range tr.Skipped {
		res["skipped/"+k] = v
		skipped += v
	}
	res["skipped"] = skipped
	res["out"] = c.String("out")
	fmt.Fprintf(c.App.Writer, "trained %d steps in %s; model in %s\n", tr.StepCount(), time.Since(start).Round(time.Millisecond), c.String("out"))
	return printModelJSON(c.App.Writer, res)
}

func benchTrainCommand() *cli.Command {
	return &cli.Command{
		Name:  "train",
		Usage: "DPO steps (reference forward, policy forward and backward, clipped AdamW update of every weight, or of a LoRA adapter) against the same step in PyTorch CPU, with each side's peak RSS",
		Flags: append([]cli.Flag{
			&cli.IntFlag{Name: "pairs", Value: 8, Usage: "pairs per step"},
			&cli.IntFlag{Name: "prompt-len", Value: 64, Usage: "prompt tokens per pair"},
			&cli.IntFlag{Name: "response-len", Value: 64, Usage: "tokens per chosen and per rejected response"},
			&cli.IntFlag{Name: "steps", Value: 2, Usage: "timed steps per round (after one warm-up step); the best counts"},
			&cli.IntFlag{Name: "rounds", Value: 2, Usage: "alternating Go/torch rounds; the best of each is reported"},
			&cli.IntFlag{Name: "threads", Value: runtime.NumCPU(), Usage: "threads for both Go and torch"},
			&cli.StringFlag{Name: "model", Usage: "benchmark this checkpoint instead of a fresh ~28M-parameter one"},
			&cli.StringFlag{Name: "mode", Value: trainer.BenchFull, Usage: "what trains: full (every weight, float32 AdamW state) or lora (an adapter on the frozen base, which Go keeps as stored and torch in float32; set by --lora-rank)"},
			gradCheckpointFlag(),
			&cli.IntFlag{Name: "torch-micro-batch", Usage: "pairs per torch forward/backward, gradients accumulated (0: all of a step's pairs at once)"},
			&cli.StringFlag{Name: "python", Usage: "Python interpreter with torch (default: the first of /usr/bin/python3, python3 that imports torch)"},
			&cli.BoolFlag{Name: "no-torch", Usage: "skip the PyTorch baseline"},
			&cli.Uint64Flag{Name: "seed", Value: 1, Usage: "initialisation and data seed"},
			&cli.StringFlag{Name: "cpuprofile", Usage: "write a Go CPU profile of the Go rounds to this file"},
		}, loraFlags()...),
		Action: runBenchTrain,
	}
}

func runBenchTrain(c *cli.Context) error {
	out := c.App.Writer
	threads := c.Int("threads")
	runtime.GOMAXPROCS(threads)
	dir, cleanup, err := benchModelDir(c, "autoif-bench-train-")
	if err != nil {
		return err
	}
	defer cleanup()
	cfg, err := model.LoadConfig(dir)
	if err != nil {
		return err
	}
	bo := trainer.BenchOptions{PairsPerStep: c.Int("pairs"), PromptLen: c.Int("prompt-len"), ResponseLen: c.Int("response-len"),
		Steps: c.Int("steps"), Seed: c.Uint64("seed"), Mode: c.String("mode"), GradCheckpoint: c.Bool("grad-checkpoint")}
	if bo.PairsPerStep < 1 || bo.PromptLen < 1 || bo.ResponseLen < 1 || bo.Steps < 1 {
		return errors.New("--pairs, --prompt-len, --response-len and --steps must be positive")
	}
	if bo.LoRA, err = loraConfig(c); err != nil {
		return err
	}
	switch {
	case bo.LoRA != nil && (bo.Mode == trainer.BenchLoRA || !c.IsSet("mode")):
		bo.Mode = trainer.BenchLoRA
	case bo.Mode == trainer.BenchLoRA || bo.LoRA != nil:
		return fmt.Errorf("--mode %s and --lora-rank go together", trainer.BenchLoRA)
	case bo.Mode != trainer.BenchFull:
		return fmt.Errorf("--mode %q: want %s or %s", bo.Mode, trainer.BenchFull, trainer.BenchLoRA)
	}
	if bo.LoRA != nil && !c.Bool("no-torch") && (bo.LoRA.Dropout > 0 || !slices.Equal(bo.LoRA.Targets, model.LoRATargets)) {
		return errors.New("the PyTorch baseline adapts all seven projections without dropout: bench with the default --lora-targets and --lora-dropout, or --no-torch")
	}
	rounds := c.Int("rounds")
	if rounds < 1 {
		return fmt.Errorf("--rounds %d: want at least 1", rounds)
	}
	torchMB := c.Int("torch-micro-batch")
	if torchMB < 0 {
		return fmt.Errorf("--torch-micro-batch %d: want 0 (all pairs) or more", torchMB)
	}
	what := "full fine-tuning"
	if bo.LoRA != nil {
		what = fmt.Sprintf("LoRA rank %d alpha %g on %s", bo.LoRA.Rank, bo.LoRA.Alpha, strings.Join(bo.LoRA.Targets, ","))
	}
	fmt.Fprintf(out, "model: %s, %.1fM parameters; %d pairs of %d+%d tokens per step; %s with AdamW; %d threads; BLAS %s\n",
		describeModel(cfg), float64(cfg.NumParams())/1e6, bo.PairsPerStep, bo.PromptLen, bo.ResponseLen, what, threads, trainer.BLASName)
	py, why := "", "--no-torch"
	if !c.Bool("no-torch") {
		py, why = torchref.FindPython(c.Context, c.String("python"))
	}
	to := trainer.TorchBenchOptions{Dir: dir, Bench: bo, Threads: threads, Rounds: rounds, TorchMicroBatch: torchMB, Python: py, Progress: out}
	if path := c.String("cpuprofile"); path != "" {
		prof, err := os.Create(path)
		if err != nil {
			return err
		}
		defer prof.Close()
		to.CPUProfile = prof
	}
	r, err := trainer.BenchAgainstTorch(c.Context, to)
	if err != nil {
		return err
	}
	best, bestCPU, peakRSS, peak := r.Go, r.GoStepCPUSeconds, r.GoPeakRSSMB, r.PeakGFLOPs
	torchStep, torchCPU, torchRSS := r.TorchStepSeconds, r.TorchStepCPUSeconds, r.TorchPeakRSSMB
	res := map[string]any{
		"mode": bo.Mode, "grad_checkpoint": bo.GradCheckpoint, "lora_rank": c.Int("lora-rank"),
		"threads": threads, "parameters": cfg.NumParams(), "pairs": bo.PairsPerStep, "prompt_len": bo.PromptLen,
		"response_len": bo.ResponseLen, "blas": trainer.BLASName,
		"step_s": roundFigure(best.StepSeconds, 3), "ref_forward_s": roundFigure(best.RefSeconds, 3),
		"pairs_per_s": roundFigure(best.PairsPerS, 3), "tokens_per_s": roundFigure(best.TokensPerS, 1),
		"gflops": roundFigure(best.GFLOPs, 2), "peak_gflops": roundFigure(peak, 2),
		"gflops_vs_peak": roundFigure(best.GFLOPs/peak, 3), "peak_rss_mb": roundFigure(peakRSS, 1),
		"step_gflop": roundFigure(best.StepFLOPs/1e9, 2), "step_cpu_s": roundFigure(bestCPU, 3),
		"pairs_per_cpu_s": roundFigure(float64(bo.PairsPerStep)/bestCPU, 3),
	}
	fmt.Fprintf(out, "go: %.3f pairs/s, %.1f tokens/s, %.1f GFLOP/s of a %.1f GFLOP/s matmul peak (%s, n=1024); peak RSS %.0f MB\n",
		best.PairsPerS, best.TokensPerS, best.GFLOPs, peak, trainer.BLASName, peakRSS)
	if py == "" {
		fmt.Fprintf(out, "torch baseline: skipped: %s\n", why)
		res["torch"] = "skipped: " + why
		res["torch_pairs_per_s"] = nil
	} else {
		tp := float64(bo.PairsPerStep) / torchStep
		res["torch_step_s"] = roundFigure(torchStep, 3)
		res["torch_pairs_per_s"] = roundFigure(tp, 3)
		res["ratio"] = roundFigure(best.PairsPerS/tp, 3)
		res["torch_step_cpu_s"] = roundFigure(torchCPU, 3)
		res["torch_pairs_per_cpu_s"] = roundFigure(float64(bo.PairsPerStep)/torchCPU, 3)
		res["cpu_ratio"] = roundFigure(torchCPU/bestCPU, 3)
		res["torch_peak_rss_mb"] = roundFigure(torchRSS, 1)
		res["rss_ratio"] = roundFigure(peakRSS/torchRSS, 3)
		res["torch_micro_batch"] = torchMB
		fmt.Fprintf(out, "torch: %.3f pairs/s, peak RSS %.0f MB; go/torch %.2fx pairs/s (per CPU-second %.2fx), %.2fx peak RSS\n",
			tp, torchRSS, best.PairsPerS/tp, torchCPU/bestCPU, peakRSS/torchRSS)
	}
	return printModelJSON(out, res)
}
