package orchestrator

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/autoif/autoif/natsbus"
	"github.com/autoif/autoif/proto"
)

// Options are the orchestrator's runtime knobs; the zero value of each means its default.
type Options struct {
	// Out receives one line per step (default os.Stdout).
	Out io.Writer
	// Logger receives lifecycle events (default slog.Default()).
	Logger *slog.Logger
	// PollInterval is how often the work queue's depth is read (default 250ms).
	PollInterval time.Duration
	// LineGrace is how long a finished step's line waits for the trainer's figures
	// (default 3s).
	LineGrace time.Duration
	// SyncStall is how long sync mode waits for a new version after a batch finished with
	// enough pairs before it samples more anyway, in case the trainer skipped some of them
	// (default 2 minutes).
	SyncStall time.Duration
	// StatusEvery prints a status line when no step has ended for this long (default 30s),
	// so a run waiting for its workers or its trainer says so.
	StatusEvery time.Duration
	// OnProgress, when set, receives where the run stands at every poll (PollInterval), for
	// a live status line; it must return quickly.
	OnProgress func(Progress)
	// Observer, when set, sees what the run records as it records it (a dashboard, an
	// exporter); it is called from the orchestrator's loop, so it must return quickly.
	Observer Observer
}

// Observer follows a run's records. The rows passed are the recorder's own: an observer
// copies what it keeps.
type Observer interface {
	// ObserveMetrics gets each metrics batch as it is recorded, the orchestrator's own step
	// metrics included.
	ObserveMetrics(rows []MetricRow)
	// ObserveSamples gets the sample rows of a step when the step closes. A resumed run
	// first passes both what its earlier processes recorded.
	ObserveSamples(rows []SampleRow)
}

func (o Options) withDefaults() Options {
	if o.Out == nil {
		o.Out = os.Stdout
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.PollInterval <= 0 {
		o.PollInterval = 250 * time.Millisecond
	}
	if o.LineGrace <= 0 {
		o.LineGrace = 3 * time.Second
	}
	if o.SyncStall <= 0 {
		o.SyncStall = 2 * time.Minute
	}
	if o.StatusEvery <= 0 {
		o.StatusEvery = 30 * time.Second
	}
	return o
}

// reasonNoSignal is the Summary.Reason of a run that stopped itself after Config.MaxIdlePrompts
// prompts in a row made no pair.
const reasonNoSignal = "no signal"

// Summary is how a run ended.
type Summary struct {
	// Reason is the budget that stopped it ("steps", "pairs", "wall time", "epochs"), or
	// "interrupted" when its context ended first.
	Reason     string        `json:"reason"`
	Version    int64         `json:"policy_version"`
	Enqueued   int64         `json:"prompts_enqueued"`
	Rollouts   int64         `json:"rollouts"`
	Pairs      int64         `json:"pairs"`
	StalePairs int64         `json:"stale_pairs"`
	Wall       time.Duration `json:"wall_ns"`
	Timing     *Timing       `json:"timing,omitempty"`
	// PeakRSSMB is the peak resident memory of the process that ran the orchestrator and its
	// in-process components (and of its finished children), filled in by the command.
	PeakRSSMB float64 `json:"peak_rss_mb,omitempty"`
}

// Orchestrator owns one run: it enqueues prompt units, follows the policy version, records
// metrics and samples, and stops the run at its budgets. It talks to rollout workers and the
// trainer only through the run's streams and policy bucket.
type Orchestrator struct {
	js   jetstream.JetStream
	res  *natsbus.RunResources
	set  *PromptSet
	cfg  Config
	o    Options
	log  *slog.Logger
	st   *State
	rec  *recorder
	pub  *natsbus.Publisher[proto.PromptUnit]
	mpub *natsbus.Publisher[proto.MetricEvent]

	// committed is the recorder state the files on disk hold; state.json always carries it,
	// even when written between flushes for the scheduler's sake.
	committed RecordState
	order     []int
	orderOf   int
	inFlight  int
	// doneAt is when sync mode saw its batch finish (zero while one is in flight).
	doneAt  time.Time
	resumed bool
	// runStart and wallBase account the wall-time budget: what earlier processes spent,
	// plus this one's time so far, in every state.json written.
	runStart time.Time
	wallBase time.Duration
	// closing is a published version whose step has not been closed yet.
	closing *versionClose
	// backlog estimates the pairs the trainer has yet to take, for async mode's PairsAhead.
	backlog *backlog
	// lastReward is the mean score of the last closed step that had rollouts, for progress.
	lastReward    float64
	hasLastReward bool
}

// New prepares a run's orchestrator, resuming from cfg.RunDir's state when there is one.
// set comes from Prepare.
func New(js jetstream.JetStream, res *natsbus.RunResources, set *PromptSet, cfg Config, o Options) (*Orchestrator, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if js == nil || res == nil || set == nil || len(set.Units) == 0 {
		return nil, errors.New("orchestrator: jetstream, run resources and a prompt set are required")
	}
	o = o.withDefaults()
	if err := os.MkdirAll(cfg.RunDir, 0o755); err != nil {
		return nil, fmt.Errorf("run directory: %w", err)
	}
	st, err := LoadState(cfg.RunDir)
	if err != nil {
		return nil, err
	}
	resumed := st != nil
	if st == nil {
		st = newState(res.Run.ID, set, cfg)
	} else if err := st.resumable(res.Run.ID, set, cfg, cfg.RunDir); err != nil {
		return nil, err
	}
	// A budget that stopped the last process may have been raised since.
	st.StopReason = ""
	orc := &Orchestrator{
		js: js, res: res, set: set, cfg: cfg, o: o, st: st, resumed: resumed,
		log:       o.Logger.With("component", Component, "run", res.Run.ID),
		pub:       natsbus.NewPublisher(js, proto.PromptUnits, res.Run.Prompts(), natsbus.PublisherOptions{}),
		mpub:      natsbus.NewPublisher(js, proto.MetricEvents, res.Run.Metrics(), natsbus.PublisherOptions{}),
		committed: st.Record,
		orderOf:   -1,
	}
	orc.rec = newRecorder(st.Record.clone(), cfg, set, o.Out, o.LineGrace)
	orc.backlog = newBacklog(cfg.PairsPerVersion, cfg.TrainerMaxLag())
	orc.backlog.version = st.Record.Version
	// The first flush writes the files even if nothing arrives: a run directory always has
	// readable metrics and samples, and a resumed one drops rows its state does not cover.
	orc.rec.dirty = true
	if resumed {
		ctx := context.Background()
		metrics, err := ReadMetrics(ctx, filepath.Join(cfg.RunDir, MetricsFile))
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			return nil, err
		}
		samples, err := ReadSamples(ctx, filepath.Join(cfg.RunDir, SamplesFile))
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			return nil, err
		}
		orc.rec.restore(metrics, samples)
	}
	return orc, nil
}

