// Package rollout is autoif's rollout worker: it pulls prompt units from a run's work queue,
// samples K responses per prompt from the current policy, scores them with the code-execution
// reward, builds AutoIF preference pairs and publishes them, with the scored rollouts and
// metrics, for the trainer. Between steps it hot-swaps to the newest published policy.
//
// What the worker's rows mean, for their consumers:
//
//   - Pair.Prompt is the text the policy conditioned on (chat-rendered when
//     Options.ChatTemplate is set) and PromptTokenIDs its ids. ChosenTokenIDs and
//     RejectedTokenIDs are the sampled ids, ending with the stop token when the response
//     ended on one, so DPO also learns where to stop; Chosen and Rejected are the decoded
//     text without it, which is what the reward scored.
//   - ScoredRollout.LogProbSum sums the sampling policy's log-probs of TokenIDs (temperature
//     1, before top-p/top-k), the number the trainer recomputes.
//   - Every pair, rollout and metric batch carries proto.HeaderPolicyVersion, and every row its
//     PolicyVersion: the version that sampled it. Versions only move forward: a key set back to
//     an older version is ignored.
//   - Ids are content-derived (RolloutID, PairID, proto.BatchID): a batch published again after
//     a lost ack is stored once.
//
// A prompt message is acknowledged only after the step's pairs, rollouts and metrics are
// stored; a step that fails hands its prompts back at once, and one under way when the worker
// stops is finished first (Options.ShutdownGrace).
package rollout

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/autoif/autoif/ifeval"
	"github.com/autoif/autoif/model"
	"github.com/autoif/autoif/natsbus"
	"github.com/autoif/autoif/proto"
	"github.com/autoif/autoif/reward"
	"github.com/autoif/autoif/tokenizer"
)

// Component is the MetricEvent.Component of the worker's metrics.
const Component = "rollout"

// Metric names the worker publishes, besides the field's standard `reward/mean` and
// `policy/version`.
const (
	MetricRewardMean     = "reward/mean" // overall, and per instruction with Label = instruction id
	MetricPolicyVersion  = "policy/version"
	MetricSwapLatency    = "policy/swap_latency_s" // KV update to the first step sampling with it
	MetricPairs          = "rollout/pairs"
	MetricPairsPerSec    = "rollout/pairs_per_s"
	MetricSamplesPerSec  = "rollout/samples_per_s"
	MetricWithPair       = "rollout/prompts_with_pair" // fraction of the step's prompts
	MetricTies           = "rollout/ties_dropped"      // prompts whose responses all scored the same
	MetricIdentical      = "rollout/identical_dropped" // responses dropped as repeats of another
	MetricStepSeconds    = "rollout/step_s"
	MetricSampleSeconds  = "rollout/sample_s" // of the step: decoding the K responses per prompt
	MetricScoreSeconds   = "rollout/score_s"  // of the step: the reward's verdicts
	MetricSkippedPrompts = "rollout/skipped_prompts"
)

// Options configure a Worker. The zero value of every field means its default.
type Options struct {
	// K responses are sampled per prompt (default 8).
	K int
	// Temperature of sampling (default 0.8, the paper's; greedy decoding would make the K
	// samples one, so 0 means the default).
	Temperature float64
	// TopP in (0, 1) keeps the smallest set of tokens reaching it (default 1: all).
	TopP float64
	// TopK > 0 keeps the K most likely tokens (default 0: all).
	TopK int
	// MaxNewTokens bounds a response (default 128).
	MaxNewTokens int
	// PromptsPerStep is how many prompt units one step samples together, all × K in one
	// batch (default 8). A step takes whole queue messages, so it may hold a few more.
	PromptsPerStep int
	// Selection is the pair rule (default AutoIF's).
	Selection SelectOptions
	// Seed makes sampling reproducible; each step samples with a seed derived from it. Zero
	// picks a random seed: workers sharing one would sample the same responses.
	Seed uint64
	// ChatTemplate renders each prompt as a user turn of the tokenizer's chat template.
	ChatTemplate bool
	// ModelDir is the initial policy (version 0) when the run has no published version.
	ModelDir string
	// CacheDir receives downloaded checkpoints (default: a directory under os.TempDir()).
	CacheDir string
	// Durable names the prompt consumer all rollout workers of a run share (default "rollout").
	Durable string
	// AckWait is how long a pulled prompt may go unacknowledged before JetStream gives it to
	// another worker (default 2 minutes); a step in progress keeps extending it.
	AckWait time.Duration
	// FetchWait is how long a step that already has prompts waits for more (default 100ms).
	FetchWait time.Duration
	// PolicyWait is how long a step whose prompts ask for a newer policy version (sync mode)
	// waits for this worker to load it before sampling with the current one (default 30s).
	PolicyWait time.Duration
	// ShutdownGrace is how long a step under way when Run's context ends may take to publish
	// its pairs and acknowledge its prompts (default 30s): finishing costs less than
	// sampling the same prompts again elsewhere.
	ShutdownGrace time.Duration
	// Threads bounds the goroutines sampling uses (default GOMAXPROCS).
	Threads int
	// Name identifies this worker in logs and message ids (default host-pid).
	Name string
	// Logger receives a line per step and lifecycle events (default slog.Default()).
	Logger *slog.Logger
}

