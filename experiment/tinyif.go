package experiment

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"time"

	"github.com/autoif/autoif/atomicfile"
	"github.com/autoif/autoif/natsbus"
	"github.com/autoif/autoif/orchestrator"
	"github.com/autoif/autoif/proto"
	"github.com/autoif/autoif/reward"
	"github.com/autoif/autoif/rollout"
	"github.com/autoif/autoif/testbed/tinyif"
	"github.com/autoif/autoif/trainer"
)

// SummaryFile is the experiment's result in its run directory.
const SummaryFile = "summary.json"

// markerFile marks a directory as an experiment's, so a rerun may clear it.
const markerFile = "experiment.json"

// TinyIFOptions configure the tinyIF experiment (`make run`).
type TinyIFOptions struct {
	// RunDir receives summary.json, metrics.parquet, samples.parquet, curves.png, the online
	// trainer's checkpoints and the offline baseline's model. A directory left by an earlier
	// experiment is cleared; any other non-empty directory is refused.
	RunDir    string
	WarmStart WarmStartOptions
	// NATS reaches the bus (URL empty: an embedded server stored under RunDir).
	NATS natsbus.Options
	Run  proto.Run

	// Online DPO.
	Mode           orchestrator.Mode
	Steps          int   // policy versions to train (online and offline)
	PairsPerStep   int   // pairs per optimiser step (online and offline)
	BatchSize      int   // micro-batch (pairs)
	K              int   // responses per prompt
	PromptsPerStep int   // rollout worker batch
	MaxInFlight    int   // orchestrator bound
	PairsAhead     int   // async: orchestrator.Config.PairsAhead (-1: PairsPerStep × (1 + MaxLag))
	MaxLag         int64 // trainer's bound
	// RefRefreshEvery refreshes the online trainer's reference every N versions (0: frozen,
	// AutoIF's way; the offline baseline's reference is always frozen).
	RefRefreshEvery int
	LR              float64 // DPO learning rate (online and offline)
	Beta            float64
	MaxNewTokens    int
	Temperature     float64
	RolloutWorkers  int
	RewardWorkers   int
	Seed            uint64

	// EvalPrompts is how many held-out prompts are evaluated (0: all), spread over every
	// instruction; EvalTemperature 0 decodes greedily.
	EvalPrompts     int
	EvalTemperature float64

	// RunTrainer runs the online trainer (default: TrainStream in this process); RunOfflineDPO
	// the offline baseline (default: trainer.RunDPO in this process). The command line runs
	// both in child processes, whose memory goes back to the system when they exit.
	RunTrainer    func(ctx context.Context, natsURL string, res *natsbus.RunResources, so trainer.StreamOptions) error
	RunOfflineDPO func(ctx context.Context, ro trainer.RunOptions, pairs []*trainer.Pair) error

	Out    io.Writer
	Logger *slog.Logger
}

// DefaultTinyIF is the make-run experiment.
func DefaultTinyIF() TinyIFOptions {
	return TinyIFOptions{
		RunDir: filepath.Join("runs", "tinyif"), WarmStart: DefaultWarmStart(),
		Mode: orchestrator.ModeAsync, Steps: 80, PairsPerStep: 16, BatchSize: 8, K: 8, PromptsPerStep: 8,
		MaxInFlight: 16, PairsAhead: -1, MaxLag: 2, LR: 2e-4, Beta: 0.1, MaxNewTokens: 64, Temperature: 0.8,
		RolloutWorkers: 1, RewardWorkers: 2, Seed: 1, EvalPrompts: 0, EvalTemperature: 0,
	}
}

