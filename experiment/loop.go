// Package experiment runs autoif's online DPO loop inside one process and the experiments
// built on it: the tinyIF pipeline (warm start by SFT, held-out evaluation, online DPO, an
// offline-DPO baseline, summary.json) and the sync/async loop benchmark.
//
// The in-process loop keeps the distributed design: every component (orchestrator, reward
// service, rollout workers, trainer) gets its own NATS connection and meets the others only
// on the run's subjects, streams and buckets, exactly as separate processes would. Only their
// lifetimes are shared: one context owns them all, and the first component to fail stops the
// rest.
package experiment

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/autoif/autoif/natsbus"
	"github.com/autoif/autoif/orchestrator"
	"github.com/autoif/autoif/proto"
	"github.com/autoif/autoif/reward"
	"github.com/autoif/autoif/rollout"
	"github.com/autoif/autoif/trainer"
)

// Reward modes of the in-process loop.
const (
	// RewardService starts a reward service (reward.NewServer on a local sandbox pool) in
	// the process; rollout workers reach it over NATS with reward.Client.
	RewardService = "service"
	// RewardExternal starts no reward component: rollout workers use the reward service
	// some other process serves on the bus (`autoif reward serve --nats URL`).
	RewardExternal = "external"
	// RewardLocal gives the rollout workers one sandbox pool to call directly, with no
	// service hop.
	RewardLocal = "local"
)

// LoopOptions say which components one process runs around its orchestrator.
type LoopOptions struct {
	// NATS is how every component connects; each gets its own connection. URL must name a
	// running server (the embedded server's URL in a one-process run).
	NATS natsbus.Options
	// RunOptions shape the run's JetStream resources (every component ensures them).
	RunOptions natsbus.RunOptions
	Run        proto.Run
	// Set and Config are the orchestrator's (orchestrator.Prepare). A nil Set runs no
	// orchestrator: the components serve until ctx ends.
	Set          *orchestrator.PromptSet
	Config       orchestrator.Config
	Orchestrator orchestrator.Options

	// RewardMode is RewardService (default), RewardExternal or RewardLocal.
	RewardMode string
	// Reward configures the sandbox pool of RewardService and RewardLocal.
	Reward reward.Options
	// RewardClient configures the rollout workers' reward client (RewardService,
	// RewardExternal).
	RewardClient reward.ClientOptions

	// RolloutWorkers is how many rollout workers to start (0: none; they join as
	// processes). Rollout is their options: each gets Name "<Name>-<i>", a seed derived from
	// Seed and i, and CacheDir <CacheDir>/<name>.
	RolloutWorkers int
	Rollout        rollout.Options

	// Trainer, when set, starts the online trainer (trainer.RunStream) with its per-step
	// metrics published to the run's metrics stream (component "trainer").
	Trainer *trainer.StreamOptions

	// OnTrainerStep, if set, is called after each trainer step's metrics are published.
	OnTrainerStep func(m trainer.Metrics, s trainer.StreamStep, at time.Time)
	// RunTrainer runs the trainer (default: TrainStream in this process). A caller may run it
	// in child processes instead (see TrainerRunner in cmd/autoif): it must still publish its
	// metrics with TrainStream's conventions.
	RunTrainer func(ctx context.Context, natsURL string, res *natsbus.RunResources, so trainer.StreamOptions) error

	Logger *slog.Logger
}

// TrainerComponent is the metrics component name of the in-process trainer.
const TrainerComponent = "trainer"

// Loop is one process's share of a run while it runs.
type Loop struct {
	o       LoopOptions
	log     *slog.Logger
	mu      sync.Mutex
	workers []*rollout.Worker
}