func (o Options) withDefaults() Options {
	if o.K <= 0 {
		o.K = 8
	}
	if o.Temperature <= 0 {
		o.Temperature = 0.8
	}
	if o.MaxNewTokens <= 0 {
		o.MaxNewTokens = 128
	}
	if o.PromptsPerStep <= 0 {
		o.PromptsPerStep = 8
	}
	o.Selection = o.Selection.withDefaults()
	if o.Seed == 0 {
		o.Seed = rand.Uint64() | 1
	}
	if o.Durable == "" {
		o.Durable = "rollout"
	}
	if o.AckWait <= 0 {
		o.AckWait = 2 * time.Minute
	}
	if o.FetchWait <= 0 {
		o.FetchWait = 100 * time.Millisecond
	}
	if o.PolicyWait <= 0 {
		o.PolicyWait = 30 * time.Second
	}
	if o.ShutdownGrace <= 0 {
		o.ShutdownGrace = 30 * time.Second
	}
	if o.Name == "" {
		o.Name = DefaultName()
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	return o
}

// DefaultName is a worker's name when none is given: host and process id.
func DefaultName() string {
	host, _ := os.Hostname()
	return fmt.Sprintf("%s-%d", host, os.Getpid())
}

// Stats are a worker's running totals.
type Stats struct {
	Steps   int64 `json:"steps"`
	Prompts int64 `json:"prompts"`
	Samples int64 `json:"samples"`
	Pairs   int64 `json:"pairs"`
	// Ties are prompts whose responses all scored the same; NoPair all prompts without a pair
	// (ties included); Identical responses dropped as repeats; Skipped prompts that could not
	// be sampled (empty, or too long for the model) and were acknowledged without pairs.
	Ties      int64 `json:"ties"`
	NoPair    int64 `json:"no_pair"`
	Identical int64 `json:"identical"`
	Skipped   int64 `json:"skipped"`
	Swaps     int64 `json:"swaps"`
	// PolicyVersion is the version the last step sampled with; LoadedVersion the newest one
	// loaded (ahead of PolicyVersion until the next step swaps to it).
	PolicyVersion   int64         `json:"policy_version"`
	LoadedVersion   int64         `json:"loaded_version"`
	LastSwapLatency time.Duration `json:"last_swap_latency"`
	// MeanReward is the mean score of the last step's samples.
	MeanReward float64 `json:"mean_reward"`
}

// Worker is one rollout worker of a run.
type Worker struct {
	js     jetstream.JetStream
	res    *natsbus.RunResources
	scorer reward.Scorer
	o      Options
	log    *slog.Logger

	pairs    *natsbus.Publisher[proto.Pair]
	rollouts *natsbus.Publisher[proto.ScoredRollout]
	metrics  *natsbus.Publisher[proto.MetricEvent]

	// policy is owned by the Run loop: only it reads or replaces it, between steps.
	policy *Policy
	// base is ModelDir's policy, loaded on first need (basePolicy).
	baseMu sync.Mutex
	base   *Policy
	// pending is the newest policy the watcher loaded, not yet swapped in.
	pending atomic.Pointer[Policy]
	loaded  atomic.Int64

	mu    sync.Mutex
	stats Stats
	// started counts steps begun (Stats.Steps counts those finished).
	started int64
	// tokSource is the policy in use, for the watcher to borrow its tokenizer (which nothing
	// modifies) when a checkpoint comes without one.
	tokSource *Policy
}

// New prepares a worker for a run. scorer scores responses (a local reward.Pool or the reward
// service's client); the worker does not own it. IFEval constraints among a unit's functions
// are checked in the worker, natively (reward.WithNative).
func New(js jetstream.JetStream, res *natsbus.RunResources, scorer reward.Scorer, o Options) (*Worker, error) {
	if js == nil || res == nil || scorer == nil {
		return nil, errors.New("rollout: jetstream, run resources and a scorer are required")
	}
	if err := o.Selection.Validate(); err != nil {
		return nil, fmt.Errorf("rollout: %w", err)
	}
	if o.TopP < 0 || o.TopP > 1 || o.TopK < 0 || o.Temperature < 0 {
		return nil, fmt.Errorf("rollout: temperature %g, top-p %g, top-k %d out of range", o.Temperature, o.TopP, o.TopK)
	}
	o = o.withDefaults()
	if o.CacheDir == "" {
		o.CacheDir = filepath.Join(os.TempDir(), "autoif-rollout-"+res.Run.ID+"-"+o.Name)
	}
	run := res.Run
	pub := natsbus.PublisherOptions{}
	return &Worker{
		js: js, res: res, scorer: reward.WithNative(scorer), o: o,
		log:      o.Logger.With("component", Component, "run", run.ID, "worker", o.Name),
		pairs:    natsbus.NewPairPublisher(js, run, pub),
		rollouts: natsbus.NewPublisher(js, proto.ScoredRollouts, run.Rollouts(), pub),
		metrics:  natsbus.NewPublisher(js, proto.MetricEvents, run.Metrics(), pub),
	}, nil
}

// Options returns the worker's options with defaults applied.
func (w *Worker) Options() Options { return w.o }

// Stats returns the worker's totals so far.
func (w *Worker) Stats() Stats {
	w.mu.Lock()
	defer w.mu.Unlock()
	s := w.stats
	s.LoadedVersion = w.loaded.Load()
	return s
}

// Run works until ctx ends: it loads the run's current policy (or Options.ModelDir as version
// 0 when none is published), watches for new versions, and runs steps. It returns nil when
// ctx ends; prompts pulled but not finished go back to the queue at once.
func (w *Worker) Run(ctx context.Context) error {
	if err := w.loadInitial(ctx); err != nil {
		return err
	}
	cons, err := natsbus.NewConsumer(ctx, w.res.Conn, w.res.Prompts, proto.PromptUnits, natsbus.ConsumerOptions{
		Durable: w.o.Durable, AckWait: w.o.AckWait,
		// Shared by every worker of the run: the cap bounds prompts in flight over all of them.
		MaxAckPending: 4096,
		// A worker should not hoard prompts other workers could sample.
		PullBatch: max(1, w.o.PromptsPerStep/2),
		Logger:    w.log,
	}, nil)
	if err != nil {
		return fmt.Errorf("rollout: prompts: %w", err)
	}
	defer cons.Close()

	wctx, stop := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		w.watchPolicy(wctx)
	}()
	defer func() {
		stop()
		wg.Wait()
	}()

	w.log.Info("rollout worker started", "policy_version", w.policy.Version, "k", w.o.K, "prompts_per_step", w.o.PromptsPerStep,
		"temperature", w.o.Temperature, "max_new_tokens", w.o.MaxNewTokens, "selection", w.o.Selection.Mode, "seed", w.o.Seed)
	backoff := time.Second
	for {
		err := w.runStep(ctx, cons)
		if ctx.Err() != nil {
			w.log.Info("rollout worker stopped", "steps", w.Stats().Steps)
			return nil
		}
		if err == nil {
			backoff = time.Second
			continue
		}
		// A failed step handed its prompts back; whatever failed (reward service, bus) may
		// recover, so wait and go on rather than take the worker down.
		w.log.Error("rollout step failed", "err", err, "retry_in", backoff)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 30*time.Second)
	}
}

