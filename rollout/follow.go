package rollout

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/autoif/autoif/model"
	"github.com/autoif/autoif/natsbus"
	"github.com/autoif/autoif/proto"
	"github.com/autoif/autoif/tokenizer"
)

// Follower loads a run's policy versions as the trainer publishes them, for a process that
// only reads the policy (the OpenAI server): the run's current version at start, then each
// newer one. A rollout worker follows the same key with the same loading rule
// (loadPolicyDir), swapping between its steps.
type Follower struct {
	res *natsbus.RunResources
	o   FollowOptions
}

// FollowOptions configures a Follower.
type FollowOptions struct {
	// CacheDir receives the downloaded checkpoints (required).
	CacheDir string
	// Base is the initial model: the policy while the run has published none, the base a
	// LoRA adapter version runs over, and the tokenizer of a version published without one.
	// Nil when the run publishes whole checkpoints with tokenizers.
	Base    *Policy
	Threads int
	Logger  *slog.Logger
}

// NewFollower prepares to follow res's policy key.
func NewFollower(res *natsbus.RunResources, o FollowOptions) (*Follower, error) {
	if o.CacheDir == "" {
		return nil, errors.New("follow policy: no cache directory")
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	return &Follower{res: res, o: o}, nil
}

// Current loads the run's current version, or returns Base as version 0 when none is
// published yet.
func (f *Follower) Current(ctx context.Context) (*Policy, error) {
	e, err := f.res.Policy.Get(ctx, proto.PolicyCurrentKey)
	switch {
	case err == nil:
		v, err := parseVersion(e.Value())
		if err != nil {
			return nil, err
		}
		p, err := f.load(ctx, v)
		if err != nil {
			return nil, err
		}
		p.Published = e.Created()
		return p, nil
	case errors.Is(err, jetstream.ErrKeyNotFound):
		if f.o.Base == nil {
			return nil, fmt.Errorf("run %s has no published policy and no initial model was given", f.res.Run.ID)
		}
		return f.o.Base, nil
	default:
		return nil, fmt.Errorf("policy bucket %s: %w", f.res.Run.PolicyBucket(), err)
	}
}

// Follow calls apply with each version newer than after, loaded, until ctx ends. Versions
// published faster than they load are skipped to the newest; a version that fails to load
// is logged and skipped (the next publish may load).
func (f *Follower) Follow(ctx context.Context, after int64, apply func(*Policy)) error {
	err := watchVersions(ctx, f.res.Policy, f.o.Logger, func(v int64, published time.Time) {
		if v <= after {
			return
		}
		start := time.Now()
		p, err := f.load(ctx, v)
		if err != nil {
			if ctx.Err() == nil {
				f.o.Logger.Error("policy load failed; waiting for the next version", "version", v, "err", err)
			}
			return
		}
		p.Published = published
		f.o.Logger.Info("policy loaded", "version", v, "load", time.Since(start).Round(time.Millisecond))
		apply(p)
		after = v
	})
	if err != nil {
		return fmt.Errorf("follow policy: %w", err)
	}
	return nil
}

// load fetches version v into the cache and loads it: an adapter over Base, or a whole
// checkpoint (with Base's tokenizer when it ships none).
func (f *Follower) load(ctx context.Context, v int64) (*Policy, error) {
	dir, err := FetchCheckpoint(ctx, f.res.Checkpoints, f.res.Run, v, f.o.CacheDir)
	if err != nil {
		return nil, err
	}
	base := func() (*Policy, error) {
		if f.o.Base == nil {
			return nil, errors.New("no base model was given (the initial model directory)")
		}
		return f.o.Base, nil
	}
	var fallback *tokenizer.Tokenizer
	if f.o.Base != nil {
		fallback = f.o.Base.Tok
	}
	return loadPolicyDir(dir, v, f.o.Threads, base, fallback)
}

// loadPolicyDir loads a fetched version directory the way every follower of a run does: a
// LoRA adapter over the base model base returns (loaded only when needed), or a whole
// checkpoint, with fallback's tokenizer when it ships none.
func loadPolicyDir(dir string, v int64, threads int, base func() (*Policy, error), fallback *tokenizer.Tokenizer) (*Policy, error) {
	if model.IsAdapter(dir) {
		b, err := base()
		if err != nil {
			return nil, fmt.Errorf("policy v%d is a LoRA adapter: %w", v, err)
		}
		return LoadAdapterPolicy(dir, v, b)
	}
	return LoadPolicy(dir, v, threads, fallback)
}