// State returns the run's state as last saved.
func (orc *Orchestrator) State() State { return *orc.st }

// event is one thing the loop reacts to, from one of its reader goroutines.
type event struct {
	kind    string // "metrics", "rollouts", "pairs", "version"
	seq     uint64
	header  nats.Header
	metrics []proto.MetricEvent
	rolls   []proto.ScoredRollout
	pairs   []proto.Pair
	version int64
	err     error
}

// Run orchestrates until a budget is reached or ctx ends. Everything it consumed is
// flushed to the run directory before it returns.
func (orc *Orchestrator) Run(ctx context.Context) (Summary, error) {
	start := time.Now()
	orc.runStart, orc.wallBase = start, orc.st.WallUsed
	// The readers outlive ctx a little: what the streams hold when the run stops, by a
	// budget or by Ctrl-C, still goes into the files (catchUp).
	rctx, stopReaders := context.WithCancel(context.WithoutCancel(ctx))
	defer stopReaders()
	events := make(chan event, 64)
	var wg sync.WaitGroup
	defer wg.Wait()
	defer stopReaders()
	spawn := func(f func(context.Context, chan<- event) error) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := f(rctx, events); err != nil && rctx.Err() == nil {
				select {
				case events <- event{kind: "error", err: err}:
				case <-rctx.Done():
				}
			}
		}()
	}
	r := orc.rec.st
	if err := orc.checkStreams(ctx); err != nil {
		return Summary{}, err
	}
	if o := orc.o.Observer; o != nil && (len(orc.rec.metrics) > 0 || len(orc.rec.samples) > 0) {
		// A resumed run's observer starts from what the earlier processes recorded, so its
		// curves and counters cover the whole run, each row once.
		o.ObserveMetrics(orc.rec.metrics)
		o.ObserveSamples(orc.rec.samples)
	}
	spawn(func(ctx context.Context, out chan<- event) error {
		return readStream(ctx, orc.res.Metrics, proto.MetricEvents, r.MetricsNext, "metrics", out,
			func(e *event, rows []proto.MetricEvent) { e.metrics = rows })
	})
	spawn(func(ctx context.Context, out chan<- event) error {
		return readStream(ctx, orc.res.Rollouts, proto.ScoredRollouts, r.RolloutsNext, "rollouts", out,
			func(e *event, rows []proto.ScoredRollout) { e.rolls = rows })
	})
	spawn(func(ctx context.Context, out chan<- event) error {
		return readStream(ctx, orc.res.Pairs, proto.Pairs, r.PairsNext, "pairs", out,
			func(e *event, rows []proto.Pair) { e.pairs = rows })
	})
	// A version published before the orchestrator started is what the first pairs' lag is
	// measured against; the watcher may deliver it only after the first pair batches.
	if v, ok := orc.currentVersion(ctx); ok {
		if err := orc.apply(ctx, event{kind: "version", version: v}); err != nil {
			return Summary{}, err
		}
	}
	spawn(orc.watchVersion)

	if err := orc.refreshInFlight(ctx); err != nil {
		return Summary{}, err
	}
	if orc.rec.st.Open.Start.IsZero() {
		orc.rec.st.Open.Start = start
	}
	orc.rec.lastLine = start
	startVersion, startPairs := orc.rec.st.Version, orc.rec.st.Pairs
	orc.log.Info("orchestrator started", "mode", orc.cfg.Mode, "prompts", len(orc.set.Units), "instructions", orc.set.Instructions(),
		"max_in_flight", orc.cfg.MaxInFlight, "max_lag", orc.cfg.MaxLag, "resumed", orc.resumed, "enqueued", orc.st.Enqueued,
		"epoch", orc.st.Epoch, "cursor", orc.st.Cursor, "in_flight", orc.inFlight, "policy_version", orc.rec.st.Version)

	poll := time.NewTicker(orc.o.PollInterval)
	defer poll.Stop()
	flush := time.NewTicker(orc.cfg.FlushEvery)
	defer flush.Stop()
	reason := ""
	var runErr error
