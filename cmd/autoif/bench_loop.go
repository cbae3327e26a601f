package main

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"runtime"

	"github.com/urfave/cli/v2"

	"github.com/autoif/autoif/experiment"
)

// benchLoopCommand is `autoif bench loop`: the same DPO steps on tinyIF in sync and in async
// mode, every component in this process over an embedded NATS server.
func benchLoopCommand() *cli.Command {
	d := experiment.DefaultTinyIF()
	return &cli.Command{
		Name:  "loop",
		Usage: "online DPO loop on tinyIF: the same DPO steps in sync then async mode; last line JSON sync_wall_s, async_wall_s, speedup, mean_policy_lag, trainer_idle_fraction",
		Description: "Both modes start from the same policy (--model, default a small tinyIF warm start of 0.46M\n" +
			"parameters, trained into --warm-start-dir when absent) and stop when the trainer has\n" +
			"published --steps versions.\n" +
			"A mode's wall time runs from the loop's start to the trainer's last step; each mode's\n" +
			"fastest of --rounds alternating rounds counts. mean_policy_lag is async mode's pair-weighted\n" +
			"policy/lag; trainer_idle_fraction is async mode's share of trainer time spent waiting for\n" +
			"pairs (sync_* figures are sync mode's).\n\n" +
			"By default the rollout worker and the trainer each get half the CPUs (--rollout-threads,\n" +
			"--trainer-threads), as when sampling and training run on separate devices: the topology\n" +
			"async mode exists for. Give both every CPU (0) and on a small machine they compete for the\n" +
			"same cores, so overlapping them gains little.",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "model", Usage: "starting policy (default: the tinyIF warm start)"},
			&cli.StringFlag{Name: "warm-start-dir", Value: experiment.SmallWarmStart().Dir, Usage: "where the default (small) warm start is cached"},
			&cli.IntFlag{Name: "steps", Value: 24, Usage: "DPO steps (policy versions) per mode (both modes pay the same start-up, about two steps' time, so short runs understate the overlap)"},
			&cli.IntFlag{Name: "rounds", Value: 2, Usage: "alternating sync/async rounds; each mode's fastest counts"},
			&cli.IntFlag{Name: "k", Value: d.K, Usage: "responses per prompt"},
			&cli.IntFlag{Name: "pairs-per-step", Value: d.PairsPerStep, Usage: "pairs per DPO step"},
			&cli.IntFlag{Name: "batch-size", Value: d.BatchSize, Usage: "pairs per micro-batch"},
			&cli.IntFlag{Name: "prompts-per-step", Value: d.PromptsPerStep, Usage: "prompts a rollout worker samples together"},
			&cli.IntFlag{Name: "max-in-flight", Usage: "async: prompts queued at most (0: one rollout step's, prompts-per-step × rollout-workers, so that the scheduler follows the trainer's backlog closely)"},
			&cli.Int64Flag{Name: "max-lag", Value: 1, Usage: "trainer's policy-lag bound"},
			&cli.IntFlag{Name: "pairs-ahead", Value: -1, Usage: "async: stop sampling while this many pairs the trainer can still use wait for it, counting those the prompts in flight should make (-1: pairs-per-step × (1 + max-lag); 0: no bound)"},
			&cli.IntFlag{Name: "max-new-tokens", Value: d.MaxNewTokens, Usage: "tokens per response at most"},
			&cli.Float64Flag{Name: "lr", Value: d.LR, Usage: "DPO learning rate"},
			&cli.IntFlag{Name: "rollout-workers", Value: 1, Usage: "rollout workers"},
			&cli.IntFlag{Name: "reward-workers", Value: 1, Usage: "sandbox workers"},
			&cli.IntFlag{Name: "rollout-threads", Value: halfCPUs(), Usage: "sampling goroutines per rollout worker (0: number of CPUs)"},
			&cli.IntFlag{Name: "trainer-threads", Value: halfCPUs(), Usage: "goroutines per trainer kernel (0: number of CPUs)"},
			&cli.Uint64Flag{Name: "seed", Value: 1, Usage: "seed"},
			&cli.BoolFlag{Name: "dashboard", Usage: "measure the dashboard's cost instead: async mode without and with it (a page following /events, /metrics scraped every second), alternating, best of --rounds each; last line JSON without_wall_s, with_wall_s, dashboard_overhead"},
			&cli.StringFlag{Name: "cpuprofile", Usage: "write a CPU profile of the whole process (every component, both modes) to this file"},
		},
		Action: benchLoopAction,
	}
}

