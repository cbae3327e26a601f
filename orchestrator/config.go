package orchestrator

import (
	"errors"
	"fmt"
	"strings"
	"time"
)

// Mode is how sampling and training take turns.
type Mode string

const (
	// ModeSync enqueues one batch of prompts, then waits for the trainer to publish a new
	// policy version before the next (TRL's online DPO): every pair is on-policy.
	ModeSync Mode = "sync"
	// ModeAsync keeps the in-flight bound full all the time, so sampling and training
	// overlap; pairs may lag the trainer by a few versions.
	ModeAsync Mode = "async"
)

// ParseMode reads a mode name.
func ParseMode(s string) (Mode, error) {
	switch Mode(s) {
	case ModeSync, ModeAsync:
		return Mode(s), nil
	}
	return "", fmt.Errorf("mode %q: want sync or async", s)
}

// Config is one run's orchestration: what to sample, how much at once, and when to stop.
// Start from DefaultConfig: zero values are meaningful for several fields (MaxLag 0 keeps
// only on-policy pairs, budgets 0 are unlimited), so no zero value is silently replaced.
type Config struct {
	// RunDir holds state.json, metrics.parquet, samples.parquet and curves.png.
	RunDir string
	// Prompts are the prompt sources: "tinyif" (the bundled testbed's train split),
	// "tinyif:heldout", or AutoIF JSONL files (see LoadPrompts). Empty means "tinyif".
	Prompts []string
	// MinFuncAccuracy drops verification functions whose cross-validation accuracy (the
	// number next to each function in AutoIF's eval_func) is below it. 0 trusts the file.
	MinFuncAccuracy float64
	// K is how many responses rollout workers sample per prompt (>= 2: a pair needs two).
	// Whoever starts the workers passes it on (rollout.Options.K); the orchestrator warns
	// when the rollouts it sees say otherwise.
	K int
	// Mode is sync or async.
	Mode Mode
	// MaxInFlight bounds prompts enqueued but not yet sampled and scored; in sync mode it is
	// also the largest batch (a batch is sized for the pairs one version still needs, at the
	// pairs per prompt seen so far).
	MaxInFlight int
	// PairsAhead, in async mode, stops enqueuing while this many pairs wait for the trainer
	// that it can still use (an estimate: it takes PairsPerVersion per version, oldest first,
	// and drops those beyond MaxLag), counting the pairs the prompts in flight should make.
	// A pair with PairsPerVersion × (1 + MaxLag) ahead of it goes stale before the trainer
	// reaches it, so that bound, the default (-1), keeps the trainer fed without sampling
	// pairs for nothing; 0: no bound.
	PairsAhead int
	// PairsPerVersion is how many pairs the trainer takes to publish one version, exactly (its
	// batch size × gradient accumulation × publish-every). Sync mode tops a finished batch up
	// with more prompts when it produced fewer pairs, since the version it waits for cannot
	// come.
	PairsPerVersion int
	// MaxLag: pairs sampled more than MaxLag policy versions behind the current one are
	// stale. The trainer drops them (it alone knows the version it trains against); the
	// orchestrator counts those already stale on arrival as pairs/stale. It bounds async
	// mode; sync mode is on-policy whatever it says (see TrainerMaxLag).
	MaxLag int64
	// Budgets; 0 is unlimited. MaxSteps counts policy versions published by the trainer.
	MaxSteps int64
	MaxPairs int64
	MaxWall  time.Duration
	// Epochs over the prompt set; 0 cycles until a budget stops the run.
	Epochs int
	// Seed shuffles each epoch.
	Seed uint64
	// FlushEvery is how often metrics.parquet, samples.parquet and state.json are rewritten.
	FlushEvery time.Duration
	// SamplesPerStep is how many prompts per step samples.parquet keeps.
	SamplesPerStep int
	// WarnIdlePrompts: after this many finished prompts in a row made no pair, say why (by
	// cause: ties, functions raising, bad returns, timeouts, prompts too long); again at each
	// doubling. 0: never.
	WarnIdlePrompts int
	// MaxIdlePrompts stops the run, with that account and an error, after this many prompts
	// in a row made no pair: a run whose functions cannot tell its responses apart would
	// otherwise sample forever. 0: never.
	MaxIdlePrompts int
}