loop:
	for {
		if reason = orc.budgetReached(start); reason != "" {
			break
		}
		if err := orc.schedule(ctx); err != nil {
			if ctx.Err() != nil {
				break
			}
			runErr = err
			break
		}
		select {
		case <-ctx.Done():
			break loop
		case e := <-events:
			if err := orc.apply(ctx, e); err != nil {
				runErr = err
				break loop
			}
		case <-poll.C:
			if err := orc.refreshInFlight(ctx); err != nil && ctx.Err() == nil {
				orc.log.Warn("work queue depth", "err", err)
			}
			now := time.Now()
			orc.closeVersion(ctx, now, false)
			orc.rec.printReady(now, false)
			if now.Sub(orc.rec.lastLine) >= orc.o.StatusEvery {
				orc.status(now)
			}
			if orc.o.OnProgress != nil {
				orc.o.OnProgress(orc.progress(start, startVersion, startPairs))
			}
		case <-flush.C:
			if err := orc.flush(ctx); err != nil {
				runErr = err
				break loop
			}
		}
	}
	if reason == "" {
		reason = "interrupted"
	}
	if runErr != nil {
		reason = "error"
	}
	fctx, fcancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer fcancel()
	if reason != "error" {
		// The step closes publish the orchestrator's own metrics to the metrics stream, where
		// they are read back into metrics.parquet: store them before reading to the end, and
		// again after closing a step still pending.
		drain := func() {
			if err := orc.mpub.Flush(fctx); err != nil {
				orc.log.Warn("publish step metrics", "err", err)
			}
			orc.catchUp(fctx, events, 5*time.Second)
		}
		drain()
		if orc.closing != nil {
			orc.closeVersion(fctx, time.Now(), true)
			drain()
		}
	}
	stopReaders()
	wg.Wait()
	orc.closeVersion(fctx, time.Now(), true)
	orc.rec.printReady(time.Now(), true)
	if reason != "interrupted" && reason != "error" {
		orc.st.StopReason = reason
	}
	if err := orc.flush(fctx); err != nil {
		runErr = errors.Join(runErr, err)
	}
	if err := orc.saveState(); err != nil {
		runErr = errors.Join(runErr, err)
	}
	writeInstructionTable(orc.o.Out, orc.rec.st.Instructions, orc.rec.instructionText)
	if reason == reasonNoSignal {
		// The last lines say why the run stopped itself.
		fmt.Fprintln(orc.o.Out, orc.rec.idle.report(fmt.Sprintf("stopped: no preference pair from the last %d prompts", orc.rec.idle.streak)))
		runErr = errors.Join(runErr, errors.New(orc.rec.idle.stop))
	}
	sum := Summary{Reason: reason, Version: orc.rec.st.Version, Enqueued: orc.st.Enqueued, Rollouts: orc.rec.st.Rollouts,
		Pairs: orc.rec.st.Pairs, StalePairs: orc.rec.st.StalePairs, Wall: orc.st.WallUsed,
		Timing: timingOf(orc.rec.metrics, orc.rec.st.Version)}
	orc.log.Info("orchestrator stopped", "reason", reason, "policy_version", sum.Version, "enqueued", sum.Enqueued, "pairs", sum.Pairs, "stale_pairs", sum.StalePairs)
	return sum, runErr
}