// loadInitial loads the run's current policy version, or ModelDir as version 0.
func (w *Worker) loadInitial(ctx context.Context) error {
	e, err := w.res.Policy.Get(ctx, proto.PolicyCurrentKey)
	switch {
	case err == nil:
		v, perr := parseVersion(e.Value())
		if perr != nil {
			return fmt.Errorf("rollout: %w", perr)
		}
		// A checkpoint published without tokenizer files borrows the initial model's.
		var fallback *tokenizer.Tokenizer
		if w.o.ModelDir != "" {
			fallback, _ = tokenizer.Load(w.o.ModelDir)
		}
		p, err := w.fetchAndLoad(ctx, v, fallback)
		if err != nil {
			return fmt.Errorf("rollout: current policy: %w", err)
		}
		p.Published = e.Created()
		w.policy = p
	case errors.Is(err, jetstream.ErrKeyNotFound):
		if w.o.ModelDir == "" {
			return fmt.Errorf("rollout: run %s has no published policy and no initial model was given", w.res.Run.ID)
		}
		p, err := w.basePolicy()
		if err != nil {
			return fmt.Errorf("rollout: initial model: %w", err)
		}
		w.policy = p
	default:
		return fmt.Errorf("rollout: policy bucket %s: %w", w.res.Run.PolicyBucket(), err)
	}
	if w.o.ChatTemplate {
		if _, _, err := w.policy.encodePrompt("x", true); err != nil {
			return fmt.Errorf("rollout: initial policy: %w", err)
		}
	}
	w.loaded.Store(w.policy.Version)
	w.mu.Lock()
	w.stats.PolicyVersion = w.policy.Version
	w.tokSource = w.policy
	w.mu.Unlock()
	return nil
}

// basePolicy is Options.ModelDir loaded once as version 0: the initial policy, and the base
// weights every LoRA adapter version runs over (shared, so an adapter swap loads megabytes).
func (w *Worker) basePolicy() (*Policy, error) {
	w.baseMu.Lock()
	defer w.baseMu.Unlock()
	if w.base != nil {
		return w.base, nil
	}
	if w.o.ModelDir == "" {
		return nil, errors.New("no base model was given (the initial model directory)")
	}
	p, err := LoadPolicy(w.o.ModelDir, 0, w.o.Threads, nil)
	if err != nil {
		return nil, err
	}
	w.base = p
	return p, nil
}

func parseVersion(b []byte) (int64, error) {
	v, err := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
	if err != nil || v < 0 {
		return 0, fmt.Errorf("policy key %q: value %q is not a version number", proto.PolicyCurrentKey, b)
	}
	return v, nil
}

