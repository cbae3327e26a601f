package trainer

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/autoif/autoif/model"
	"github.com/autoif/autoif/natsbus"
	"github.com/autoif/autoif/proto"
)

// StreamOptions configure the online trainer (`autoif train stream`).
type StreamOptions struct {
	// ModelDir is the starting policy and the frozen reference (RefDir overrides the latter).
	ModelDir, RefDir string
	// OutDir holds local checkpoints (resume state); KeepLast of them are kept (default 3).
	// It also holds the pair ledger pairs_ledger.tsv (see LedgerFile): one line per pair
	// consumed, "<step>\t<policy version>\t<pair id>\t<applied|dropped:reason>", written and
	// fsynced before the checkpoint that covers it and cut back to the checkpoint's
	// State.LedgerBytes on resume, so that by pair id nothing is trained twice or lost.
	OutDir   string
	KeepLast int
	Trainer  Options
	// PairsPerStep is how many pairs one optimiser step takes, exactly (default
	// Trainer.BatchSize); the rest of a batch waits for the next step.
	PairsPerStep int
	// PublishEvery publishes a new policy version every N steps (default 1). Pairs are
	// acknowledged only after the checkpoint holding them is written, so N steps' batches
	// stay unacknowledged until then: keep N·(batches per step) under the consumer's
	// MaxAckPending.
	PublishEvery int
	// MaxPolicyLag skips (and counts as "stale") pairs sampled by a policy more than this
	// many versions old: 0 keeps only pairs of the current policy (the orchestrator's
	// max_lag 0), a negative value keeps all.
	MaxPolicyLag int64
	// RefRefreshEvery makes the reference a copy of the policy each time a version that is a
	// multiple of it is published (0: the reference stays frozen, AutoIF's way). Checkpoints
	// then carry the reference, so a resumed trainer continues against the same one.
	RefRefreshEvery int
	// Steps stops after this many optimiser steps in all (0: until ctx ends).
	Steps    int
	Consumer natsbus.ConsumerOptions
	// OnStep is called after each step that applied pairs, before its checkpoint.
	OnStep func(m Metrics, s StreamStep)
	Logger *slog.Logger
}