// checkStreams refuses a run directory whose state points past the end of the run's
// streams: they were recreated (kept in memory, or deleted), and reading on from the old
// positions would silently skip the new run's first batches.
func (orc *Orchestrator) checkStreams(ctx context.Context) error {
	r := orc.rec.st
	for _, s := range []struct {
		stream jetstream.Stream
		next   uint64
	}{{orc.res.Metrics, r.MetricsNext}, {orc.res.Rollouts, r.RolloutsNext}, {orc.res.Pairs, r.PairsNext}} {
		info, err := s.stream.Info(ctx)
		if err != nil {
			return fmt.Errorf("orchestrator: %w", err)
		}
		if s.next > info.State.LastSeq+1 {
			return fmt.Errorf("run directory %s has read stream %s up to %d but it ends at %d (recreated, or kept in memory): use a new run directory",
				orc.cfg.RunDir, info.Config.Name, s.next-1, info.State.LastSeq)
		}
	}
	return nil
}

// status prints where a run stands between step lines.
func (orc *Orchestrator) status(now time.Time) {
	r := &orc.rec.st
	fmt.Fprintf(orc.o.Out, "waiting   policy/version %d  in-flight %d  enqueued %d  rollouts %d  pairs %d  (step %d under way for %s)\n",
		r.Version, orc.inFlight, orc.st.Enqueued, r.Rollouts, r.Pairs, r.Open.Step, now.Sub(r.Open.Start).Round(time.Second))
	orc.rec.lastLine = now
}

// catchUp applies what the streams held when a budget stopped the run, so the files end
// with the step that reached it rather than a little before.
func (orc *Orchestrator) catchUp(ctx context.Context, events <-chan event, limit time.Duration) {
	ctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	last := func(s jetstream.Stream) uint64 {
		info, err := s.Info(ctx)
		if err != nil {
			return 0
		}
		return info.State.LastSeq
	}
	metrics, rollouts, pairs := last(orc.res.Metrics), last(orc.res.Rollouts), last(orc.res.Pairs)
	for {
		r := orc.rec.st
		if r.MetricsNext > metrics && r.RolloutsNext > rollouts && r.PairsNext > pairs {
			// Drain what the readers already hold, and whatever version came with it.
			for {
				select {
				case e := <-events:
					if e.kind != "error" {
						_ = orc.apply(ctx, e)
					}
				default:
					return
				}
			}
		}
		select {
		case <-ctx.Done():
			orc.log.Warn("stopped before reading every batch", "metrics_next", r.MetricsNext, "rollouts_next", r.RolloutsNext, "pairs_next", r.PairsNext)
			return
		case e := <-events:
			if e.kind != "error" {
				_ = orc.apply(ctx, e)
			}
		}
	}
}