func benchLoopAction(c *cli.Context) error {
	modelDir := c.String("model")
	if modelDir == "" {
		ws := experiment.SmallWarmStart()
		ws.Dir = c.String("warm-start-dir")
		if _, _, err := experiment.EnsureWarmStart(c.Context, ws); err != nil {
			return err
		}
		modelDir = ws.Dir
	}
	scratch, err := os.MkdirTemp("", "autoif-bench-loop-")
	if err != nil {
		return fmt.Errorf("bench loop: %w", err)
	}
	defer os.RemoveAll(scratch)
	o := experiment.LoopBenchOptions{
		ModelDir: modelDir, Dir: scratch, Steps: c.Int("steps"), Rounds: c.Int("rounds"), K: c.Int("k"), PairsPerStep: c.Int("pairs-per-step"),
		BatchSize: c.Int("batch-size"), PromptsPerStep: c.Int("prompts-per-step"), MaxInFlight: c.Int("max-in-flight"),
		MaxLag: c.Int64("max-lag"), MaxNewTokens: c.Int("max-new-tokens"), LR: c.Float64("lr"),
		RolloutWorkers: c.Int("rollout-workers"), RewardWorkers: c.Int("reward-workers"), RolloutThreads: c.Int("rollout-threads"), TrainerThreads: c.Int("trainer-threads"), Seed: c.Uint64("seed"),
		Logger: slog.Default(),
	}
	o.PairsAhead = c.Int("pairs-ahead")
	if o.MaxInFlight <= 0 {
		o.MaxInFlight = o.PromptsPerStep * max(o.RolloutWorkers, 1)
	}
	if o.Steps <= 0 || o.PairsPerStep <= 0 || o.BatchSize <= 0 || o.K < 2 {
		return fmt.Errorf("bench loop: --steps, --pairs-per-step and --batch-size must be positive and --k at least 2")
	}
	if path := c.String("cpuprofile"); path != "" {
		stop, err := startCPUProfile(path)
		if err != nil {
			return err
		}
		defer stop()
	}
	if c.Bool("dashboard") {
		d, err := experiment.BenchDashboard(c.Context, o)
		if err != nil {
			return err
		}
		for _, m := range []struct {
			name string
			m    experiment.LoopBenchMode
		}{{"without dashboard", d.Without}, {"with dashboard", d.With}} {
			fmt.Fprintf(c.App.Writer, "async %-17s %d steps %4d pairs  wall %6.2fs  trainer idle %.2f\n", m.name, m.m.Steps, m.m.Pairs, m.m.WallS, m.m.TrainerIdleFraction)
		}
		line, _ := json.Marshal(map[string]any{
			"without_wall_s": roundFigure(d.Without.WallS, 2), "with_wall_s": roundFigure(d.With.WallS, 2),
			"dashboard_overhead": roundFigure(d.Overhead, 4), "sse_updates": d.Events, "metrics_scrapes": d.Scrapes,
			"steps": o.Steps, "rounds": max(o.Rounds, 1),
		})
		fmt.Fprintf(c.App.Writer, "%s\n", line)
		return nil
	}
	s, a, err := experiment.BenchLoop(c.Context, o)
	if err != nil {
		return err
	}
	for _, m := range []experiment.LoopBenchMode{s, a} {
		fmt.Fprintf(c.App.Writer, "%-5s %d steps %4d pairs  wall %6.1fs (with teardown %.1fs)  mean lag %.2f  trainer idle %.2f  trainer step %.2fs\n",
			m.Mode, m.Steps, m.Pairs, m.WallS, m.TotalS, m.MeanPolicyLag, m.TrainerIdleFraction, m.TrainerStepS)
	}
	speedup := 0.0
	if a.WallS > 0 {
		speedup = s.WallS / a.WallS
	}
	line, _ := json.Marshal(map[string]any{
		"sync_wall_s": roundFigure(s.WallS, 2), "async_wall_s": roundFigure(a.WallS, 2),
		"sync_total_s": roundFigure(s.TotalS, 2), "async_total_s": roundFigure(a.TotalS, 2), "speedup": roundFigure(speedup, 3),
		"mean_policy_lag": roundFigure(a.MeanPolicyLag, 3), "trainer_idle_fraction": roundFigure(a.TrainerIdleFraction, 3),
		"sync_mean_policy_lag": roundFigure(s.MeanPolicyLag, 3), "sync_trainer_idle_fraction": roundFigure(s.TrainerIdleFraction, 3),
		"steps": o.Steps, "pairs_per_step": o.PairsPerStep, "rollout_threads": o.RolloutThreads, "trainer_threads": o.TrainerThreads,
		"sync_trainer_step_s": roundFigure(s.TrainerStepS, 3), "async_trainer_step_s": roundFigure(a.TrainerStepS, 3),
	})
	fmt.Fprintf(c.App.Writer, "%s\n", line)
	return nil
}

// halfCPUs is the default share of the CPUs for each of the rollout worker and the trainer.
func halfCPUs() int { return max(runtime.NumCPU()/2, 1) }
