package natsbus

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/autoif/autoif/proto"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// RunOptions shape a run's JetStream resources.
type RunOptions struct {
	// Memory keeps streams in memory instead of files (tests, throwaway benchmarks).
	Memory bool
	// Replicas per stream, bucket and object store. More than one needs a NATS cluster with
	// at least that many live members when the run's streams are first created; the run then
	// outlives the loss of a minority of them. 0 keeps an existing run's count (so a component
	// that joins never scales a run down), and is 1 for a new run.
	Replicas int
	// DuplicateWindow is how long JetStream remembers message ids to drop re-publishes
	// (default 2 minutes).
	DuplicateWindow time.Duration
	// MaxPairBytes caps the pair stream; the oldest batches go first (0 = unlimited).
	MaxPairBytes int64
}

// RunResources are the JetStream handles of one run.
type RunResources struct {
	Run         proto.Run
	Prompts     jetstream.Stream
	Pairs       jetstream.Stream
	Rollouts    jetstream.Stream
	Metrics     jetstream.Stream
	Policy      jetstream.KeyValue
	Checkpoints jetstream.ObjectStore
	// Conn is the connection the handles use; consumers pull over it.
	Conn *nats.Conn
}

// EnsureRun creates the run's streams, KV bucket and object store, or verifies that existing
// ones fit (JetStream refuses changes it cannot apply, such as a retention policy). It is
// idempotent: every component calls it on start.
func EnsureRun(ctx context.Context, js jetstream.JetStream, run proto.Run, o RunOptions) (*RunResources, error) {
	storage := jetstream.FileStorage
	if o.Memory {
		storage = jetstream.MemoryStorage
	}
	if o.DuplicateWindow == 0 {
		o.DuplicateWindow = 2 * time.Minute
	}
	if o.Replicas < 0 {
		return nil, fmt.Errorf("run %s: %d replicas", run.ID, o.Replicas)
	}
	// Every request is retried: a component may start while the cluster elects a leader.
	var existing jetstream.Stream
	err := Retry(ctx, RetryOptions{}, func(ctx context.Context) (err error) {
		existing, err = js.Stream(ctx, run.PairsStream())
		return err
	})
	switch {
	case errors.Is(err, jetstream.ErrStreamNotFound):
		if o.Replicas == 0 {
			o.Replicas = 1
		}
		if err := checkReplicas(ctx, js.Conn(), o.Replicas); err != nil {
			return nil, fmt.Errorf("run %s: %w", run.ID, err)
		}
	case err != nil:
		return nil, fmt.Errorf("run %s: stream %s: %w", run.ID, run.PairsStream(), err)
	case o.Replicas == 0:
		o.Replicas = max(existing.CachedInfo().Config.Replicas, 1)
	}
	stream := func(name, subject string, retention jetstream.RetentionPolicy, maxBytes int64) (jetstream.Stream, error) {
		cfg := jetstream.StreamConfig{
			Name:       name,
			Subjects:   []string{subject},
			Retention:  retention,
			Storage:    storage,
			Replicas:   o.Replicas,
			Duplicates: o.DuplicateWindow,
			MaxBytes:   maxBytes,
			Discard:    jetstream.DiscardOld,
		}
		if maxBytes == 0 {
			cfg.MaxBytes = -1
		}
		var s jetstream.Stream
		err := Retry(ctx, RetryOptions{}, func(ctx context.Context) (err error) {
			s, err = js.CreateOrUpdateStream(ctx, cfg)
			return err
		})
		if err != nil {
			return nil, fmt.Errorf("run %s: stream %s: %w", run.ID, name, err)
		}
		return s, nil
	}
	r := &RunResources{Run: run, Conn: js.Conn()}
	if r.Prompts, err = stream(run.PromptsStream(), run.Prompts(), jetstream.WorkQueuePolicy, 0); err != nil {
		return nil, err
	}
	if r.Pairs, err = stream(run.PairsStream(), run.Pairs(), jetstream.LimitsPolicy, o.MaxPairBytes); err != nil {
		return nil, err
	}
	if r.Rollouts, err = stream(run.RolloutsStream(), run.Rollouts(), jetstream.LimitsPolicy, 0); err != nil {
		return nil, err
	}
	if r.Metrics, err = stream(run.MetricsStream(), run.Metrics(), jetstream.LimitsPolicy, 0); err != nil {
		return nil, err
	}
	err = Retry(ctx, RetryOptions{}, func(ctx context.Context) (err error) {
		r.Policy, err = js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
			Bucket:      run.PolicyBucket(),
			Description: "autoif run " + run.ID + ": current policy version",
			History:     16,
			Storage:     storage,
			Replicas:    o.Replicas,
		})
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("run %s: policy bucket %s: %w", run.ID, run.PolicyBucket(), err)
	}
	err = Retry(ctx, RetryOptions{}, func(ctx context.Context) (err error) {
		r.Checkpoints, err = js.CreateOrUpdateObjectStore(ctx, jetstream.ObjectStoreConfig{
			Bucket:      run.CheckpointBucket(),
			Description: "autoif run " + run.ID + ": policy checkpoints",
			Storage:     storage,
			Replicas:    o.Replicas,
		})
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("run %s: checkpoint store %s: %w", run.ID, run.CheckpointBucket(), err)
	}
	return r, nil
}