func (orc *Orchestrator) apply(ctx context.Context, e event) error {
	now := time.Now()
	switch e.kind {
	case "error":
		return e.err
	case "metrics":
		n := len(orc.rec.metrics)
		orc.rec.onMetrics(e.seq, e.header, e.metrics)
		if orc.o.Observer != nil && len(orc.rec.metrics) > n {
			orc.o.Observer.ObserveMetrics(orc.rec.metrics[n:])
		}
		orc.rec.printReady(now, false)
	case "rollouts":
		warned := orc.rec.kMismatch != 0
		orc.rec.onRollouts(e.seq, e.rolls, now)
		if !warned && orc.rec.kMismatch != 0 {
			orc.log.Warn("rollout workers sample another number of responses per prompt than the run's k",
				"responses", orc.rec.kMismatch, "k", orc.cfg.K)
		}
		if err := orc.refreshInFlight(ctx); err != nil && ctx.Err() == nil {
			orc.log.Warn("work queue depth", "err", err)
		}
	case "pairs":
		if e.seq >= orc.rec.st.PairsNext {
			for i := range e.pairs {
				orc.backlog.add(e.pairs[i].PolicyVersion, 1)
			}
		}
		orc.rec.onPairs(e.seq, e.pairs, now)
	case "version":
		if e.version <= orc.rec.st.Version || (orc.closing != nil && e.version <= orc.closing.version) {
			return nil
		}
		// What was stored before the trainer published belongs to the step it ends: the
		// version closes the step once the readers have reached the streams' ends as of now.
		c := &versionClose{version: e.version, deadline: now.Add(2 * time.Second)}
		ictx, cancel := context.WithTimeout(ctx, time.Second)
		if info, err := orc.res.Rollouts.Info(ictx); err == nil {
			c.rollouts = info.State.LastSeq
		}
		if info, err := orc.res.Pairs.Info(ictx); err == nil {
			c.pairs = info.State.LastSeq
		}
		cancel()
		orc.closing = c
	}
	orc.closeVersion(ctx, now, false)
	return nil
}

// versionClose is a newly published version waiting for the batches stored before it.
type versionClose struct {
	version         int64
	rollouts, pairs uint64
	deadline        time.Time
}

// closeVersion ends the step under way when its version's batches are in (or it waited
// long enough, or force), publishing the step's aggregates.
func (orc *Orchestrator) closeVersion(ctx context.Context, now time.Time, force bool) {
	c := orc.closing
	if c == nil {
		return
	}
	r := orc.rec.st
	if !force && now.Before(c.deadline) && (r.RolloutsNext <= c.rollouts || r.PairsNext <= c.pairs || len(orc.rec.awaiting) > 0) {
		return
	}
	orc.closing = nil
	if len(orc.rec.awaiting) > 0 {
		// Their rollouts never came (a worker died between publishing the two): stop
		// waiting for them at later steps too.
		orc.log.Debug("closing a step without the rollouts of some of its pairs", "prompts", len(orc.rec.awaiting))
		clear(orc.rec.awaiting)
	}
	if open := orc.rec.st.Open; open.Rollouts > 0 {
		orc.lastReward, orc.hasLastReward = open.RewardSum/float64(open.Rollouts), true
	}
	openStep := orc.rec.st.Open.Step
	evs := orc.rec.onVersion(c.version, now, orc.inFlight, orc.st.Enqueued)
	orc.backlog.published(c.version)
	if orc.o.Observer != nil && len(evs) > 0 {
		orc.o.Observer.ObserveSamples(orc.rec.stepSamples(openStep))
	}
	if len(evs) == 0 {
		return
	}
	evs = append(evs, proto.MetricEvent{Time: evs[0].Time, Component: Component, Step: evs[0].Step,
		Name: natsbus.MetricReconnects, Value: float64(natsbus.Reconnects(orc.js.Conn()))})
	id := proto.BatchID([]string{Component, orc.res.Run.ID, "step", strconv.FormatInt(evs[0].Step, 10)})
	hdr := nats.Header{}
	hdr.Set(proto.HeaderPolicyVersion, strconv.FormatInt(c.version, 10))
	if err := orc.mpub.Publish(ctx, id, evs, hdr); err != nil && ctx.Err() == nil {
		orc.log.Warn("publish step metrics", "err", err)
	}
	orc.rec.printReady(now, false)
}

