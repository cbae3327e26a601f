package orchestrator

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/autoif/autoif/natsbus"
	"github.com/autoif/autoif/proto"
)

// testRun is a run on an embedded NATS server, with a stand-in rollout worker that speaks
// the real contract: it pulls prompts from the work queue, publishes rollouts and pairs,
// then acknowledges.
type testRun struct {
	t   *testing.T
	bus *natsbus.Bus
	res *natsbus.RunResources
	dir string

	cons  *natsbus.Consumer[proto.PromptUnit]
	rolls *natsbus.Publisher[proto.ScoredRollout]
	pairs *natsbus.Publisher[proto.Pair]
	seen  []string // prompt ids the worker took, in order
	// progress is what the last runIdle's orchestrator reported to OnProgress.
	progress []Progress
	// observer, when set, is the Options.Observer of the orchestrators start makes.
	observer Observer
}

func newTestRun(t *testing.T) *testRun {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	bus, err := natsbus.Connect(ctx, natsbus.Options{StoreDir: filepath.Join(t.TempDir(), "js"), Name: t.Name()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(bus.Close)
	run, err := proto.NewRun("test")
	if err != nil {
		t.Fatal(err)
	}
	res, err := natsbus.EnsureRun(ctx, bus.JS, run, natsbus.RunOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return &testRun{t: t, bus: bus, res: res, dir: t.TempDir(),
		rolls: natsbus.NewPublisher(bus.JS, proto.ScoredRollouts, run.Rollouts(), natsbus.PublisherOptions{}),
		pairs: natsbus.NewPairPublisher(bus.JS, run, natsbus.PublisherOptions{}),
	}
}

// testSet is a small prompt set of n units.
func testSet(n int) *PromptSet {
	s := &PromptSet{Sources: []string{"test"}}
	for i := range n {
		s.Units = append(s.Units, proto.PromptUnit{
			PromptID: fmt.Sprintf("p%02d", i), InstructionID: fmt.Sprintf("i%d", i%3), Prompt: fmt.Sprintf("prompt %d", i),
			Functions: []string{"def evaluate(response):\n    return True\n"},
		})
	}
	return s
}

func (r *testRun) config(mode Mode, inFlight int) Config {
	c := DefaultConfig()
	c.RunDir, c.Mode, c.MaxInFlight, c.FlushEvery = r.dir, mode, inFlight, 200*time.Millisecond
	return c
}

// start runs an orchestrator until the test ends or stop is called; its lines go to out.
func (r *testRun) start(cfg Config, set *PromptSet) (stop func() (Summary, error), out *syncBuffer) {
	r.t.Helper()
	out = &syncBuffer{}
	orc, err := New(r.bus.JS, r.res, set, cfg, Options{Out: out, PollInterval: 20 * time.Millisecond, LineGrace: 100 * time.Millisecond, StatusEvery: 200 * time.Millisecond, Logger: quiet(), Observer: r.observer})
	if err != nil {
		r.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var sum Summary
	var runErr error
	done := make(chan struct{})
	go func() {
		defer close(done)
		sum, runErr = orc.Run(ctx)
	}()
	var once sync.Once
	stop = func() (Summary, error) {
		once.Do(func() {
			cancel()
			<-done
		})
		return sum, runErr
	}
	r.t.Cleanup(func() { stop() })
	return stop, out
}

// depth is the work queue's message count: prompts enqueued and not yet acknowledged.
func (r *testRun) depth() int {
	r.t.Helper()
	info, err := r.res.Prompts.Info(context.Background())
	if err != nil {
		r.t.Fatal(err)
	}
	return int(info.State.Msgs)
}

// eventually waits for cond, failing with what after timeout.
func (r *testRun) eventually(what string, cond func() bool) {
	r.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			r.t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// work takes n prompts off the queue as a rollout worker would: it publishes K scored
// rollouts per prompt (scores from score) and pairsPer pairs, stored before the ack.
func (r *testRun) work(n int, version int64, score func(k int) float64, pairsPer int) {
	r.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if r.cons == nil {
		c, err := natsbus.NewConsumer(ctx, r.res.Conn, r.res.Prompts, proto.PromptUnits, natsbus.ConsumerOptions{Durable: "rollout", MaxAckPending: 1000, PullBatch: 1}, nil)
		if err != nil {
			r.t.Fatal(err)
		}
		r.cons = c
		r.t.Cleanup(c.Close)
	}
	hdr := nats.Header{}
	hdr.Set(proto.HeaderPolicyVersion, strconv.FormatInt(version, 10))
	for done := 0; done < n; {
		b, err := r.cons.Next(ctx)
		if err != nil {
			r.t.Fatalf("worker: %v (after %d of %d prompts)", err, done, n)
		}
		for _, u := range b.Rows {
			r.seen = append(r.seen, u.PromptID)
			var rows []proto.ScoredRollout
			for k := range 4 {
				rows = append(rows, proto.ScoredRollout{RolloutID: fmt.Sprintf("%s-v%d-%d-%d", u.PromptID, version, len(r.seen), k),
					PromptID: u.PromptID, InstructionID: u.InstructionID, Response: fmt.Sprintf("response %d", k),
					Score: score(k), PolicyVersion: version, PromptPairs: int32(pairsPer)})
			}
			var pairs []proto.Pair
			for j := range pairsPer {
				pairs = append(pairs, proto.Pair{PairID: fmt.Sprintf("%s-v%d-%d-pair%d", u.PromptID, version, len(r.seen), j),
					PromptID: u.PromptID, Prompt: u.Prompt, Chosen: "response 0", Rejected: "response 1",
					ChosenScore: 1, PolicyVersion: version})
			}
			if len(pairs) > 0 {
				if err := r.pairs.Publish(ctx, "pairs-"+rows[0].RolloutID, pairs, hdr); err != nil {
					r.t.Fatal(err)
				}
			}
			if err := r.rolls.Publish(ctx, "rolls-"+rows[0].RolloutID, rows, hdr); err != nil {
				r.t.Fatal(err)
			}
		}
		if err := r.pairs.Flush(ctx); err != nil {
			r.t.Fatal(err)
		}
		if err := r.rolls.Flush(ctx); err != nil {
			r.t.Fatal(err)
		}
		if err := b.AckSync(ctx); err != nil {
			r.t.Fatal(err)
		}
		done += len(b.Rows)
	}
}

// publishVersion moves the policy key as a trainer does.
func (r *testRun) publishVersion(v int64) {
	r.t.Helper()
	if _, err := r.res.Policy.Put(context.Background(), proto.PolicyCurrentKey, []byte(strconv.FormatInt(v, 10))); err != nil {
		r.t.Fatal(err)
	}
}

// publishMetrics publishes metric events as a component would.
func (r *testRun) publishMetrics(id string, version int64, events ...proto.MetricEvent) {
	r.t.Helper()
	pub := natsbus.NewPublisher(r.bus.JS, proto.MetricEvents, r.res.Run.Metrics(), natsbus.PublisherOptions{})
	hdr := nats.Header{}
	hdr.Set(proto.HeaderPolicyVersion, strconv.FormatInt(version, 10))
	ctx := context.Background()
	if err := pub.Publish(ctx, id, events, hdr); err != nil {
		r.t.Fatal(err)
	}
	if err := pub.Flush(ctx); err != nil {
		r.t.Fatal(err)
	}
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// quiet drops the orchestrator's logs unless the test runs with -v.
func quiet() *slog.Logger {
	if testing.Verbose() {
		return slog.Default()
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}