// NewLoop checks the options.
func NewLoop(o LoopOptions) (*Loop, error) {
	if o.NATS.URL == "" {
		return nil, errors.New("loop: no NATS URL")
	}
	if o.RewardMode == "" {
		o.RewardMode = RewardService
	}
	switch o.RewardMode {
	case RewardService, RewardExternal, RewardLocal:
	default:
		return nil, fmt.Errorf("loop: reward mode %q: want service, external or local", o.RewardMode)
	}
	if o.RolloutWorkers < 0 {
		return nil, fmt.Errorf("loop: %d rollout workers", o.RolloutWorkers)
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.Rollout.Name == "" {
		o.Rollout.Name = "rollout"
	}
	return &Loop{o: o, log: o.Logger}, nil
}

// RolloutStats are the in-process rollout workers' totals.
func (l *Loop) RolloutStats() []rollout.Stats {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := make([]rollout.Stats, len(l.workers))
	for i, w := range l.workers {
		out[i] = w.Stats()
	}
	return out
}

// group runs goroutines under one context; the first error cancels the others.
type group struct {
	wg     sync.WaitGroup
	cancel context.CancelFunc
	mu     sync.Mutex
	err    error
}

func (g *group) Go(name string, f func() error) {
	g.wg.Add(1)
	go func() {
		defer g.wg.Done()
		if err := f(); err != nil && !errors.Is(err, context.Canceled) {
			g.mu.Lock()
			if g.err == nil {
				g.err = fmt.Errorf("%s: %w", name, err)
			}
			g.mu.Unlock()
			g.cancel()
		}
	}()
}

func (g *group) Wait() error {
	g.wg.Wait()
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.err
}

func (l *Loop) connect(ctx context.Context, name string) (*natsbus.Bus, *natsbus.RunResources, error) {
	no := l.o.NATS
	no.Name = "autoif " + name
	bus, err := natsbus.Connect(ctx, no)
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %w", name, err)
	}
	sctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	res, err := natsbus.EnsureRun(sctx, bus.JS, l.o.Run, l.o.RunOptions)
	if err != nil {
		bus.Close()
		return nil, nil, fmt.Errorf("%s: %w", name, err)
	}
	return bus, res, nil
}