// readStream delivers a stream's batches in order from sequence next on. An ordered
// consumer rather than a durable one: the position that matters is the one committed with
// the files the batches end up in (State.Record), and an ordered consumer starts exactly
// there, so a crash can neither skip nor repeat a batch.
func readStream[T any](ctx context.Context, s jetstream.Stream, codec *proto.Codec[T], next uint64, kind string,
	out chan<- event, set func(*event, []T)) error {
	err := natsbus.ReadOrdered(ctx, s, codec, next, func(seq uint64, h nats.Header, rows []T, decodeErr error) error {
		e := event{kind: kind, seq: seq, header: h}
		if decodeErr != nil {
			// Skipped, not fatal: one bad batch must not stop a run's bookkeeping.
			slog.Warn("skipping undecodable batch", "stream", kind, "seq", seq, "err", decodeErr)
		}
		set(&e, rows)
		select {
		case out <- e:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	})
	if err != nil {
		return fmt.Errorf("read %s: %w", kind, err)
	}
	return nil
}

// currentVersion reads the policy bucket's current key once; false when none is published.
func (orc *Orchestrator) currentVersion(ctx context.Context) (int64, bool) {
	gctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	e, err := orc.res.Policy.Get(gctx, proto.PolicyCurrentKey)
	if err != nil {
		return 0, false
	}
	v, err := strconv.ParseInt(strings.TrimSpace(string(e.Value())), 10, 64)
	if err != nil || v < 0 {
		return 0, false
	}
	return v, true
}

// watchVersion follows the policy bucket's current key. With none published the policy is
// version 0, the initial model, by the rollout workers' contract.
func (orc *Orchestrator) watchVersion(ctx context.Context, out chan<- event) error {
	w, err := orc.res.Policy.Watch(ctx, proto.PolicyCurrentKey)
	if err != nil {
		return fmt.Errorf("watch policy: %w", err)
	}
	defer w.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case e, ok := <-w.Updates():
			if !ok {
				return nil
			}
			if e == nil || e.Operation() != jetstream.KeyValuePut {
				continue
			}
			v, err := strconv.ParseInt(strings.TrimSpace(string(e.Value())), 10, 64)
			if err != nil || v < 0 {
				orc.log.Warn("ignoring policy version", "value", string(e.Value()))
				continue
			}
			select {
			case out <- event{kind: "version", version: v}:
			case <-ctx.Done():
				return nil
			}
		}
	}
}

// refreshInFlight reads the work queue's depth. The queue holds one prompt per message and
// a rollout worker acknowledges (deletes) it only after its rollouts and pairs are stored,
// so the depth is exactly the prompts in flight. Counting rollouts alone would leak a slot
// for every prompt a worker skips (too long for the model), which it acknowledges with no
// rollouts; the Rollouts stream still wakes the scheduler as soon as a prompt finishes.
func (orc *Orchestrator) refreshInFlight(ctx context.Context) error {
	ictx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	info, err := orc.res.Prompts.Info(ictx)
	if err != nil {
		return fmt.Errorf("prompts queue: %w", err)
	}
	orc.inFlight = int(info.State.Msgs)
	return nil
}

// streamInfo is s.Info, retried through a cluster's failover (a member that died with the
// request unanswered, a stream electing its leader) rather than ending the run.
func streamInfo(ctx context.Context, s jetstream.Stream) (*jetstream.StreamInfo, error) {
	var info *jetstream.StreamInfo
	err := natsbus.Retry(ctx, natsbus.RetryOptions{}, func(ctx context.Context) (err error) {
		info, err = s.Info(ctx)
		return err
	})
	return info, err
}

