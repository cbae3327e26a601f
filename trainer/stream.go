package trainer

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
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
	// PairsPerStep is how many pairs one optimiser step takes (default Trainer.BatchSize).
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
	// Steps stops after this many optimiser steps in all (0: until ctx ends).
	Steps    int
	Consumer natsbus.ConsumerOptions
	OnStep   func(m Metrics, version, lag int64)
	Logger   *slog.Logger
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
	policy, err := model.Load(o.ModelDir)
	if err != nil {
		return fmt.Errorf("train stream: policy: %w", err)
	}
	if o.RefDir != "" && o.RefDir != o.ModelDir {
		if o.Trainer.Reference, err = model.Load(o.RefDir); err != nil {
			return fmt.Errorf("train stream: reference: %w", err)
		}
	}
	tr, err := New(policy, o.Trainer)
	if err != nil {
		return err
	}
	tokDir := ""
	if _, err := os.Stat(filepath.Join(o.ModelDir, "tokenizer.json")); err == nil {
		tokDir = o.ModelDir
	}
	var st State
	dirs, err := Checkpoints(o.OutDir)
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

	var held []*natsbus.Batch[proto.Pair] // applied in memory, not yet checkpointed
	var heldIDs []string
	var heldLedger []LedgerEntry // heldIDs' ledger lines, written by the next checkpoint
	// inFlight are the ids of pairs pulled but not yet checkpointed (held or pending). A batch
	// whose ack wait ran out while it waited here is delivered again, and the consumer's seen
	// set only learns ids at the ack: its rows are dropped here instead.
	inFlight := map[string]struct{}{}
	var pending []*Pair // waiting for a full step
	var pendingBatches []*natsbus.Batch[proto.Pair]
	stepsSincePublish := 0
	var fetchWait time.Duration // waiting for pairs since the last publication
	var last Metrics
	var lastLag int64
	// commit writes a checkpoint holding every applied pair, publishes it as a new version if
	// steps were taken, and only then acknowledges the batches.
	commit := func() error {
		if stepsSincePublish == 0 && len(held) == 0 {
			return nil
		}
		newVersion := stepsSincePublish > 0
		if newVersion {
			version = int64(tr.StepCount())
		}
		st.PolicyVersion = version
		st.PendingPairIDs = heldIDs
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
		for _, hb := range held {
			actx, cancel := context.WithTimeout(ctx, 10*time.Second)
			err := hb.AckSync(actx)
			cancel()
			if err != nil {
				// The checkpoint lists the ids: a redelivery is dropped, not re-applied.
				o.Logger.Warn("ack after checkpoint failed", "seq", hb.Seq, "err", err)
			}
		}
		// A failed ack does not teach the consumer the ids: a redelivery in this process must
		// be dropped too.
		cons.MarkSeen(heldIDs...)
		for _, id := range heldIDs {
			delete(inFlight, id)
		}
		held, heldIDs, heldLedger, stepsSincePublish = nil, nil, nil, 0
		if err := PruneCheckpoints(o.OutDir, o.KeepLast); err != nil {
			return err
		}
		if newVersion {
			o.Logger.Info("published policy", "version", version, "loss", last.Loss, "rewards/accuracies", last.Accuracy, "policy/lag", lastLag,
				"step", time.Duration(last.StepSeconds*float64(time.Second)).Round(time.Millisecond),
				"checkpoint", t1.Sub(t0).Round(time.Millisecond), "publish", t2.Sub(t1).Round(time.Millisecond),
				"ack", time.Since(t2).Round(time.Millisecond), "waited_for_pairs", fetchWait.Round(time.Millisecond))
			fetchWait = 0
		}
		return nil
	}
	// stopped hands applied-but-uncheckpointed and unapplied batches back to JetStream: the
	// next trainer resumes from the last checkpoint, which lacks them.
	stopped := func() error {
		for _, hb := range append(held, pendingBatches...) {
			_ = hb.Nak()
		}
		return nil
	}
	for o.Steps == 0 || tr.StepCount() < o.Steps {
		if ctx.Err() != nil {
			return stopped()
		}
		t0 := time.Now()
		b, err := cons.Next(ctx)
		fetchWait += time.Since(t0)
		if err != nil {
			if ctx.Err() != nil {
				return stopped()
			}
			return fmt.Errorf("train stream: %w", err)
		}
		for _, hb := range held {
			_ = hb.InProgress()
		}
		for _, pb := range pendingBatches {
			_ = pb.InProgress()
		}
		pendingBatches = append(pendingBatches, b)
		var m Metrics
		for i := range b.Rows {
			r := &b.Rows[i]
			if _, dup := inFlight[r.PairID]; dup {
				o.Logger.Debug("dropping a pair already pulled", "pair_id", r.PairID, "seq", b.Seq, "delivered", b.Delivered)
				continue
			}
			inFlight[r.PairID] = struct{}{}
			if stale(version, r.PolicyVersion, o.MaxPolicyLag) {
				tr.skip(&m, "stale", r.PairID)
				heldIDs = append(heldIDs, r.PairID) // consumed: acked with the next checkpoint
				heldLedger = append(heldLedger, LedgerEntry{Step: tr.StepCount() + 1, PairID: r.PairID, Outcome: droppedOutcome("stale")})
				continue
			}
			pending = append(pending, &Pair{ID: r.PairID, Prompt: ints(r.PromptTokenIDs), Chosen: ints(r.ChosenTokenIDs), Rejected: ints(r.RejectedTokenIDs), PolicyVersion: r.PolicyVersion})
		}
		if len(pending) < o.PairsPerStep {
			continue
		}
		var lag int64
		for _, p := range pending {
			lag = max(lag, version-p.PolicyVersion)
		}
		// The trainer's own input check tells which pairs the step leaves out, and why.
		offered := tr.StepCount() + 1
		reasons := make([]string, len(pending))
		for i, p := range pending {
			reasons[i] = tr.check(p)
		}
		m, err = tr.Step(pending)
		if err != nil {
			return err
		}
		for i, p := range pending {
			heldIDs = append(heldIDs, p.ID)
			e := LedgerEntry{Step: offered, PairID: p.ID, Outcome: OutcomeApplied}
			if reasons[i] != "" {
				e.Outcome = droppedOutcome(reasons[i])
			}
			heldLedger = append(heldLedger, e)
		}
		held = append(held, pendingBatches...)
		for _, pb := range pendingBatches {
			// Redeliveries can arrive out of order: the newest sequence applied, not the last.
			st.StreamSeq = max(st.StreamSeq, pb.Seq)
		}
		pending, pendingBatches = nil, nil
		if m.Pairs == 0 {
			continue // everything skipped: acknowledged with the next checkpoint
		}
		stepsSincePublish++
		last, lastLag = m, lag
		if o.OnStep != nil {
			o.OnStep(m, version, lag)
		}
		if stepsSincePublish >= o.PublishEvery {
			if err := commit(); err != nil {
				return err
			}
		}
	}
	// Steps reached: keep what was applied, and give back what was pulled for the next step.
	for _, pb := range pendingBatches {
		_ = pb.Nak()
	}
	return commit()
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
