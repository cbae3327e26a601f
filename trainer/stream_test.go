package trainer

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
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

// The online trainer applies pairs from JetStream, publishes every new policy to the object
// store before moving KV `current`, and a restarted trainer resumes from its checkpoint
// without re-applying acknowledged pairs.
func TestStreamTrainerPublishesPoliciesAndResumes(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	dir := t.TempDir()
	bus, err := natsbus.Connect(ctx, natsbus.Options{StoreDir: filepath.Join(dir, "js"), Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	defer bus.Close()
	run, _ := proto.NewRun("streamtest")
	res, err := natsbus.EnsureRun(ctx, bus.JS, run, natsbus.RunOptions{Memory: true})
	if err != nil {
		t.Fatal(err)
	}
	pub := natsbus.NewPairPublisher(bus.JS, run, natsbus.PublisherOptions{})
	for b := range 3 {
		if err := pub.Publish(ctx, fmt.Sprint("batch-", b), streamPairs(2*b, 2*b+2), nil); err != nil {
			t.Fatal(err)
		}
	}
	if err := pub.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	start := tinyModelDir(t)
	out := filepath.Join(dir, "out")
	opts := DefaultOptions()
	opts.Optim.LR = 1e-3
	opts.BatchSize = 2
	so := StreamOptions{ModelDir: start, OutDir: out, Trainer: opts, PairsPerStep: 2, Steps: 2, Logger: quietLogger(),
		Consumer: natsbus.ConsumerOptions{Durable: "trainer", AckWait: 5 * time.Second, Logger: quietLogger()}}
	if err := RunStream(ctx, res, so); err != nil {
		t.Fatal(err)
	}
	if v, err := currentVersion(ctx, res.Policy); err != nil || v != 2 {
		t.Fatalf("KV current = %d (err %v), want 2", v, err)
	}
	for _, v := range []int64{0, 1, 2} {
		obj, err := res.Checkpoints.Get(ctx, run.CheckpointObject(v, "model.safetensors"))
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
	var st State
	data, err := os.ReadFile(filepath.Join(CheckpointDir(out, 3), stateFile))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(data, &st); err != nil {
		t.Fatal(err)
	}
	if st.GlobalStep != 3 || st.PolicyVersion != 3 || len(st.PendingPairIDs) != 2 || st.PendingPairIDs[0] != "pair-0004" {
		t.Errorf("state after resume: %+v; want step 3 from the third batch (pair-0004, pair-0005)", st)
	}
	cons, err := res.Pairs.Consumer(ctx, "trainer")
	if err != nil {
		t.Fatal(err)
	}
	info, err := cons.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.NumPending != 0 || info.NumAckPending != 0 {
		t.Errorf("consumer: %d pending, %d awaiting ack; every batch should be applied and acked once", info.NumPending, info.NumAckPending)
	}
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
	dir := t.TempDir()
	bus, err := natsbus.Connect(ctx, natsbus.Options{StoreDir: filepath.Join(dir, "js"), Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	defer bus.Close()
	run, _ := proto.NewRun("stopped")
	res, err := natsbus.EnsureRun(ctx, bus.JS, run, natsbus.RunOptions{Memory: true})
	if err != nil {
		t.Fatal(err)
	}
	pub := natsbus.NewPairPublisher(bus.JS, run, natsbus.PublisherOptions{})
	for b := range 4 {
		if err := pub.Publish(ctx, fmt.Sprint("batch-", b), streamPairs(2*b, 2*b+2), nil); err != nil {
			t.Fatal(err)
		}
	}
	if err := pub.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	start := tinyModelDir(t)
	out := filepath.Join(dir, "out")
	var applied []int
	train := func(stopAt, steps int) {
		rctx, stop := context.WithCancel(ctx)
		defer stop()
		opts := DefaultOptions()
		opts.BatchSize = 2
		err := RunStream(rctx, res, StreamOptions{ModelDir: start, OutDir: out, KeepLast: -1, Trainer: opts, PairsPerStep: 2, PublishEvery: 2, Steps: steps,
			Logger: quietLogger(), Consumer: natsbus.ConsumerOptions{Durable: "trainer", AckWait: 30 * time.Second, Logger: quietLogger()},
			OnStep: func(m Metrics, _, _ int64) {
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
		var st State
		data, err := os.ReadFile(filepath.Join(CheckpointDir(out, step), stateFile))
		if err != nil {
			t.Fatal(err)
		}
		if err := json.Unmarshal(data, &st); err != nil {
			t.Fatal(err)
		}
		for _, id := range st.PendingPairIDs {
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