// schedule enqueues prompts as the mode allows.
func (orc *Orchestrator) schedule(ctx context.Context) error {
	if orc.exhausted() {
		return nil
	}
	switch orc.cfg.Mode {
	case ModeAsync:
		room := orc.cfg.MaxInFlight - orc.inFlight
		if limit := orc.cfg.pairsAhead(); limit > 0 {
			// A finished prompt's pairs are stored before its rollouts wake the scheduler:
			// count them before deciding there is room.
			info, err := streamInfo(ctx, orc.res.Pairs)
			if err != nil {
				return fmt.Errorf("pairs stream: %w", err)
			}
			if orc.rec.st.PairsNext <= info.State.LastSeq {
				return nil
			}
			// Pairs the trainer will reach only after they went stale are sampling thrown
			// away: stop while enough usable ones wait, counting those the prompts in flight
			// should make at the pairs per prompt seen so far. A publication frees room.
			ahead := float64(orc.backlog.usable())
			perPrompt, known := orc.pairsPerPrompt()
			if known {
				ahead += float64(orc.inFlight) * perPrompt
			}
			left := float64(limit) - ahead
			if left <= 0 {
				return nil
			}
			if known {
				room = min(room, int(math.Ceil(left/perPrompt)))
			}
		}
		if room > 0 {
			return orc.enqueue(ctx, room)
		}
		return nil
	default:
		if orc.inFlight > 0 {
			orc.doneAt = time.Time{}
			return nil
		}
		version := orc.rec.st.Version
		if orc.st.BatchVersion >= 0 && version <= orc.st.BatchVersion {
			// The batch is done; the trainer has not published since it was enqueued.
			if orc.doneAt.IsZero() {
				orc.doneAt = time.Now()
			}
			// Its last pairs are stored before its prompts are acknowledged; count them
			// before deciding whether the trainer has enough.
			info, err := streamInfo(ctx, orc.res.Pairs)
			if err != nil {
				return fmt.Errorf("pairs stream: %w", err)
			}
			if orc.rec.st.PairsNext <= info.State.LastSeq {
				return nil
			}
			// And its rollouts, which say whether the batch taught anything: a run that
			// stops on them (MaxIdlePrompts) must not sample further ahead than a batch.
			rinfo, err := streamInfo(ctx, orc.res.Rollouts)
			if err != nil {
				return fmt.Errorf("rollouts stream: %w", err)
			}
			if orc.rec.st.RolloutsNext <= rinfo.State.LastSeq {
				return nil
			}
			short := orc.rec.st.PairsSinceVersion < int64(orc.cfg.PairsPerVersion)
			stalled := time.Since(orc.doneAt) >= orc.o.SyncStall
			if !short && !stalled {
				return nil
			}
			if short {
				orc.log.Info("batch made too few pairs for a training step; sampling more with the same policy",
					"pairs", orc.rec.st.PairsSinceVersion, "pairs_per_version", orc.cfg.PairsPerVersion, "policy_version", version)
			} else {
				orc.log.Warn("no new policy version since the batch finished; sampling more with the same policy",
					"waited", time.Since(orc.doneAt).Round(time.Second), "policy_version", version)
			}
		}
		orc.doneAt = time.Time{}
		// Recorded with the batch's cursor, so a resumed run waits for the same version.
		orc.st.BatchVersion = version
		return orc.enqueue(ctx, orc.syncBatch())
	}
}

// syncBatch sizes a sync batch for the pairs the current version still needs at the pairs
// per prompt seen so far, a quarter more for luck: the trainer takes exactly PairsPerVersion
// and sync mode drops the rest, so a batch much larger than needed is sampling thrown away.
// MaxInFlight before any pair has arrived, and at most.
func (orc *Orchestrator) syncBatch() int {
	need := int64(orc.cfg.PairsPerVersion) - orc.rec.st.PairsSinceVersion
	perPrompt, known := orc.pairsPerPrompt()
	if need <= 0 || !known {
		return orc.cfg.MaxInFlight
	}
	n := int(math.Ceil(1.25 * float64(need) / perPrompt))
	return min(max(n, 1), orc.cfg.MaxInFlight)
}

// pairsPerPrompt is the run's mean number of pairs per finished prompt; false until a pair
// has arrived.
func (orc *Orchestrator) pairsPerPrompt() (float64, bool) {
	// A prompt is acknowledged (leaves the queue) only after its pairs are stored.
	done := orc.st.Enqueued - int64(orc.inFlight)
	if orc.rec.st.Pairs == 0 || done < 1 {
		return 0, false
	}
	return float64(orc.rec.st.Pairs) / float64(done), true
}

// exhausted says every epoch has been enqueued.
func (orc *Orchestrator) exhausted() bool {
	return orc.cfg.Epochs > 0 && orc.st.Epoch >= orc.cfg.Epochs
}

// permutation is epoch e's order of the prompt set: a function of seed and epoch only, so a
// resumed run recomputes it instead of storing it.
func (orc *Orchestrator) permutation(epoch int) []int {
	if orc.orderOf != epoch {
		rng := rand.New(rand.NewPCG(orc.cfg.Seed, uint64(epoch)))
		orc.order, orc.orderOf = rng.Perm(len(orc.set.Units)), epoch
	}
	return orc.order
}