func (w *Worker) fetchAndLoad(ctx context.Context, v int64, fallback *tokenizer.Tokenizer) (*Policy, error) {
	dir, err := FetchCheckpoint(ctx, w.res.Checkpoints, w.res.Run, v, w.o.CacheDir)
	if err != nil {
		return nil, err
	}
	p, err := loadPolicyDir(dir, v, w.o.Threads, w.basePolicy, fallback)
	if err != nil {
		return nil, err
	}
	if !p.IsAdapter() {
		// A full checkpoint needs no base: let the initial model go once nothing samples
		// with it (a gigabyte at the 0.5B shape); an adapter version would load it again.
		w.baseMu.Lock()
		w.base = nil
		w.baseMu.Unlock()
	}
	p.cached = true
	// Found out now, not at every step after the swap: a version whose template cannot be
	// rendered would fail each step and hand its prompts back forever.
	if w.o.ChatTemplate {
		if _, _, err := p.encodePrompt("x", true); err != nil {
			return nil, err
		}
	}
	return p, nil
}

// watchPolicy follows the run's policy key and loads each newer version in the background,
// so that a step only swaps a pointer. Versions published faster than they load are skipped
// to the newest.
func (w *Worker) watchPolicy(ctx context.Context) {
	err := watchVersions(ctx, w.res.Policy, w.log, func(v int64, published time.Time) {
		if v > w.loaded.Load() {
			w.loadVersion(ctx, v, published)
		}
	})
	if err != nil {
		w.log.Error("policy watch failed: this worker will not hot-swap", "err", err)
	}
}

// watchVersions calls newer with each version the run's policy key is set to, until ctx
// ends. Updates that arrived while newer ran are coalesced to the newest: a follower that
// loads slower than the trainer publishes skips to the latest version.
//
// The key is also read every policyPoll: a watch is a consumer on one cluster member, and
// after that member dies it can take minutes to notice, while the key itself is readable
// from any survivor within seconds.
func watchVersions(ctx context.Context, kv jetstream.KeyValue, log *slog.Logger, newer func(v int64, published time.Time)) error {
	kw, err := kv.Watch(ctx, proto.PolicyCurrentKey)
	if err != nil {
		return err
	}
	defer kw.Stop()
	poll := time.NewTicker(policyPoll)
	defer poll.Stop()
	last := int64(-1)
	for {
		var e jetstream.KeyValueEntry
		polled := false
		select {
		case <-ctx.Done():
			return nil
		case <-poll.C:
			gctx, cancel := context.WithTimeout(ctx, policyPoll)
			u, err := kv.Get(gctx, proto.PolicyCurrentKey)
			cancel()
			if err != nil {
				continue
			}
			e, polled = u, true
		case u, ok := <-kw.Updates():
			if !ok {
				return nil
			}
			e = u
		}
	drain:
		for {
			select {
			case u, ok := <-kw.Updates():
				if !ok {
					break drain
				}
				if u != nil {
					e, polled = u, false
				}
			default:
				break drain
			}
		}
		if e == nil || e.Operation() != jetstream.KeyValuePut {
			continue
		}
		v, err := parseVersion(e.Value())
		if err != nil {
			log.Error("ignoring policy update", "err", err)
			continue
		}
		if polled && v <= last {
			continue
		}
		last = v
		newer(v, e.Created())
	}
}

// policyPoll is how often watchVersions reads the policy key besides watching it.
const policyPoll = 2 * time.Second

// loadVersion fetches and loads version v, retrying with a growing pause until it loads or a
// newer version is published: the trainer puts the files before it moves the key, so a
// failure is the bus or the disk, which may recover.
func (w *Worker) loadVersion(ctx context.Context, v int64, published time.Time) {
	src := w.pending.Load()
	if src == nil {
		w.mu.Lock()
		src = w.tokSource
		w.mu.Unlock()
	}
	for attempt := 1; ; attempt++ {
		start := time.Now()
		p, err := w.fetchAndLoad(ctx, v, src.Tok)
		if err == nil {
			p.Published = published
			if old := w.pending.Swap(p); old != nil && old.cached {
				os.RemoveAll(old.Dir)
			}
			w.loaded.Store(v)
			w.log.Info("policy loaded", "version", v, "load", time.Since(start).Round(time.Millisecond))
			return
		}
		if ctx.Err() != nil {
			return
		}
		// Keep trying while v is the run's newest version: in sync mode the orchestrator's
		// next batch asks for v and the trainer takes only v's pairs, so giving up would stall
		// the run for good (seen: a 2 GB checkpoint's fetch timing out under load). A newer
		// version supersedes v; the watcher delivers it next.
		if e, gerr := w.res.Policy.Get(ctx, proto.PolicyCurrentKey); gerr == nil {
			if cur, perr := parseVersion(e.Value()); perr == nil && cur > v {
				w.log.Warn("policy load failed; a newer version supersedes it", "version", v, "newest", cur, "err", err)
				return
			}
		}
		backoff := min(time.Duration(attempt)*time.Second, 30*time.Second)
		w.log.Warn("policy load failed; retrying", "version", v, "attempt", attempt, "retry_in", backoff, "err", err)
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
	}
}

