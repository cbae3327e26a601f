package experiment

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/autoif/autoif/natsbus"
	"github.com/autoif/autoif/orchestrator"
	"github.com/autoif/autoif/proto"
	"github.com/autoif/autoif/reward"
	"github.com/autoif/autoif/rollout"
	"github.com/autoif/autoif/trainer"
)

// LoopBenchOptions configure `autoif bench loop`: the same DPO steps in sync and async mode.
type LoopBenchOptions struct {
	ModelDir       string
	Dir            string // scratch space (a run directory per mode)
	Steps          int
	Rounds         int // sync-then-async rounds; each mode's fastest counts (default 1)
	K              int
	PairsPerStep   int
	BatchSize      int
	PromptsPerStep int
	MaxInFlight    int // async
	PairsAhead     int // async (orchestrator.Config.PairsAhead)
	MaxLag         int64
	MaxNewTokens   int
	LR             float64
	RolloutWorkers int
	RewardWorkers  int
	// RolloutThreads bounds each rollout worker's sampling goroutines (0: GOMAXPROCS).
	RolloutThreads int
	// TrainerThreads caps the trainer's kernel goroutines (trainer.SetThreads; 0: GOMAXPROCS).
	TrainerThreads int
	Seed           uint64
	Logger         *slog.Logger
	// Observer, when set, follows the run's records (BenchDashboard's dashboard).
	Observer orchestrator.Observer
}

// LoopBenchMode is one mode's figures.
type LoopBenchMode struct {
	Mode string `json:"mode"`
	// WallS is the time to reach the steps: from the loop's start (components starting
	// included) to the trainer publishing the last version. TotalS adds the teardown
	// (workers finishing in-flight sampling, the bus draining), the same in both modes.
	WallS  float64 `json:"wall_s"`
	TotalS float64 `json:"total_s"`
	Steps  int64   `json:"steps"`
	Pairs  int64   `json:"pairs"`
	// MeanPolicyLag is the mean, over the pairs trained on, of how many versions the policy
	// that sampled a pair was behind the one the trainer applied it to.
	MeanPolicyLag float64 `json:"mean_policy_lag"`
	// TrainerIdleFraction is the share of WallS the trainer spent waiting for pairs, as it
	// measured it (trainer.StreamStep.Waited).
	TrainerIdleFraction float64 `json:"trainer_idle_fraction"`
	// TrainerStepS is the trainer's mean compute time per step (trainer.Metrics.StepSeconds).
	TrainerStepS float64 `json:"trainer_step_s"`
}

// BenchLoop runs the loop in sync then async mode for the same number of trainer steps,
// o.Rounds times alternating (default 1), and returns each mode's fastest round: on a shared
// machine the best of a few is the least disturbed by other load.
func BenchLoop(ctx context.Context, o LoopBenchOptions) (sync, async LoopBenchMode, err error) {
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	for r := range max(o.Rounds, 1) {
		for _, mode := range []orchestrator.Mode{orchestrator.ModeSync, orchestrator.ModeAsync} {
			m, err := benchLoopMode(ctx, o, mode)
			if err != nil {
				return sync, async, err
			}
			o.Logger.Info("bench loop round", "round", r+1, "mode", mode, "wall_s", m.WallS, "mean_policy_lag", m.MeanPolicyLag,
				"trainer_idle_fraction", m.TrainerIdleFraction, "trainer_step_s", m.TrainerStepS)
			best := &sync
			if mode == orchestrator.ModeAsync {
				best = &async
			}
			if best.WallS == 0 || m.WallS < best.WallS {
				*best = m
			}
		}
	}
	return sync, async, nil
}