// RunStream trains on pairs from the run's JetStream pair stream and publishes each new
// policy version to the run's object store and KV `current` key.
//
// Exactly-once: a batch is acknowledged only after a checkpoint whose weights include its
// pairs is on disk, and that checkpoint lists those pairs' ids. A crash before the checkpoint
// loses nothing (the batches come back and the old checkpoint lacks them); a crash after it but
// before the acks cannot double-count (the resumed consumer is told the listed ids are seen
// and drops them). Every consumed pair is recorded by id in the pair ledger (LedgerFile)
// before the checkpoint covering it is written.
func RunStream(ctx context.Context, res *natsbus.RunResources, o StreamOptions) error {
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.Trainer.Logger == nil {
		o.Trainer.Logger = o.Logger
	}
	if o.Trainer.BatchSize <= 0 {
		o.Trainer.BatchSize = 4
	}
	if o.PairsPerStep <= 0 {
		o.PairsPerStep = o.Trainer.BatchSize
	}
	if o.PublishEvery <= 0 {
		o.PublishEvery = 1
	}
	if o.KeepLast == 0 {
		o.KeepLast = 3
	}
	if o.Consumer.Durable == "" {
		o.Consumer.Durable = "trainer"
	}
	if o.OutDir == "" {
		return errors.New("train stream: no output directory")
	}
	if o.RefRefreshEvery < 0 {
		return fmt.Errorf("train stream: reference refresh every %d versions: must be 0 (frozen) or more", o.RefRefreshEvery)
	}
	policy, err := loadPolicy(o.ModelDir, o.Trainer)
	if err != nil {
		return fmt.Errorf("train stream: policy: %w", err)
	}
	if o.RefDir != "" && o.RefDir != o.ModelDir {
		if o.Trainer.Reference, err = model.Load(o.RefDir); err != nil {
			return fmt.Errorf("train stream: reference: %w", err)
		}
	}
	tr, err := newWithBase(policy, o.Trainer, o.ModelDir)
	if err != nil {
		return err
	}
	o.Trainer.Reference = nil // the trainer keeps its own copy; let the float32 one go
	tokDir := ""
	if _, err := os.Stat(filepath.Join(o.ModelDir, "tokenizer.json")); err == nil {
		tokDir = o.ModelDir
	}
	var st State
	dirs, err := ownCheckpoints(o.OutDir)
	if err != nil {
		return fmt.Errorf("train stream: %w", err)
	}
	if len(dirs) > 0 {
		if st, err = tr.LoadCheckpoint(dirs[len(dirs)-1]); err != nil {
			return err
		}
		o.Logger.Info("resumed", "checkpoint", dirs[len(dirs)-1], "step", st.GlobalStep, "policy_version", st.PolicyVersion, "stream_seq", st.StreamSeq)
	}
	led, err := openLedger(o.OutDir, st, len(dirs) > 0, o.Logger)
	if err != nil {
		return fmt.Errorf("train stream: %w", err)
	}
	defer led.close()
	st.LedgerBytes = led.size
	version := int64(tr.StepCount())
	if len(dirs) > 0 {
		// A crash between writing a checkpoint and publishing it leaves KV behind: publish now.
		cur, err := currentVersion(ctx, res.Policy)
		if err != nil {
			return fmt.Errorf("train stream: read %s: %w", proto.PolicyCurrentKey, err)
		}
		if st.PolicyVersion > cur {
			if err := Publish(ctx, res.Run, res.Checkpoints, res.Policy, st.PolicyVersion, dirs[len(dirs)-1]); err != nil {
				return err
			}
		}
		version = st.PolicyVersion
	}
	if len(dirs) == 0 {
		// Version 0 is the starting policy, so rollout workers have something to load.
		cur, err := currentVersion(ctx, res.Policy)
		if err != nil {
			return fmt.Errorf("train stream: read %s: %w", proto.PolicyCurrentKey, err)
		}
		if cur < 0 {
			dir := CheckpointDir(o.OutDir, 0)
			if err := tr.SaveCheckpoint(dir, st, tokDir); err != nil {
				return err
			}
			if err := Publish(ctx, res.Run, res.Checkpoints, res.Policy, 0, dir); err != nil {
				return err
			}
		}
	}
	cons, err := natsbus.NewPairConsumer(ctx, res, o.Consumer)
	if err != nil {
		return fmt.Errorf("train stream: %w", err)
	}
	defer cons.Close()
	// Pairs applied by the newest checkpoint but perhaps not acknowledged before a crash.
	cons.MarkSeen(st.PendingPairIDs...)

	// A step takes exactly PairsPerStep pairs, so a batch can straddle steps and checkpoints: it
	// is acknowledged only once every one of its pairs is in a checkpoint, and until then each
	// checkpoint lists the ids of its pairs already consumed (State.PendingPairIDs).
	var unacked []*pulledBatch   // in pull order
	var pending []pendingPair    // pulled, neither applied nor dropped yet, oldest first
	var heldLedger []LedgerEntry // a line per pair consumed since the last checkpoint, written by the next
	// inFlight are the ids of pairs pulled but not yet checkpointed. A batch whose ack wait ran
	// out while it waited here is delivered again, and the consumer's seen set only learns ids
	// at the ack: its rows are dropped here instead.
	inFlight := map[string]struct{}{}
	consume := func(pp pendingPair, e LedgerEntry) {
		// Redeliveries can arrive out of order: the newest sequence consumed, not the last.
		st.StreamSeq = max(st.StreamSeq, pp.batch.b.Seq)
		pp.batch.left--
		pp.batch.consumed = append(pp.batch.consumed, pp.pair.ID)
		heldLedger = append(heldLedger, e)
	}
	stepsSincePublish := 0
	var fetchWait, stepWait time.Duration // waiting for pairs since the last publication, step
	var last Metrics
	var lastLag int64
	// commit writes a checkpoint holding every applied pair, publishes it as a new version if
	// steps were taken, and only then acknowledges the batches whose pairs are all in it.
	commit := func() error {
		if stepsSincePublish == 0 && len(heldLedger) == 0 {
			return nil
		}
		newVersion := stepsSincePublish > 0
		if newVersion {
			version = int64(tr.StepCount())
			if o.RefRefreshEvery > 0 && version%int64(o.RefRefreshEvery) == 0 {
				if err := tr.RefreshReference(); err != nil {
					return err
				}
				st.ReferenceVersion = version
				o.Logger.Info("reference refreshed", "policy_version", version)
			}
		}
		st.PolicyVersion = version
		st.PendingPairIDs = nil
		for _, ub := range unacked {
			st.PendingPairIDs = append(st.PendingPairIDs, ub.consumed...)
		}
		st.LastMetrics = last.Map()
		for i := range heldLedger {
			if heldLedger[i].Applied() {
				heldLedger[i].PolicyVersion = version
			}
		}
		// The ledger's lines first: a crash before the checkpoint leaves lines past the old
		// checkpoint's LedgerBytes, which the resumed trainer cuts off.
		if err := led.append(heldLedger); err != nil {
			return err
		}
		st.LedgerBytes = led.size
		dir := CheckpointDir(o.OutDir, tr.StepCount())
		t0 := time.Now()
		if err := tr.SaveCheckpoint(dir, st, tokDir); err != nil {
			return err
		}
		t1 := time.Now()
		if newVersion {
			if err := Publish(ctx, res.Run, res.Checkpoints, res.Policy, version, dir); err != nil {
				return err
			}
		}
		t2 := time.Now()
		kept := unacked[:0]
		for _, ub := range unacked {
			if ub.left > 0 {
				kept = append(kept, ub)
				continue
			}
			actx, cancel := context.WithTimeout(ctx, 10*time.Second)
			err := ub.b.AckSync(actx)
			cancel()
			if err != nil {
				// The checkpoint lists the ids: a redelivery is dropped, not re-applied.
				o.Logger.Warn("ack after checkpoint failed", "seq", ub.b.Seq, "err", err)
			}
		}
		clear(unacked[len(kept):])
		unacked = kept
		// A failed ack does not teach the consumer the ids: a redelivery in this process must
		// be dropped too.
		for _, e := range heldLedger {
			cons.MarkSeen(e.PairID)
			delete(inFlight, e.PairID)
		}
		heldLedger, stepsSincePublish = nil, 0
		if err := PruneCheckpoints(o.OutDir, o.KeepLast); err != nil {
			return err
		}
		if newVersion {
			o.Logger.Info("published policy", "version", version, "loss", last.Loss, "rewards/accuracies", last.Accuracy, "policy/lag", lastLag,
				"step", time.Duration(last.StepSeconds*float64(time.Second)).Round(time.Millisecond),
				"checkpoint", t1.Sub(t0).Round(time.Millisecond), "publish", t2.Sub(t1).Round(time.Millisecond),
				"ack", time.Since(t2).Round(time.Millisecond), "waited_for_pairs", fetchWait.Round(time.Millisecond), "carried_pairs", len(pending))
			fetchWait = 0
		}
		return nil
	}
	// stopped hands every batch not acknowledged back to JetStream: the next trainer resumes
	// from the last checkpoint, which lacks the pairs applied since and lists those before.
	// Pulling stops first, or the server could deliver them straight back to this consumer,
	// where they would wait out the ack wait.
	stopped := func() error {
		cons.Close()
		for _, ub := range unacked {
			_ = ub.b.Nak()
		}
		return nil
	}
	lastStepEnd := time.Now()
	for o.Steps == 0 || tr.StepCount() < o.Steps {
		if ctx.Err() != nil {
			return stopped()
		}
		// Pairs carried over from earlier batches age as versions are published.
		fresh, old := splitStale(pending, version, o.MaxPolicyLag)
		if len(old) > 0 {
			for _, pp := range old {
				consume(pp, LedgerEntry{Step: tr.StepCount() + 1, PairID: pp.pair.ID, Outcome: droppedOutcome(SkipStale)})
			}
			tr.Skipped[SkipStale] += len(old)
			o.Logger.Info("dropping stale pairs", "pairs", len(old), "policy_version", version, "max_policy_lag", o.MaxPolicyLag)
		}
		pending = fresh
		if len(pending) < o.PairsPerStep {
			t0 := time.Now()
			b, err := cons.Next(ctx)
			waited := time.Since(t0)
			fetchWait += waited
			stepWait += waited
			if err != nil {
				if ctx.Err() != nil {
					return stopped()
				}
				return fmt.Errorf("train stream: %w", err)
			}
			for _, ub := range unacked {
				_ = ub.b.InProgress()
			}
			pb := &pulledBatch{b: b}
			unacked = append(unacked, pb)
			for i := range b.Rows {
				r := &b.Rows[i]
				if _, dup := inFlight[r.PairID]; dup {
					o.Logger.Debug("dropping a pair already pulled", "pair_id", r.PairID, "seq", b.Seq, "delivered", b.Delivered)
					continue
				}
				inFlight[r.PairID] = struct{}{}
				pb.left++
				pending = append(pending, pendingPair{batch: pb, pair: &Pair{ID: r.PairID, Prompt: ints(r.PromptTokenIDs),
					Chosen: ints(r.ChosenTokenIDs), Rejected: ints(r.RejectedTokenIDs), PolicyVersion: r.PolicyVersion}})
			}
			continue
		}
		take := pending[:o.PairsPerStep]
		pairs := make([]*Pair, len(take))
		info := StreamStep{Version: version, Waited: stepWait}
		for i, pp := range take {
			pairs[i] = pp.pair
			lag := version - pp.pair.PolicyVersion
			info.MaxLag = max(info.MaxLag, lag)
			info.MeanLag += float64(lag) / float64(len(take))
		}
		// The trainer's own input check tells which pairs the step leaves out, and why.
		offered := tr.StepCount() + 1
		reasons := make([]string, len(pairs))
		for i, p := range pairs {
			reasons[i] = tr.check(p)
		}
		m, err := tr.Step(pairs)
		if err != nil {
			return err
		}
		for i, pp := range take {
			e := LedgerEntry{Step: offered, PairID: pp.pair.ID, Outcome: OutcomeApplied}
			if reasons[i] != "" {
				e.Outcome = droppedOutcome(reasons[i])
			}
			consume(pp, e)
		}
		pending = slices.Delete(pending, 0, len(take))
		stepWait = 0
		now := time.Now()
		info.Interval, lastStepEnd = now.Sub(lastStepEnd), now
		if m.Pairs == 0 {
			continue // everything skipped: acknowledged with the next checkpoint
		}
		stepsSincePublish++
		last, lastLag = m, info.MaxLag
		if o.OnStep != nil {
			o.OnStep(m, info)
		}
		if stepsSincePublish >= o.PublishEvery {
			if err := commit(); err != nil {
				return err
			}
		}
	}
	// Steps reached: keep what was applied, then give back what was pulled for the next step
	// (a batch partly applied comes back with its applied ids listed in the checkpoint).
	if err := commit(); err != nil {
		return err
	}
	return stopped()
}