// TrainerMaxLag is the lag bound the trainer applies (trainer.StreamOptions.MaxPolicyLag):
// MaxLag in async mode, 0 in sync mode, where each version trains only on pairs its
// predecessor sampled and the pairs a batch made beyond one version's are dropped.
func (c Config) TrainerMaxLag() int64 {
	if c.Mode == ModeSync {
		return 0
	}
	return c.MaxLag
}

// pairsAhead is PairsAhead with -1 resolved.
func (c Config) pairsAhead() int {
	if c.PairsAhead < 0 {
		return c.PairsPerVersion * int(1+max(c.MaxLag, 0))
	}
	return c.PairsAhead
}

// DefaultConfig is the configuration `autoif run` starts from.
func DefaultConfig() Config {
	return Config{
		K:               8,
		Mode:            ModeSync,
		MaxInFlight:     16,
		PairsPerVersion: 4,
		PairsAhead:      -1,
		MaxLag:          2,
		Seed:            1,
		FlushEvery:      10 * time.Second,
		SamplesPerStep:  8,
		WarnIdlePrompts: 64,
		MaxIdlePrompts:  512,
	}
}

// Validate checks the configuration without touching any file; LoadPrompts checks the
// prompt set.
func (c Config) Validate() error {
	var errs []string
	bad := func(format string, args ...any) { errs = append(errs, fmt.Sprintf(format, args...)) }
	if c.RunDir == "" {
		bad("run directory is empty")
	}
	if c.K < 2 {
		bad("k %d: at least 2 responses per prompt are needed to make a pair", c.K)
	}
	if _, err := ParseMode(string(c.Mode)); err != nil {
		bad("%v", err)
	}
	if c.MaxInFlight < 1 {
		bad("max-in-flight %d: must be at least 1", c.MaxInFlight)
	}
	if c.PairsAhead < -1 {
		bad("pairs-ahead %d: must be -1 (pairs-per-version × (1 + max-lag)), 0 (no bound) or more", c.PairsAhead)
	}
	if c.PairsPerVersion < 1 {
		bad("pairs-per-version %d: must be at least 1", c.PairsPerVersion)
	}
	if c.MaxLag < 0 {
		bad("max-lag %d: must be 0 (on-policy pairs only) or more", c.MaxLag)
	}
	if c.MaxSteps < 0 || c.MaxPairs < 0 || c.MaxWall < 0 {
		bad("budgets must be 0 (unlimited) or positive")
	}
	if c.Epochs < 0 {
		bad("epochs %d: must be 0 (unlimited) or positive", c.Epochs)
	}
	if c.FlushEvery <= 0 {
		bad("flush-every %s: must be positive", c.FlushEvery)
	}
	if c.SamplesPerStep < 0 {
		bad("samples-per-step %d: must be 0 or more", c.SamplesPerStep)
	}
	if c.WarnIdlePrompts < 0 || c.MaxIdlePrompts < 0 {
		bad("warn-idle-prompts %d and max-idle-prompts %d: must be 0 (never) or more", c.WarnIdlePrompts, c.MaxIdlePrompts)
	}
	if c.MinFuncAccuracy < 0 || c.MinFuncAccuracy > 1 {
		bad("min-func-accuracy %g: must be in [0, 1]", c.MinFuncAccuracy)
	}
	if len(errs) > 0 {
		return errors.New("config: " + strings.Join(errs, "; "))
	}
	return nil
}

// Prepare validates the configuration and loads its prompt set: everything that can be
// wrong with a run is found here, before any server starts.
func Prepare(c Config) (*PromptSet, error) {
	if err := c.Validate(); err != nil {
		return nil, err
	}
	return LoadPrompts(c.Prompts, c.MinFuncAccuracy)
}