func benchLoopMode(ctx context.Context, o LoopBenchOptions, mode orchestrator.Mode) (LoopBenchMode, error) {
	res := LoopBenchMode{Mode: string(mode)}
	dir := filepath.Join(o.Dir, string(mode))
	if err := os.RemoveAll(dir); err != nil {
		return res, err
	}
	run, err := proto.NewRun("bench-" + string(mode))
	if err != nil {
		return res, err
	}
	bus, err := natsbus.Connect(ctx, natsbus.Options{Name: "autoif bench loop", StoreDir: natsbus.DefaultStoreDir(dir)})
	if err != nil {
		return res, fmt.Errorf("bench loop: %w", err)
	}
	defer bus.Close()

	var mu sync.Mutex
	var stepEnds []time.Time
	var waited time.Duration
	var lagSum float64 // of the steps' mean lags: every step has PairsPerStep pairs
	cfg := orchestrator.DefaultConfig()
	cfg.RunDir, cfg.Prompts, cfg.Mode = dir, []string{"tinyif"}, mode
	cfg.K, cfg.PairsPerVersion, cfg.MaxLag, cfg.MaxSteps, cfg.Seed = o.K, o.PairsPerStep, o.MaxLag, int64(o.Steps), o.Seed
	cfg.MaxInFlight = o.MaxInFlight
	cfg.PairsAhead = o.PairsAhead
	if mode == orchestrator.ModeSync {
		// A sync batch is one rollout step: on tinyIF's warm start its prompts make about
		// the pairs one version needs, and the orchestrator tops a short batch up.
		cfg.MaxInFlight = o.PromptsPerStep
	}
	set, err := orchestrator.Prepare(cfg)
	if err != nil {
		return res, err
	}
	topts := trainer.DefaultOptions()
	topts.BatchSize, topts.Optim.LR = o.BatchSize, o.LR
	quiet := o.Logger
	loop, err := NewLoop(LoopOptions{
		NATS: natsbus.Options{URL: bus.URL()}, RunOptions: natsbus.RunOptions{Memory: true}, Run: run,
		Set: set, Config: cfg, Orchestrator: orchestrator.Options{Out: discard{}, Logger: quiet, PollInterval: 50 * time.Millisecond, Observer: o.Observer},
		RewardMode: RewardService, Reward: reward.Options{Workers: o.RewardWorkers, Logger: quiet},
		RolloutWorkers: o.RolloutWorkers,
		Rollout: rollout.Options{
			K: o.K, MaxNewTokens: o.MaxNewTokens, PromptsPerStep: o.PromptsPerStep, Seed: o.Seed, ChatTemplate: true,
			ModelDir: o.ModelDir, CacheDir: filepath.Join(dir, "rollout-cache"), Name: "rollout",
			FetchWait: 20 * time.Millisecond, Threads: o.RolloutThreads, Logger: quiet,
		},
		Trainer: &trainer.StreamOptions{
			ModelDir: o.ModelDir, OutDir: filepath.Join(dir, "trainer"), KeepLast: 1, Trainer: topts,
			PairsPerStep: o.PairsPerStep, MaxPolicyLag: cfg.TrainerMaxLag(), Steps: o.Steps, Logger: quiet,
		},
		OnTrainerStep: func(m trainer.Metrics, s trainer.StreamStep, at time.Time) {
			mu.Lock()
			stepEnds = append(stepEnds, at)
			res.TrainerStepS += m.StepSeconds
			waited += s.Waited
			lagSum += s.MeanLag
			mu.Unlock()
		},
		Logger: quiet,
	})
	if err != nil {
		return res, err
	}
	trainer.SetThreads(o.TrainerThreads)
	defer trainer.SetThreads(0)
	start := time.Now()
	sum, err := loop.Run(ctx)
	if err != nil {
		return res, fmt.Errorf("bench loop %s: %w", mode, err)
	}
	res.TotalS = time.Since(start).Seconds()
	res.Steps, res.Pairs = sum.Version, sum.Pairs
	if sum.Reason != "steps" {
		return res, fmt.Errorf("bench loop %s: stopped by %s at version %d", mode, sum.Reason, sum.Version)
	}

	mu.Lock()
	defer mu.Unlock()
	n := len(stepEnds)
	if n > 0 {
		res.WallS = stepEnds[n-1].Sub(start).Seconds()
	}
	if res.WallS <= 0 {
		return res, fmt.Errorf("bench loop %s: the trainer reported no steps", mode)
	}
	res.TrainerStepS /= float64(n)
	res.MeanPolicyLag = lagSum / float64(n)
	res.TrainerIdleFraction = waited.Seconds() / res.WallS
	return res, nil
}

type discard struct{}

func (discard) Write(p []byte) (int, error) { return len(p), nil }