// enqueue publishes up to n prompt units, one per message, and records the cursor. A
// message's id is derived from the prompt and its epoch, so the same prompt published again
// (a crash between the ack and the state write, resumed within the stream's duplicate
// window) is stored once.
func (orc *Orchestrator) enqueue(ctx context.Context, n int) error {
	now := time.Now().UTC()
	sent := 0
	epoch, cursor := orc.st.Epoch, orc.st.Cursor
	// Prompts are sampled by the policy they were scheduled for, or a newer one: a worker
	// that has not loaded it yet waits rather than make pairs the scheduler did not count on
	// (sync: off-policy ones; async: ones that go stale before the trainer reaches them).
	minVersion := orc.rec.st.Version
	if orc.cfg.Mode == ModeSync {
		minVersion = orc.st.BatchVersion
	}
	header := nats.Header{proto.HeaderMinPolicyVersion: []string{strconv.FormatInt(minVersion, 10)}}
	for sent < n && !(orc.cfg.Epochs > 0 && epoch >= orc.cfg.Epochs) {
		perm := orc.permutation(epoch)
		u := orc.set.Units[perm[cursor]]
		u.CreatedAt = now
		id := proto.BatchID([]string{"prompt", orc.res.Run.ID, u.PromptID, "epoch", strconv.Itoa(epoch)})
		if err := orc.pub.Publish(ctx, id, []proto.PromptUnit{u}, header); err != nil {
			return fmt.Errorf("enqueue: %w", err)
		}
		sent++
		if cursor++; cursor == len(perm) {
			epoch, cursor = epoch+1, 0
		}
	}
	if sent == 0 {
		return nil
	}
	if err := orc.pub.Flush(ctx); err != nil {
		return fmt.Errorf("enqueue: %w", err)
	}
	orc.st.Epoch, orc.st.Cursor = epoch, cursor
	orc.st.Enqueued += int64(sent)
	orc.inFlight += sent
	orc.log.Debug("enqueued", "prompts", sent, "epoch", epoch, "cursor", cursor, "in_flight", orc.inFlight)
	return orc.saveState()
}

// saveState writes state.json with the scheduler's current position and the recorder's
// committed one.
func (orc *Orchestrator) saveState() error {
	orc.st.Record = orc.committed
	if !orc.runStart.IsZero() {
		orc.st.WallUsed = orc.wallBase + time.Since(orc.runStart)
	}
	return orc.st.save(orc.cfg.RunDir)
}

// flush rewrites metrics.parquet and samples.parquet, then commits their stream positions
// in state.json.
func (orc *Orchestrator) flush(ctx context.Context) error {
	if err := orc.mpub.Flush(ctx); err != nil && ctx.Err() == nil {
		orc.log.Warn("publish step metrics", "err", err)
	}
	if orc.rec.dirty {
		if err := WriteMetrics(filepath.Join(orc.cfg.RunDir, MetricsFile), orc.rec.metrics); err != nil {
			return err
		}
		if err := WriteSamples(filepath.Join(orc.cfg.RunDir, SamplesFile), orc.rec.samples); err != nil {
			return err
		}
		orc.rec.dirty = false
	}
	orc.committed = orc.rec.st.clone()
	return orc.saveState()
}

// budgetReached names the budget the run has used up, if any.
func (orc *Orchestrator) budgetReached(start time.Time) string {
	c, r := orc.cfg, orc.rec.st
	switch {
	case c.MaxSteps > 0 && r.Version >= c.MaxSteps:
		return "steps"
	case c.MaxPairs > 0 && r.Pairs >= c.MaxPairs:
		return "pairs"
	case c.MaxWall > 0 && orc.wallBase+time.Since(start) >= c.MaxWall:
		return "wall time"
	case orc.exhausted() && orc.inFlight == 0:
		return "epochs"
	case orc.rec.idle.stop != "":
		return reasonNoSignal
	}
	return ""
}

// progress is where the run stands; start, startVersion and startPairs are this process's
// beginning, for its pace.
func (orc *Orchestrator) progress(start time.Time, startVersion, startPairs int64) Progress {
	r := orc.rec.st
	since := time.Since(start)
	p := Progress{
		Version: r.Version, MaxSteps: orc.cfg.MaxSteps, Pairs: r.Pairs, MaxPairs: orc.cfg.MaxPairs, MaxWall: orc.cfg.MaxWall,
		RewardMean: orc.lastReward, HasReward: orc.hasLastReward,
		PairsPerSec: float64(r.Pairs-startPairs) / max(since.Seconds(), 1e-9),
		Elapsed:     orc.wallBase + since, IdlePrompts: orc.rec.idle.streak, InFlight: orc.inFlight,
	}
	if r.Open.Rollouts > 0 {
		p.RewardMean, p.HasReward = r.Open.RewardSum/float64(r.Open.Rollouts), true
	}
	p.ETA = eta(p, startVersion, startPairs, since)
	return p
}