// Summary is RUN_DIR/summary.json.
type Summary struct {
	HeldOutBefore  float64 `json:"heldout_pass_rate_before"`
	HeldOutAfter   float64 `json:"heldout_pass_rate_after"`
	OfflineHeldOut float64 `json:"offline_dpo_heldout_pass_rate"`
	WallS          float64 `json:"wall_s"`

	Steps           int64              `json:"steps"`
	Pairs           int64              `json:"pairs"`
	OfflinePairs    int                `json:"offline_pairs"`
	MedianHotSwapS  float64            `json:"median_hot_swap_latency_s"`
	HotSwaps        int                `json:"hot_swaps"`
	StalePairs      int64              `json:"stale_pairs"`
	Mode            string             `json:"mode"`
	ModelParams     int64              `json:"model_params"`
	EvalPrompts     int                `json:"eval_prompts"`
	WarmStartCached bool               `json:"warm_start_cached"`
	WarmStartS      float64            `json:"warm_start_s"`
	OnlineS         float64            `json:"online_s"`
	OfflineS        float64            `json:"offline_s"`
	EvalS           float64            `json:"eval_s"`
	GainPoints      float64            `json:"gain_points"`
	BeatsOffline    bool               `json:"online_beats_offline"`
	PerInstrBefore  map[string]float64 `json:"per_instruction_before"`
	PerInstrAfter   map[string]float64 `json:"per_instruction_after"`
	PerInstrOffline map[string]float64 `json:"per_instruction_offline"`
	ExamplesAfter   []EvalExample      `json:"examples_after,omitempty"`
}

// evalUnits picks n held-out units spread evenly, so every instruction is represented.
func evalUnits(all []proto.PromptUnit, n int) []proto.PromptUnit {
	if n <= 0 || n >= len(all) {
		return all
	}
	out := make([]proto.PromptUnit, 0, n)
	for i := range n {
		out = append(out, all[i*len(all)/n])
	}
	return out
}

// prepareRunDir clears an earlier experiment's directory and refuses anything else.
func prepareRunDir(dir string) error {
	entries, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) || (err == nil && len(entries) == 0) {
		return os.MkdirAll(dir, 0o755)
	}
	if err != nil {
		return err
	}
	if _, err := os.Stat(filepath.Join(dir, markerFile)); err != nil {
		return fmt.Errorf("%s is not empty and holds no earlier experiment: choose another --run-dir", dir)
	}
	if err := os.RemoveAll(dir); err != nil {
		return err
	}
	return os.MkdirAll(dir, 0o755)
}