// StreamStep is what RunStream's OnStep learns about a step besides its DPO metrics.
type StreamStep struct {
	// Version is the policy version the step trained against (the last one published).
	Version int64
	// MaxLag and MeanLag are the step's pairs' versions behind Version.
	MaxLag  int64
	MeanLag float64
	// Waited is the time spent waiting for pairs since the previous step; Interval is the
	// time since the previous step ended (or the trainer started), so Waited/Interval is the
	// trainer's idle fraction over this step.
	Waited, Interval time.Duration
}

// pulledBatch is a pair batch pulled from the stream and not yet acknowledged.
type pulledBatch struct {
	b        *natsbus.Batch[proto.Pair]
	left     int      // pairs neither applied nor dropped yet
	consumed []string // ids applied or dropped so far
}

// pendingPair is a pulled pair waiting for a step.
type pendingPair struct {
	batch *pulledBatch
	pair  *Pair
}

// splitStale separates pairs beyond the lag bound at the trainer's version from the rest,
// keeping each side's order.
func splitStale(pending []pendingPair, version, maxLag int64) (fresh, old []pendingPair) {
	fresh = pending[:0:0]
	for _, pp := range pending {
		if stale(version, pp.pair.PolicyVersion, maxLag) {
			old = append(old, pp)
		} else {
			fresh = append(fresh, pp)
		}
	}
	return fresh, old
}

func ints(v []int32) []int {
	out := make([]int, len(v))
	for i, x := range v {
		out[i] = int(x)
	}
	return out
}

// currentVersion reads the KV `current` pointer (-1 when absent).
func currentVersion(ctx context.Context, kv jetstream.KeyValue) (int64, error) {
	e, err := kv.Get(ctx, proto.PolicyCurrentKey)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return -1, nil
	}
	if err != nil {
		return 0, err
	}
	return strconv.ParseInt(string(e.Value()), 10, 64)
}

// stale says a pair sampled by policy version sampled is beyond the lag bound when the trainer
// is at version current (maxLag < 0: no bound).
func stale(current, sampled, maxLag int64) bool {
	return maxLag >= 0 && current-sampled > maxLag
}