// swapPolicy moves to the newest loaded policy, between steps. It returns the hot-swap
// latency when it swapped.
func (w *Worker) swapPolicy() (time.Duration, bool) {
	p := w.pending.Swap(nil)
	if p == nil || p.Version <= w.policy.Version {
		return 0, false
	}
	old := w.policy
	w.policy = p
	latency := time.Duration(0)
	if !p.Published.IsZero() {
		latency = time.Since(p.Published)
	}
	w.mu.Lock()
	w.tokSource = p
	w.stats.Swaps++
	w.stats.LastSwapLatency = latency
	w.mu.Unlock()
	if old.cached && old.Dir != p.Dir {
		// The old policy's weights are in memory; its files are no longer needed.
		os.RemoveAll(old.Dir)
	}
	w.log.Info("policy swapped", "from", old.Version, "to", p.Version, "swap_latency", latency.Round(time.Millisecond))
	return latency, true
}

// minPolicyVersion is the newest HeaderMinPolicyVersion among a step's messages, -1 if none
// sets one.
func minPolicyVersion(msgs stepMsgs) int64 {
	v := int64(-1)
	for _, b := range msgs {
		if h := b.Header.Get(proto.HeaderMinPolicyVersion); h != "" {
			if n, err := strconv.ParseInt(h, 10, 64); err == nil {
				v = max(v, n)
			}
		}
	}
	return v
}

// awaitPolicy holds a step whose prompts ask for a policy version newer than the worker's
// until the watcher has loaded it (sync mode enqueues the next batch the moment a version
// is published, usually before this worker has fetched it). After PolicyWait it samples
// with what it has, and says so: the pairs carry their version, and the trainer's lag
// bound still applies.
func (w *Worker) awaitPolicy(ctx context.Context, want int64) error {
	if want < 0 || w.policy.Version >= want {
		return nil
	}
	deadline := time.Now().Add(w.o.PolicyWait)
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for w.loaded.Load() < want {
		if time.Now().After(deadline) {
			w.log.Warn("prompts ask for a policy version this worker has not loaded; sampling with the current one",
				"want", want, "current", w.policy.Version, "loaded", w.loaded.Load(), "waited", w.o.PolicyWait)
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-tick.C:
		}
	}
	return nil
}

// stepMsgs are the prompt messages one step holds.
type stepMsgs []*natsbus.Batch[proto.PromptUnit]

func (m stepMsgs) nak() {
	for _, b := range m {
		_ = b.Nak()
	}
}

// collect blocks for the first prompt message, then takes more while they come within
// FetchWait, up to PromptsPerStep units.
func (w *Worker) collect(ctx context.Context, cons *natsbus.Consumer[proto.PromptUnit]) (stepMsgs, []proto.PromptUnit, error) {
	var msgs stepMsgs
	var units []proto.PromptUnit
	for len(units) < w.o.PromptsPerStep {
		fctx, cancel := ctx, context.CancelFunc(func() {})
		if len(msgs) > 0 {
			fctx, cancel = context.WithTimeout(ctx, w.o.FetchWait)
		}
		b, err := cons.Next(fctx)
		cancel()
		if err != nil {
			if ctx.Err() != nil {
				msgs.nak()
				return nil, nil, ctx.Err()
			}
			if len(msgs) > 0 && errors.Is(err, context.DeadlineExceeded) {
				break
			}
			msgs.nak()
			return nil, nil, err
		}
		msgs = append(msgs, b)
		units = append(units, b.Rows...)
	}
	return msgs, units, nil
}

// keepAlive tells JetStream the step's prompts are still being worked on until stop is
// called, so a long step does not see them redelivered to another worker.
func (w *Worker) keepAlive(msgs stepMsgs) (stop func()) {
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		t := time.NewTicker(w.o.AckWait / 3)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
				for _, b := range msgs {
					_ = b.InProgress()
				}
			}
		}
	}()
	return func() {
		close(done)
		wg.Wait()
	}
}

// sample is one response with what the step learned about it.
type sample struct {
	unit    int // index into the step's units
	index   int // among the unit's K samples
	tokens  []int32
	text    string
	logprob float64
	score   reward.ResponseScore
	// errKinds labels each function that gave no verdict (reward.Eval.Label), skipped ones
	// aside; errExample is one message of those, or of a skipped result.
	errKinds   []string
	errExample string
	rollout    string
	finished   string
}

// prepared is one prompt unit ready to sample.
type prepared struct {
	unit   proto.PromptUnit
	tokens []int
	text   string // the text the tokens spell (chat-rendered when templating)
}