// Run starts the components, orchestrates until a budget stops the run (or, with no prompt
// set, until ctx ends), then stops every component and waits for it. The summary is the
// orchestrator's (zero without one).
func (l *Loop) Run(ctx context.Context) (orchestrator.Summary, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	g := &group{cancel: cancel}
	var closers []func()
	defer func() {
		for i := len(closers) - 1; i >= 0; i-- {
			closers[i]()
		}
	}()
	stop := func() error {
		cancel()
		return g.Wait()
	}

	// The reward comes first: rollout workers score from their first step.
	var scorer reward.Scorer
	if l.o.RewardMode != RewardExternal && l.o.RolloutWorkers > 0 {
		pctx, pcancel := context.WithTimeout(ctx, time.Minute)
		pool, err := reward.NewPool(pctx, l.o.Reward)
		pcancel()
		if err != nil {
			return orchestrator.Summary{}, fmt.Errorf("reward pool: %w", err)
		}
		closers = append(closers, func() { pool.Close() })
		scorer = pool
		if l.o.RewardMode == RewardService {
			bus, _, err := l.connect(ctx, "reward")
			if err != nil {
				return orchestrator.Summary{}, err
			}
			closers = append(closers, bus.Close)
			srv, err := reward.NewServer(bus.NC, pool, reward.ServerOptions{Logger: l.log})
			if err != nil {
				return orchestrator.Summary{}, fmt.Errorf("reward service: %w", err)
			}
			g.Go("reward service", func() error { return srv.Serve(ctx) })
			scorer = nil
		}
	}

	if l.o.Trainer != nil {
		bus, res, err := l.connect(ctx, "trainer")
		if err != nil {
			return orchestrator.Summary{}, errors.Join(err, stop())
		}
		closers = append(closers, bus.Close)
		so := *l.o.Trainer
		if so.Logger == nil {
			so.Logger = l.log
		}
		if l.o.OnTrainerStep != nil {
			user := so.OnStep
			so.OnStep = func(m trainer.Metrics, s trainer.StreamStep) {
				if user != nil {
					user(m, s)
				}
				l.o.OnTrainerStep(m, s, time.Now())
			}
		}
		runTrainer := l.o.RunTrainer
		if runTrainer == nil {
			runTrainer = func(ctx context.Context, _ string, res *natsbus.RunResources, so trainer.StreamOptions) error {
				return TrainStream(ctx, bus.JS, res, so)
			}
		}
		g.Go("trainer", func() error { return runTrainer(ctx, l.o.NATS.URL, res, so) })
	}

	for i := range l.o.RolloutWorkers {
		bus, res, err := l.connect(ctx, fmt.Sprintf("rollout %d", i))
		if err != nil {
			return orchestrator.Summary{}, errors.Join(err, stop())
		}
		closers = append(closers, bus.Close)
		ws := scorer
		if ws == nil {
			client, err := reward.NewClient(bus.NC, l.o.RewardClient)
			if err != nil {
				return orchestrator.Summary{}, errors.Join(fmt.Errorf("reward client: %w", err), stop())
			}
			closers = append(closers, func() { client.Close() })
			ws = client
		}
		ro := l.o.Rollout
		ro.Name = fmt.Sprintf("%s-%d", l.o.Rollout.Name, i)
		if ro.Seed != 0 {
			// Workers sharing a seed would sample the same responses.
			ro.Seed = l.o.Rollout.Seed + uint64(i)*0x9e3779b97f4a7c15
		}
		if ro.CacheDir != "" {
			ro.CacheDir = filepath.Join(l.o.Rollout.CacheDir, ro.Name)
		}
		if ro.Logger == nil {
			ro.Logger = l.log
		}
		w, err := rollout.New(bus.JS, res, ws, ro)
		if err != nil {
			return orchestrator.Summary{}, errors.Join(err, stop())
		}
		l.mu.Lock()
		l.workers = append(l.workers, w)
		l.mu.Unlock()
		g.Go(ro.Name, func() error { return w.Run(ctx) })
	}

	if l.o.Set == nil {
		<-ctx.Done()
		return orchestrator.Summary{}, stop()
	}
	bus, res, err := l.connect(ctx, "run")
	if err != nil {
		return orchestrator.Summary{}, errors.Join(err, stop())
	}
	closers = append(closers, bus.Close)
	orc, err := orchestrator.New(bus.JS, res, l.o.Set, l.o.Config, l.o.Orchestrator)
	if err != nil {
		return orchestrator.Summary{}, errors.Join(err, stop())
	}
	sum, err := orc.Run(ctx)
	if cerr := stop(); cerr != nil {
		// A component that failed is why the orchestrator was interrupted: say so.
		return sum, cerr
	}
	return sum, err
}

// TrainStream is trainer.RunStream with each step's metrics published to the run's metrics
// stream (component "trainer"), where the orchestrator's step lines and metrics.parquet find
// them.
func TrainStream(ctx context.Context, js jetstream.JetStream, res *natsbus.RunResources, so trainer.StreamOptions) error {
	log := so.Logger
	if log == nil {
		log = slog.Default()
	}
	pub := orchestrator.NewMetricsPublisher(js, res.Run, TrainerComponent)
	user := so.OnStep
	so.OnStep = func(m trainer.Metrics, s trainer.StreamStep) {
		values := m.Map()
		values["policy/lag"], values["policy/lag_max"] = s.MeanLag, float64(s.MaxLag)
		values["waited_for_pairs_s"] = s.Waited.Seconds()
		values[natsbus.MetricReconnects] = float64(natsbus.Reconnects(js.Conn()))
		if s.Interval > 0 {
			values["idle_fraction"] = min(s.Waited.Seconds()/s.Interval.Seconds(), 1)
		}
		// Step s's figures belong to the step that the publication of version s ends: the
		// trainer publishes its step count as the version.
		if err := pub.Publish(ctx, int64(m.Step), int64(m.Step), values); err != nil && ctx.Err() == nil {
			log.Warn("trainer metrics", "step", m.Step, "err", err)
		}
		if user != nil {
			user(m, s)
		}
	}
	return trainer.RunStream(ctx, res, so)
}