// RunTinyIF runs the whole experiment: warm start (cached), held-out evaluation, online DPO
// on the in-process loop, evaluation, the offline-DPO baseline from the same warm start with
// the same steps, its evaluation, then summary.json and the curves.
func RunTinyIF(ctx context.Context, o TinyIFOptions) (Summary, error) {
	start := time.Now()
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.Out == nil {
		o.Out = io.Discard
	}
	log := o.Logger
	if o.WarmStart.Logger == nil {
		o.WarmStart.Logger = log
	}
	if o.K < 2 || o.Steps <= 0 || o.PairsPerStep <= 0 || o.BatchSize <= 0 || o.PairsPerStep%o.BatchSize != 0 {
		return Summary{}, fmt.Errorf("experiment: k %d (>= 2), steps %d, pairs per step %d (a multiple of batch size %d) must be positive",
			o.K, o.Steps, o.PairsPerStep, o.BatchSize)
	}
	cfg := orchestrator.DefaultConfig()
	cfg.RunDir = o.RunDir
	cfg.Prompts = []string{"tinyif"}
	cfg.K, cfg.Mode, cfg.MaxInFlight, cfg.PairsPerVersion = o.K, o.Mode, o.MaxInFlight, o.PairsPerStep
	cfg.MaxLag, cfg.MaxSteps, cfg.Seed, cfg.PairsAhead = o.MaxLag, int64(o.Steps), o.Seed, o.PairsAhead
	set, err := orchestrator.Prepare(cfg)
	if err != nil {
		return Summary{}, err
	}
	if err := prepareRunDir(o.RunDir); err != nil {
		return Summary{}, fmt.Errorf("experiment: %w", err)
	}
	marker, _ := json.MarshalIndent(map[string]any{"experiment": "tinyif", "started": start.UTC()}, "", "  ")
	if err := os.WriteFile(filepath.Join(o.RunDir, markerFile), marker, 0o644); err != nil {
		return Summary{}, fmt.Errorf("experiment: %w", err)
	}
	var sum Summary
	sum.Mode = string(o.Mode)

	ws, cached, err := EnsureWarmStart(ctx, o.WarmStart)
	if err != nil {
		return sum, err
	}
	sum.WarmStartCached, sum.ModelParams = cached, ws.Params
	sum.WarmStartS = time.Since(start).Seconds()
	fmt.Fprintf(o.Out, "warm start %s: %d parameters, SFT loss %.3f (cached: %v)\n", o.WarmStart.Dir, ws.Params, ws.FinalLoss, cached)

	pool, err := reward.NewPool(ctx, reward.Options{Workers: o.RewardWorkers, Logger: log})
	if err != nil {
		return sum, fmt.Errorf("experiment: reward pool: %w", err)
	}
	defer pool.Close()
	tb, err := tinyif.Load()
	if err != nil {
		return sum, err
	}
	heldout := evalUnits(tb.Units(tinyif.HeldOut), o.EvalPrompts)
	sum.EvalPrompts = len(heldout)
	evalOpts := SampleOptions{Temperature: o.EvalTemperature, MaxNewTokens: o.MaxNewTokens, Seed: o.Seed, ChatTemplate: o.WarmStart.ChatTemplate}
	evalStart := time.Now()
	before, err := Evaluate(ctx, o.WarmStart.Dir, heldout, pool, evalOpts)
	if err != nil {
		return sum, err
	}
	sum.EvalS += time.Since(evalStart).Seconds()
	sum.HeldOutBefore, sum.PerInstrBefore = before.PassRate, before.PerInstruction
	fmt.Fprintf(o.Out, "held-out pass rate before: %.3f (%d prompts)\n", before.PassRate, before.Prompts)

	// Online DPO: the whole loop in this process, over NATS.
	onlineStart := time.Now()
	no := o.NATS
	if no.URL == "" {
		no.StoreDir = natsbus.DefaultStoreDir(o.RunDir)
	}
	no.Name = "autoif experiment"
	bus, err := natsbus.Connect(ctx, no)
	if err != nil {
		return sum, fmt.Errorf("experiment: %w", err)
	}
	defer bus.Close()
	lo := o.NATS
	lo.URL = bus.URL()
	topts := trainer.DefaultOptions()
	topts.BatchSize, topts.Optim.LR, topts.Loss.Beta = o.BatchSize, o.LR, o.Beta
	trainerDir := filepath.Join(o.RunDir, "trainer")
	loop, err := NewLoop(LoopOptions{
		NATS: lo, RunOptions: natsbus.RunOptions{Memory: true}, Run: o.Run,
		Set: set, Config: cfg, Orchestrator: orchestrator.Options{Out: o.Out, Logger: log},
		RewardMode: RewardService, Reward: reward.Options{Workers: o.RewardWorkers, Logger: log},
		RolloutWorkers: o.RolloutWorkers,
		Rollout: rollout.Options{
			K: o.K, Temperature: o.Temperature, MaxNewTokens: o.MaxNewTokens, PromptsPerStep: o.PromptsPerStep,
			Seed: o.Seed, ChatTemplate: o.WarmStart.ChatTemplate, ModelDir: o.WarmStart.Dir,
			CacheDir: filepath.Join(o.RunDir, "rollout-cache"), Name: "rollout", Logger: log,
		},
		Trainer: &trainer.StreamOptions{
			ModelDir: o.WarmStart.Dir, OutDir: trainerDir, KeepLast: 2, Trainer: topts,
			PairsPerStep: o.PairsPerStep, MaxPolicyLag: cfg.TrainerMaxLag(), Steps: o.Steps, Logger: log,
			RefRefreshEvery: o.RefRefreshEvery,
		},
		RunTrainer: o.RunTrainer,
		Logger:     log,
	})
	if err != nil {
		return sum, err
	}
	osum, err := loop.Run(ctx)
	if err != nil {
		return sum, fmt.Errorf("experiment: online: %w", err)
	}
	if osum.Reason != "steps" {
		return sum, fmt.Errorf("experiment: online run stopped by %s at version %d, not by its %d steps", osum.Reason, osum.Version, o.Steps)
	}
	sum.Steps, sum.Pairs, sum.StalePairs = osum.Version, osum.Pairs, osum.StalePairs
	sum.OnlineS = time.Since(onlineStart).Seconds()
	ckpts, err := trainer.Checkpoints(trainerDir)
	if err != nil || len(ckpts) == 0 {
		return sum, fmt.Errorf("experiment: online trainer left no checkpoint in %s (%v)", trainerDir, err)
	}
	evalStart = time.Now()
	after, err := Evaluate(ctx, ckpts[len(ckpts)-1], heldout, pool, evalOpts)
	if err != nil {
		return sum, err
	}
	sum.EvalS += time.Since(evalStart).Seconds()
	sum.HeldOutAfter, sum.PerInstrAfter, sum.ExamplesAfter = after.PassRate, after.PerInstruction, after.Examples
	fmt.Fprintf(o.Out, "held-out pass rate after online DPO (%d steps, %d pairs): %.3f\n", sum.Steps, sum.Pairs, after.PassRate)

	// Offline DPO: pairs sampled once from the warm start, the same steps and pair budget.
	offlineStart := time.Now()
	train := tb.Units(tinyif.Train)
	rand.New(rand.NewPCG(o.Seed, 0x0ff1)).Shuffle(len(train), func(i, j int) { train[i], train[j] = train[j], train[i] })
	pairs, err := SamplePairs(ctx, o.WarmStart.Dir, train, pool,
		SampleOptions{K: o.K, Temperature: o.Temperature, MaxNewTokens: o.MaxNewTokens, Seed: o.Seed + 1, ChatTemplate: o.WarmStart.ChatTemplate},
		rollout.SelectOptions{}, o.Steps*o.PairsPerStep)
	if err != nil {
		return sum, err
	}
	sum.OfflinePairs = len(pairs)
	offDir := filepath.Join(o.RunDir, "offline-dpo")
	runDPO := o.RunOfflineDPO
	if runDPO == nil {
		runDPO = func(ctx context.Context, ro trainer.RunOptions, pairs []*trainer.Pair) error {
			_, _, err := trainer.RunDPO(ctx, ro, pairs)
			return err
		}
	}
	err = runDPO(ctx, trainer.RunOptions{
		ModelDir: o.WarmStart.Dir, OutDir: offDir, Trainer: topts, GradAccum: o.PairsPerStep / o.BatchSize,
		Steps: o.Steps, KeepLast: 1, Seed: o.Seed, Logger: log,
	}, pairs)
	if err != nil {
		return sum, fmt.Errorf("experiment: offline dpo: %w", err)
	}
	sum.OfflineS = time.Since(offlineStart).Seconds()
	evalStart = time.Now()
	off, err := Evaluate(ctx, offDir, heldout, pool, evalOpts)
	if err != nil {
		return sum, err
	}
	sum.EvalS += time.Since(evalStart).Seconds()
	sum.OfflineHeldOut, sum.PerInstrOffline = off.PassRate, off.PerInstruction
	fmt.Fprintf(o.Out, "held-out pass rate after offline DPO (%d pairs): %.3f\n", len(pairs), off.PassRate)

	if rows, err := orchestrator.ReadMetrics(ctx, filepath.Join(o.RunDir, orchestrator.MetricsFile)); err == nil {
		var lat []float64
		for _, r := range rows {
			if r.Component == rollout.Component && r.Name == rollout.MetricSwapLatency {
				lat = append(lat, r.Value)
			}
		}
		sum.MedianHotSwapS, sum.HotSwaps = median(lat), len(lat)
	} else {
		log.Warn("metrics", "err", err)
	}
	sum.GainPoints = 100 * (sum.HeldOutAfter - sum.HeldOutBefore)
	sum.BeatsOffline = sum.HeldOutAfter > sum.OfflineHeldOut
	sum.WallS = time.Since(start).Seconds()
	data, _ := json.MarshalIndent(sum, "", "  ")
	if err := atomicfile.WriteFile(filepath.Join(o.RunDir, SummaryFile), append(data, '\n'), 0o644); err != nil {
		return sum, fmt.Errorf("experiment: %w", err)
	}
	return sum, nil
}