func (w *Worker) runStep(ctx context.Context, cons *natsbus.Consumer[proto.PromptUnit]) error {
	msgs, units, err := w.collect(ctx, cons)
	if err != nil {
		return err
	}
	stopKeepAlive := w.keepAlive(msgs)
	defer stopKeepAlive()
	// The step outlives ctx by up to ShutdownGrace, so a stop between sampling and
	// acknowledging does not throw the samples away.
	sctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	defer cancel()
	stopGrace := context.AfterFunc(ctx, func() {
		t := time.AfterFunc(w.o.ShutdownGrace, cancel)
		<-sctx.Done()
		t.Stop()
	})
	defer stopGrace()
	if err := w.awaitPolicy(sctx, minPolicyVersion(msgs)); err != nil {
		msgs.nak()
		return err
	}
	if err := w.step(sctx, units); err != nil {
		msgs.nak()
		return err
	}
	// Only now are the step's pairs stored: acknowledging earlier could lose a prompt's
	// pairs to a crash, acknowledging later only risks sampling it twice.
	for _, b := range msgs {
		if err := b.AckSync(sctx); err != nil {
			return fmt.Errorf("ack prompts: %w", err)
		}
	}
	return nil
}

func (w *Worker) step(ctx context.Context, units []proto.PromptUnit) error {
	start := time.Now()
	latency, swapped := w.swapPolicy()
	pol := w.policy
	w.mu.Lock()
	w.started++
	stepNo := w.started
	w.mu.Unlock()
	seed := stepSeed(w.o.Seed, stepNo)

	// Prepare prompts; a unit the model cannot take is skipped, not retried forever.
	var ready []prepared
	skipped := 0
	maxPos := pol.Model.Config.MaxPositionEmbeddings
	for _, u := range units {
		ids, text, err := pol.encodePrompt(u.Prompt, w.o.ChatTemplate)
		switch {
		case err != nil:
			return err
		case len(ids) == 0 || (maxPos > 0 && len(ids)+w.o.MaxNewTokens > maxPos):
			w.log.Warn("skipping prompt the model cannot take", "prompt_id", u.PromptID, "prompt_tokens", len(ids), "max_positions", maxPos)
			skipped++
			continue
		}
		ready = append(ready, prepared{unit: u, tokens: ids, text: text})
	}

	// One batch: every prompt × K.
	batch := make([][]int, 0, len(ready)*w.o.K)
	for _, p := range ready {
		for range w.o.K {
			batch = append(batch, p.tokens)
		}
	}
	tok := pol.Tok
	gen, err := pol.Model.Generate(batch, model.SampleOptions{
		MaxNewTokens: w.o.MaxNewTokens, Temperature: w.o.Temperature, TopP: w.o.TopP, TopK: w.o.TopK,
		Seed: seed, StopTokens: pol.stopTokens(),
	})
	if err != nil {
		return fmt.Errorf("sample with policy v%d: %w", pol.Version, err)
	}
	sampleDur := time.Since(start)
	stops := map[int]bool{}
	for _, id := range pol.stopTokens() {
		stops[id] = true
	}
	samples := make([]sample, len(gen))
	for i, g := range gen {
		u, k := i/w.o.K, i%w.o.K
		body := g.Tokens
		if g.Finish == model.FinishStopToken && len(body) > 0 && stops[body[len(body)-1]] {
			body = body[:len(body)-1]
		}
		text, err := tok.Decode(body)
		if err != nil {
			return fmt.Errorf("decode sample: %w", err)
		}
		var lp float64
		for _, x := range g.LogProbs {
			lp += float64(x)
		}
		samples[i] = sample{
			unit: u, index: k, tokens: toInt32(g.Tokens), logprob: lp, finished: g.Finish,
			// What the reward scores and what is stored must be the same text, and the
			// sandbox's JSON transport would replace invalid UTF-8 anyway.
			text:    strings.ToValidUTF8(text, "\uFFFD"),
			rollout: RolloutID(ready[u].unit.PromptID, pol.Version, seed, k),
		}
	}

	// Score: one call per prompt (its functions × its K responses), prompts concurrently.
	scoreStart := time.Now()
	perConstraint, err := w.score(ctx, ready, samples)
	if err != nil {
		return err
	}
	scoreDur := time.Since(scoreStart)

	now := time.Now().UTC()
	var pairs []proto.Pair
	rollouts := make([]proto.ScoredRollout, 0, len(samples))
	var ties, identical, withPair int
	var sum float64
	var evals reward.ResponseScore // the step's function outcomes, summed over responses
	perInstr := map[string][2]float64{}
	for u, p := range ready {
		group := samples[u*w.o.K : (u+1)*w.o.K]
		cands := make([]Candidate, len(group))
		for i, s := range group {
			cands[i] = Candidate{Index: s.index, Text: s.text, Score: s.score.Score}
			sum += s.score.Score
			evals.Passed += s.score.Passed
			evals.Ran += s.score.Ran
			evals.Errors += s.score.Errors
			evals.Timeouts += s.score.Timeouts
			evals.Skipped += s.score.Skipped
			acc := perInstr[p.unit.InstructionID]
			perInstr[p.unit.InstructionID] = [2]float64{acc[0] + s.score.Score, acc[1] + 1}
			rollouts = append(rollouts, proto.ScoredRollout{
				RolloutID: s.rollout, PromptID: p.unit.PromptID, InstructionID: p.unit.InstructionID,
				Response: s.text, TokenIDs: s.tokens, LogProbSum: s.logprob, Score: s.score.Score,
				Passed: int32(s.score.Passed), Failed: int32(s.score.Ran - s.score.Passed), Errors: int32(s.score.Errors),
				Timeouts: int32(s.score.Timeouts), Skipped: int32(s.score.Skipped), ErrorKinds: s.errKinds, ErrorExample: s.errExample,
				PolicyVersion: pol.Version, CreatedAt: now,
			})
		}
		sel := SelectPairs(p.unit.PromptID, cands, w.o.Selection)
		for i := len(rollouts) - len(group); i < len(rollouts); i++ {
			rollouts[i].PromptPairs = int32(len(sel.Pairs))
		}
		identical += sel.Identical
		if sel.Tie {
			ties++
		}
		if len(sel.Pairs) > 0 {
			withPair++
		}
		promptIDs := toInt32(p.tokens)
		for _, ip := range sel.Pairs {
			c, r := group[ip.Chosen], group[ip.Rejected]
			pairs = append(pairs, proto.Pair{
				PairID: PairID(p.unit.PromptID, pol.Version, c.rollout, r.rollout), PromptID: p.unit.PromptID,
				Prompt: p.text, Chosen: c.text, Rejected: r.text,
				PromptTokenIDs: promptIDs, ChosenTokenIDs: c.tokens, RejectedTokenIDs: r.tokens,
				ChosenScore: c.score.Score, RejectedScore: r.score.Score,
				PolicyVersion: pol.Version, CreatedAt: now,
			})
		}
	}

	// Publish pairs, rollouts and metrics, and wait until JetStream stores all of them.
	hdr := nats.Header{}
	hdr.Set(proto.HeaderPolicyVersion, strconv.FormatInt(pol.Version, 10))
	if len(pairs) > 0 {
		ids := make([]string, len(pairs))
		for i := range pairs {
			ids[i] = pairs[i].PairID
		}
		if err := w.pairs.Publish(ctx, proto.BatchID(ids), pairs, hdr); err != nil {
			return err
		}
	}
	if len(rollouts) > 0 {
		ids := make([]string, len(rollouts))
		for i := range rollouts {
			ids[i] = rollouts[i].RolloutID
		}
		if err := w.rollouts.Publish(ctx, proto.BatchID(ids), rollouts, hdr); err != nil {
			return err
		}
	}
	elapsed := time.Since(start)
	mean := 0.0
	if len(samples) > 0 {
		mean = sum / float64(len(samples))
	}
	events := w.stepMetrics(stepNo, now, pol.Version, mean, perInstr, len(pairs), len(samples), len(ready), withPair, ties, identical, skipped, elapsed, latency, swapped)
	for _, id := range slices.Sorted(maps.Keys(perConstraint)) {
		acc := perConstraint[id]
		if acc[1] == 0 {
			continue
		}
		events = append(events, proto.MetricEvent{Time: now, Component: Component, Step: stepNo, Name: MetricRewardMean, Value: acc[0] / acc[1], Label: ConstraintLabelPrefix + id})
	}
	events = append(events, proto.MetricEvent{Time: now, Component: Component, Step: stepNo, Name: MetricSampleSeconds, Value: sampleDur.Seconds()},
		proto.MetricEvent{Time: now, Component: Component, Step: stepNo, Name: MetricScoreSeconds, Value: scoreDur.Seconds()},
		proto.MetricEvent{Time: now, Component: Component, Step: stepNo, Name: natsbus.MetricReconnects, Value: float64(natsbus.Reconnects(w.js.Conn()))})
	if err := w.metrics.Publish(ctx, proto.BatchID([]string{w.o.Name, strconv.FormatUint(w.o.Seed, 10), strconv.FormatInt(stepNo, 10)}), events, hdr); err != nil {
		return err
	}
	for _, p := range []interface{ Flush(context.Context) error }{w.pairs, w.rollouts, w.metrics} {
		if err := p.Flush(ctx); err != nil {
			return fmt.Errorf("publish step %d: %w", stepNo, err)
		}
	}

	w.mu.Lock()
	w.stats.Steps++
	w.stats.Prompts += int64(len(units))
	w.stats.Samples += int64(len(samples))
	w.stats.Pairs += int64(len(pairs))
	w.stats.Ties += int64(ties)
	w.stats.NoPair += int64(len(ready) - withPair)
	w.stats.Identical += int64(identical)
	w.stats.Skipped += int64(skipped)
	w.stats.PolicyVersion = pol.Version
	w.stats.MeanReward = mean
	w.mu.Unlock()
	w.log.Info("step", "step", stepNo, "v", pol.Version, "prompts", len(units), "samples", len(samples),
		"reward", strconv.FormatFloat(mean, 'f', 3, 64), "pairs", len(pairs), "with_pair", withPair, "ties", ties,
		"pass", evals.Passed, "fail", evals.Ran-evals.Passed, "skipped", evals.Skipped, "errors", evals.Errors-evals.Timeouts, "timeouts", evals.Timeouts,
		"sample", sampleDur.Round(time.Millisecond), "score", scoreDur.Round(time.Millisecond), "total", elapsed.Round(time.Millisecond))
	return nil
}

