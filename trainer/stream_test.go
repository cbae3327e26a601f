package trainer

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/autoif/autoif/model"
	"github.com/autoif/autoif/natsbus"
	"github.com/autoif/autoif/proto"
)

func streamPairs(from, to int) []proto.Pair {
	var out []proto.Pair
	for i := from; i < to; i++ {
		out = append(out, proto.Pair{
			PairID: fmt.Sprintf("pair-%04d", i), PromptID: fmt.Sprintf("prompt-%d", i/2),
			PromptTokenIDs: []int32{1, int32(4 + i%20)}, ChosenTokenIDs: []int32{int32(5 + i%7), 2},
			RejectedTokenIDs: []int32{int32(12 + i%9), 9, 2}, PolicyVersion: 0,
		})
	}
	return out
}

// pairStream starts an embedded JetStream server in a fresh directory (returned: the test's
// scratch space), creates run name's streams and publishes pairs perBatch to a batch.
func pairStream(t *testing.T, ctx context.Context, name string, pairs []proto.Pair, perBatch int) (*natsbus.RunResources, string) {
	t.Helper()
	dir := t.TempDir()
	bus, err := natsbus.Connect(ctx, natsbus.Options{StoreDir: filepath.Join(dir, "js"), Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(bus.Close)
	run, _ := proto.NewRun(name)
	res, err := natsbus.EnsureRun(ctx, bus.JS, run, natsbus.RunOptions{Memory: true})
	if err != nil {
		t.Fatal(err)
	}
	pub := natsbus.NewPairPublisher(bus.JS, run, natsbus.PublisherOptions{})
	for b := 0; perBatch*b < len(pairs); b++ {
		if err := pub.Publish(ctx, fmt.Sprint("batch-", b), pairs[perBatch*b:min(perBatch*(b+1), len(pairs))], nil); err != nil {
			t.Fatal(err)
		}
	}
	if err := pub.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	return res, dir
}

// checkpointState reads the trainer_state.json of out's checkpoint of step.
func checkpointState(t *testing.T, out string, step int) State {
	t.Helper()
	var st State
	data, err := os.ReadFile(filepath.Join(CheckpointDir(out, step), stateFile))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(data, &st); err != nil {
		t.Fatal(err)
	}
	return st
}

// assertAllAcknowledged fails unless the trainer's consumer owes nothing: every batch applied
// and acknowledged.
func assertAllAcknowledged(t *testing.T, ctx context.Context, res *natsbus.RunResources) {
	t.Helper()
	cons, err := res.Pairs.Consumer(ctx, "trainer")
	if err != nil {
		t.Fatal(err)
	}
	info, err := cons.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.NumPending != 0 || info.NumAckPending != 0 {
		t.Errorf("consumer: %d pending, %d awaiting ack; every batch should be applied and acknowledged once", info.NumPending, info.NumAckPending)
	}
}

// The online trainer applies pairs from JetStream, publishes every new policy to the object
// store before moving KV `current`, and a restarted trainer resumes from its checkpoint
// without re-applying acknowledged pairs.
func TestStreamTrainerPublishesPoliciesAndResumes(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	res, dir := pairStream(t, ctx, "streamtest", streamPairs(0, 6), 2)
	start := tinyModelDir(t)
	out := filepath.Join(dir, "out")
	opts := DefaultOptions()
	opts.Optim.LR = 1e-3
	opts.BatchSize = 2
	so := StreamOptions{ModelDir: start, OutDir: out, Trainer: opts, PairsPerStep: 2, Steps: 2, MaxPolicyLag: -1, Logger: quietLogger(),
		Consumer: natsbus.ConsumerOptions{Durable: "trainer", AckWait: 5 * time.Second, Logger: quietLogger()}}
	if err := RunStream(ctx, res, so); err != nil {
		t.Fatal(err)
	}
	if v, err := currentVersion(ctx, res.Policy); err != nil || v != 2 {
		t.Fatalf("KV current = %d (err %v), want 2", v, err)
	}
	for _, v := range []int64{0, 1, 2} {
		obj, err := res.Checkpoints.Get(ctx, res.Run.CheckpointObject(v, "model.safetensors"))
		if err != nil {
			t.Fatalf("policy v%d: %v", v, err)
		}
		if v == 2 {
			// The published bytes are the checkpoint's.
			got, _ := io.ReadAll(obj)
			want, _ := os.ReadFile(filepath.Join(CheckpointDir(out, 2), "model.safetensors"))
			if string(got) != string(want) {
				t.Error("published model.safetensors differs from the checkpoint")
			}
		}
		obj.Close()
	}

	so.Steps = 3
	if err := RunStream(ctx, res, so); err != nil {
		t.Fatal(err)
	}
	st := checkpointState(t, out, 3)
	if st.GlobalStep != 3 || st.PolicyVersion != 3 || len(st.PendingPairIDs) != 2 || st.PendingPairIDs[0] != "pair-0004" {
		t.Errorf("state after resume: %+v; want step 3 from the third batch (pair-0004, pair-0005)", st)
	}
	assertAllAcknowledged(t, ctx, res)
	if _, err := model.Load(CheckpointDir(out, 3)); err != nil {
		t.Fatal(err)
	}
}

// A trainer stopped between checkpoints (here: after step 3 of a publish-every-2 run) loses
// nothing and applies nothing twice: across the checkpoints of the stopped and the resumed run,
// every pair is recorded as applied exactly once, and four steps took all eight pairs.
func TestStreamTrainerStoppedBetweenCheckpointsAppliesEveryPairOnce(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	res, dir := pairStream(t, ctx, "stopped", streamPairs(0, 8), 2)
	start := tinyModelDir(t)
	out := filepath.Join(dir, "out")
	var applied []int
	train := func(stopAt, steps int) {
		rctx, stop := context.WithCancel(ctx)
		defer stop()
		opts := DefaultOptions()
		opts.BatchSize = 2
		err := RunStream(rctx, res, StreamOptions{ModelDir: start, OutDir: out, KeepLast: -1, Trainer: opts, PairsPerStep: 2, PublishEvery: 2, Steps: steps, MaxPolicyLag: -1,
			Logger: quietLogger(), Consumer: natsbus.ConsumerOptions{Durable: "trainer", AckWait: 30 * time.Second, Logger: quietLogger()},
			OnStep: func(m Metrics, _ StreamStep) {
				applied = append(applied, m.Step)
				if m.Step == stopAt {
					stop()
				}
			}})
		if err != nil {
			t.Fatal(err)
		}
	}
	train(3, 0)
	train(0, 4)
	if fmt.Sprint(applied) != "[1 2 3 3 4]" {
		t.Errorf("steps taken %v, want [1 2 3 3 4]: step 3 is lost with the stop and redone", applied)
	}
	seen := map[string]int{}
	for _, step := range []int{2, 4} {
		for _, id := range checkpointState(t, out, step).PendingPairIDs {
			seen[id]++
		}
	}
	for _, p := range streamPairs(0, 8) {
		if seen[p.PairID] != 1 {
			t.Errorf("pair %s applied %d times in the checkpoints (%v)", p.PairID, seen[p.PairID], seen)
		}
	}
	if v, err := currentVersion(ctx, res.Policy); err != nil || v != 4 {
		t.Errorf("KV current %d (err %v), want 4", v, err)
	}
}

// The pair ledger names every consumed pair once, with its outcome: a stale pair and one the
// trainer's input check refuses are recorded as dropped, applied pairs carry the version that
// first included them, and lines past the resumed checkpoint (a crash between the ledger's
// write and the checkpoint's, simulated here, with a torn last line) are cut off and written
// again when their pairs are re-applied.
func TestStreamTrainerLedgerRecordsEachPairOnceAcrossResume(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	pairs := streamPairs(0, 13)
	pairs[3].PolicyVersion = -100                                                // stale under MaxPolicyLag 10
	pairs[4].RejectedTokenIDs = append([]int32(nil), pairs[4].ChosenTokenIDs...) // chosen_equals_rejected
	res, dir := pairStream(t, ctx, "ledger", pairs, 2)
	start := tinyModelDir(t)
	out := filepath.Join(dir, "out")
	train := func(stopAt, steps int) {
		rctx, stop := context.WithCancel(ctx)
		defer stop()
		opts := DefaultOptions()
		opts.BatchSize = 2
		err := RunStream(rctx, res, StreamOptions{ModelDir: start, OutDir: out, KeepLast: -1, Trainer: opts, PairsPerStep: 2, PublishEvery: 2,
			MaxPolicyLag: 10, Steps: steps, Logger: quietLogger(),
			Consumer: natsbus.ConsumerOptions{Durable: "trainer", AckWait: 30 * time.Second, Logger: quietLogger()},
			OnStep: func(m Metrics, _ StreamStep) {
				if m.Step == stopAt {
					stop()
				}
			}})
		if err != nil {
			t.Fatal(err)
		}
	}
	state := func(step int) State { return checkpointState(t, out, step) }
	path := LedgerPath(out)

	train(3, 0) // steps 1 and 2 are checkpointed; step 3 is applied, then stopped
	st2 := state(2)
	if fi, err := os.Stat(path); err != nil || fi.Size() != st2.LedgerBytes || st2.LedgerBytes == 0 {
		t.Fatalf("ledger after the stop: %v, %v; want checkpoint-2's %d bytes", fi, err, st2.LedgerBytes)
	}
	// A crash between the next commit's ledger write and its checkpoint leaves lines past it.
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteString("3\t4\tpair-0006\tapplied\n3\t4\tpair-0007\tapplied\n4\t4\tpair-00"); err != nil {
		t.Fatal(err)
	}
	f.Close()
	train(0, 6) // 12 pairs besides the stale one: six steps of two

	st6 := state(6)
	fi, err := os.Stat(path)
	if err != nil || fi.Size() != st6.LedgerBytes {
		t.Fatalf("ledger is %v bytes (%v), checkpoint-6 says %d", fi, err, st6.LedgerBytes)
	}
	entries, err := ReadLedger(path)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]LedgerEntry{}
	for _, e := range entries {
		if _, dup := got[e.PairID]; dup {
			t.Errorf("pair %s is in the ledger twice: %v", e.PairID, entries)
		}
		got[e.PairID] = e
	}
	want := map[string]string{"pair-0003": "dropped:stale", "pair-0004": "dropped:" + SkipIdentical}
	for _, p := range pairs {
		e, ok := got[p.PairID]
		if !ok {
			t.Errorf("pair %s is not in the ledger: %v", p.PairID, entries)
			continue
		}
		outcome := want[p.PairID]
		if outcome == "" {
			outcome = OutcomeApplied
		}
		if e.Outcome != outcome {
			t.Errorf("pair %s: outcome %q, want %q", p.PairID, e.Outcome, outcome)
		}
		// Steps 1-2 took pairs 0-4 (pair 3 dropped as stale); an applied pair carries the
		// version that published its step (every second step).
		if p.PairID < "pair-0005" && (e.Step < 1 || e.Step > 2) {
			t.Errorf("pair %s: step %d, want step 1 or 2", p.PairID, e.Step)
		}
		wantVersion := int64((e.Step + 1) / 2 * 2)
		if !e.Applied() {
			wantVersion = 0
		}
		if e.PolicyVersion != wantVersion {
			t.Errorf("pair %s: step %d version %d, want version %d", p.PairID, e.Step, e.PolicyVersion, wantVersion)
		}
	}
	if len(entries) != len(pairs) {
		t.Errorf("%d ledger lines, want %d", len(entries), len(pairs))
	}
	// checkpoint-2 covers exactly the five lines of steps 1-2.
	data, _ := os.ReadFile(path)
	head, err := ParseLedger(strings.NewReader(string(data[:st2.LedgerBytes])))
	if err != nil || len(head) != 5 {
		t.Errorf("checkpoint-2's ledger bytes hold %d lines (%v), want the 5 of steps 1-2", len(head), err)
	}
}

// A step takes exactly PairsPerStep pairs, so batches of five straddle steps (and checkpoints)
// of two: a batch is acknowledged only when all its pairs are in a checkpoint, and until then
// every checkpoint lists the ids of its pairs applied so far, so a trainer stopped with one
// partly applied is resumed to apply the rest of it and nothing twice.
func TestStreamTrainerStepsTakeExactlyPairsPerStepAcrossBatches(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	pairs := streamPairs(0, 10)
	res, dir := pairStream(t, ctx, "straddle", pairs, 5)
	start := tinyModelDir(t)
	out := filepath.Join(dir, "out")
	var sizes []int
	train := func(steps int) {
		opts := DefaultOptions()
		opts.BatchSize = 2
		err := RunStream(ctx, res, StreamOptions{ModelDir: start, OutDir: out, KeepLast: -1, Trainer: opts, PairsPerStep: 2, Steps: steps, MaxPolicyLag: -1,
			Logger: quietLogger(), Consumer: natsbus.ConsumerOptions{Durable: "trainer", AckWait: 30 * time.Second, Logger: quietLogger()},
			OnStep: func(m Metrics, s StreamStep) {
				sizes = append(sizes, m.Pairs)
				if s.Interval <= 0 || s.Waited < 0 || s.Waited > s.Interval {
					t.Errorf("step %d: waited %v of an interval of %v", m.Step, s.Waited, s.Interval)
				}
			}})
		if err != nil {
			t.Fatal(err)
		}
	}
	// Steps 1 and 2 take pairs 0-1 and 2-3, each checkpointed; the first batch is not yet
	// complete, and the run stops with it pulled.
	train(2)
	st := checkpointState(t, out, 2)
	if want := []string{"pair-0000", "pair-0001", "pair-0002", "pair-0003"}; !slices.Equal(st.PendingPairIDs, want) {
		t.Errorf("checkpoint 2 lists %v, want %v: applied, and their batch not acknowledged", st.PendingPairIDs, want)
	}
	train(5)
	if fmt.Sprint(sizes) != "[2 2 2 2 2]" {
		t.Errorf("pairs per step %v, want [2 2 2 2 2]", sizes)
	}
	entries, err := ReadLedger(LedgerPath(out))
	if err != nil {
		t.Fatal(err)
	}
	count := map[string]int{}
	for _, e := range entries {
		if !e.Applied() {
			t.Errorf("ledger: %+v, want every pair applied", e)
		}
		count[e.PairID]++
	}
	for _, p := range pairs {
		if count[p.PairID] != 1 {
			t.Errorf("pair %s applied %d times, want once (ledger %v)", p.PairID, count[p.PairID], entries)
		}
	}
	assertAllAcknowledged(t, ctx, res)
}

// With RefRefreshEvery 2 the reference becomes a copy of the policy when versions 2 and 4 are
// published: the step after each refresh starts with policy = reference (loss ln 2 exactly),
// and checkpoints carry the reference, so a resumed trainer keeps using the refreshed one.
func TestStreamTrainerRefreshesTheReferenceEveryNVersions(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	res, dir := pairStream(t, ctx, "refresh", streamPairs(0, 10), 2)
	start := tinyModelDir(t)
	out := filepath.Join(dir, "out")
	losses := map[int]float64{}
	train := func(steps int) {
		opts := DefaultOptions()
		opts.BatchSize, opts.Optim.LR = 2, 1e-2
		err := RunStream(ctx, res, StreamOptions{ModelDir: start, OutDir: out, KeepLast: -1, Trainer: opts, PairsPerStep: 2, Steps: steps,
			MaxPolicyLag: -1, RefRefreshEvery: 2, Logger: quietLogger(),
			Consumer: natsbus.ConsumerOptions{Durable: "trainer", AckWait: 30 * time.Second, Logger: quietLogger()},
			OnStep:   func(m Metrics, _ StreamStep) { losses[m.Step] = m.Loss }})
		if err != nil {
			t.Fatal(err)
		}
	}
	train(3)
	train(5) // resumed from checkpoint 3, whose reference is version 2's policy

	ln2 := math.Log(2)
	for step, want := range map[int]bool{1: true, 2: false, 3: true, 4: false, 5: true} {
		if got := math.Abs(losses[step]-ln2) < 1e-6; got != want {
			t.Errorf("step %d loss %.8f: policy = reference is %v, want %v (losses %v)", step, losses[step], got, want, losses)
		}
	}
	for _, c := range []struct {
		step      int
		reference int64 // the version whose policy the checkpoint's reference is (0: none saved)
	}{{1, 0}, {2, 2}, {3, 2}, {4, 4}, {5, 4}} {
		ckpt := CheckpointDir(out, c.step)
		st := checkpointState(t, out, c.step)
		_, statErr := os.Stat(filepath.Join(ckpt, referenceFile))
		if st.ReferenceVersion != c.reference || (c.reference > 0) != (statErr == nil) {
			t.Fatalf("checkpoint %d: reference version %d (file: %v), want %d", c.step, st.ReferenceVersion, statErr, c.reference)
		}
		if c.reference == 0 {
			continue
		}
		ref, err := model.OpenSafetensors(filepath.Join(ckpt, referenceFile))
		if err != nil {
			t.Fatal(err)
		}
		policy, err := model.Load(CheckpointDir(out, int(c.reference)))
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range policy.Tensors() {
			var data []float32
			for _, ti := range ref.Tensors {
				if ti.Name == p.Name {
					if data, err = ref.Read(ti); err != nil {
						t.Fatal(err)
					}
				}
			}
			if !slices.Equal(data, p.Data) {
				t.Fatalf("checkpoint %d: reference tensor %s is not version %d's policy", c.step, p.Name, c.reference)
			}
		}
		ref.Close()
	}
}

func TestStaleFollowsTheOrchestratorsMaxLag(t *testing.T) {
	for _, c := range []struct {
		current, sampled, maxLag int64
		want                     bool
	}{
		{current: 5, sampled: 5, maxLag: 0, want: false}, // on-policy only: the current version's pairs
		{current: 5, sampled: 4, maxLag: 0, want: true},
		{current: 5, sampled: 4, maxLag: 1, want: false},
		{current: 5, sampled: 3, maxLag: 1, want: true},
		{current: 5, sampled: 0, maxLag: -1, want: false}, // no bound
	} {
		if got := stale(c.current, c.sampled, c.maxLag); got != c.want {
			t.Errorf("stale(current %d, sampled %d, max lag %d) = %v, want %v", c.current, c.sampled, c.maxLag, got, c.want)
		}
	}
}