// ConstraintLabelPrefix labels the reward/mean of one IFEval constraint type (the share of
// responses that follow it) among a step's metrics: "constraint:punctuation:no_comma".
const ConstraintLabelPrefix = "constraint:"

// score fills in every sample's score, and returns for each IFEval constraint type among the
// units' functions how many verdicts followed it and how many there were.
func (w *Worker) score(ctx context.Context, ready []prepared, samples []sample) (map[string][2]float64, error) {
	errs := make([]error, len(ready))
	perUnit := make([]map[string][2]float64, len(ready))
	var wg sync.WaitGroup
	for u := range ready {
		group := samples[u*w.o.K : (u+1)*w.o.K]
		texts := make([]string, len(group))
		for i, s := range group {
			texts[i] = s.text
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			res, err := w.scorer.Score(ctx, ready[u].unit.Functions, texts)
			switch {
			case err != nil:
				errs[u] = fmt.Errorf("score prompt %s: %w", ready[u].unit.PromptID, err)
			case len(res.Scores) != len(group):
				errs[u] = fmt.Errorf("score prompt %s: %d scores for %d responses", ready[u].unit.PromptID, len(res.Scores), len(group))
			default:
				for i := range group {
					group[i].score = res.Scores[i]
					var skippedMsg string
					for _, row := range res.Evals {
						if i >= len(row) || row[i].Ran() {
							continue
						}
						e := row[i]
						if e.Outcome == reward.Skipped {
							skippedMsg = cmp.Or(skippedMsg, e.Message)
							continue
						}
						group[i].errKinds = append(group[i].errKinds, e.Label())
						if group[i].errExample == "" {
							group[i].errExample = e.Message
						}
					}
					group[i].errExample = truncateText(cmp.Or(group[i].errExample, skippedMsg), 300)
				}
				perUnit[u] = constraintTally(ready[u].unit.Functions, res)
			}
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	total := map[string][2]float64{}
	for _, m := range perUnit {
		for id, acc := range m {
			t := total[id]
			total[id] = [2]float64{t[0] + acc[0], t[1] + acc[1]}
		}
	}
	return total, nil
}

// constraintTally counts, per IFEval constraint type among funcs, the verdicts that followed
// it and all its verdicts.
func constraintTally(funcs []string, res *reward.Result) map[string][2]float64 {
	var out map[string][2]float64
	for f, fn := range funcs {
		id := ifeval.ConstraintID(fn)
		if id == "" || f >= len(res.Evals) {
			continue
		}
		if out == nil {
			out = map[string][2]float64{}
		}
		acc := out[id]
		for _, e := range res.Evals[f] {
			if e.Ran() {
				acc[1]++
				if e.Outcome == reward.Pass {
					acc[0]++
				}
			}
		}
		out[id] = acc
	}
	return out
}

func (w *Worker) stepMetrics(step int64, now time.Time, version int64, mean float64, perInstr map[string][2]float64,
	pairs, samples, prompts, withPair, ties, identical, skipped int, elapsed, latency time.Duration, swapped bool) []proto.MetricEvent {
	ev := func(name string, v float64, label string) proto.MetricEvent {
		return proto.MetricEvent{Time: now, Component: Component, Step: step, Name: name, Value: v, Label: label}
	}
	secs := max(elapsed.Seconds(), 1e-9)
	frac := 0.0
	if prompts > 0 {
		frac = float64(withPair) / float64(prompts)
	}
	out := []proto.MetricEvent{
		ev(MetricPolicyVersion, float64(version), ""),
		ev(MetricRewardMean, mean, ""),
		ev(MetricPairs, float64(pairs), ""),
		ev(MetricPairsPerSec, float64(pairs)/secs, ""),
		ev(MetricSamplesPerSec, float64(samples)/secs, ""),
		ev(MetricWithPair, frac, ""),
		ev(MetricTies, float64(ties), ""),
		ev(MetricIdentical, float64(identical), ""),
		ev(MetricSkippedPrompts, float64(skipped), ""),
		ev(MetricStepSeconds, elapsed.Seconds(), ""),
	}
	if swapped {
		out = append(out, ev(MetricSwapLatency, latency.Seconds(), ""))
	}
	for _, id := range slices.Sorted(maps.Keys(perInstr)) {
		acc := perInstr[id]
		out = append(out, ev(MetricRewardMean, acc[0]/acc[1], id))
	}
	return out
}

// stepSeed derives a step's sampling seed (SplitMix64 of seed and step), so consecutive steps
// and workers with nearby seeds sample unrelated streams.
func stepSeed(seed uint64, step int64) uint64 {
	z := seed + uint64(step)*0x9e3779b97f4a7c15
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9
	z = (z ^ (z >> 27)) * 0x94d049bb133111eb
	return z ^ (z >> 31)
}

func toInt32(ids []int) []int32 {
	out := make([]int32, len(ids))
	for i, id := range ids {
		out[i] = int32(id)
	}
	return out
}

// truncateText cuts s to at most n runes, marking the cut.
func truncateText(s string, n int) string {
	if r := []rune(s); len(r) > n {
		return string(r[:n-1]) + "…"
	}
	return s
}
