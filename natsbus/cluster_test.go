package natsbus

import (
	"context"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/autoif/autoif/proto"
)

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

// startCluster is an n-member loopback cluster, stopped at the test's end.
func startCluster(t *testing.T, name string, n int) *LocalCluster {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	lc, err := StartLocalCluster(ctx, name, n, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(lc.Shutdown)
	return lc
}

// A run asks for replicas only where the cluster can hold them: a lone server and a
// two-member cluster refuse three with a line that says why, before any stream exists; a
// three-member cluster makes every stream, the bucket and the object store with three.
func TestReplicasNeedAClusterThatLarge(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	run, _ := proto.NewRun("r3")

	lone, err := Connect(ctx, Options{StoreDir: t.TempDir(), Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	defer lone.Close()
	_, err = EnsureRun(ctx, lone.JS, run, RunOptions{Memory: true, Replicas: 3})
	if err == nil || !strings.Contains(err.Error(), "not in a cluster") {
		t.Fatalf("R3 on a lone server: %v, want a refusal naming the missing cluster", err)
	}
	if _, err := lone.JS.Stream(ctx, run.PromptsStream()); err == nil {
		t.Fatal("a refused run left a stream behind")
	}

	two := startCluster(t, "two", 2)
	bus2, err := Connect(ctx, Options{URL: two.URL(), Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	defer bus2.Close()
	_, err = EnsureRun(ctx, bus2.JS, run, RunOptions{Memory: true, Replicas: 3})
	if err == nil || !strings.Contains(err.Error(), "has 2 live server(s)") {
		t.Fatalf("R3 on two members: %v, want a refusal counting 2 servers", err)
	}

	three := startCluster(t, "three", 3)
	bus3, err := Connect(ctx, Options{URL: three.ClientURL(0), Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	defer bus3.Close()
	ci, err := Cluster(ctx, bus3.NC)
	if err != nil || ci.Size() != 3 {
		t.Fatalf("cluster info %+v %v, want 3 live members", ci, err)
	}
	if _, err := EnsureRun(ctx, bus3.JS, run, RunOptions{Memory: true, Replicas: 3}); err != nil {
		t.Fatal(err)
	}
	// The bucket and the object store are streams too.
	for _, s := range []string{run.PromptsStream(), run.PairsStream(), run.RolloutsStream(), run.MetricsStream(), "KV_" + run.PolicyBucket(), "OBJ_" + run.CheckpointBucket()} {
		st, err := bus3.JS.Stream(ctx, s)
		if err != nil || st.CachedInfo().Config.Replicas != 3 {
			t.Fatalf("stream %s: %v, want 3 replicas", s, err)
		}
	}
	// A component that joins without saying keeps the run's count, even with a member down.
	three.Stop(2)
	res, err := EnsureRun(ctx, bus3.JS, run, RunOptions{Memory: true})
	if err != nil {
		t.Fatalf("joining with a member down: %v", err)
	}
	if n := res.Pairs.CachedInfo().Config.Replicas; n != 3 {
		t.Fatalf("a joining component changed the pair stream to %d replicas", n)
	}
}

// The publisher's member dies while it publishes to an R3 pair stream, and comes back
// later: the publisher reconnects to a survivor, re-publishes what went unacknowledged under
// the same ids, and the consumer on another member gets every pair, each once, with the
// stream holding each batch once.
func TestPairsSurviveTheLossOfTheStreamLeader(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	lc := startCluster(t, "failover", 3)
	run, _ := proto.NewRun("failover")
	setup, err := Connect(ctx, Options{URL: lc.URL(), Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	defer setup.Close()
	res, err := EnsureRun(ctx, setup.JS, run, RunOptions{Replicas: 3})
	if err != nil {
		t.Fatal(err)
	}
	info, err := res.Pairs.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	leader := lc.Member(info.Cluster.Leader)
	if leader < 0 {
		t.Fatalf("pair stream leader %q is no member", info.Cluster.Leader)
	}
	other := (leader + 1) % 3
	// Only the leader's URL: the cluster announces the others, as it does to a client given
	// one seed.
	pubBus, err := Connect(ctx, Options{URL: lc.ClientURL(leader), Name: "publisher", Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	defer pubBus.Close()
	consBus, err := Connect(ctx, Options{URL: lc.ClientURL(other), Name: "consumer", Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	defer consBus.Close()
	consRes, err := EnsureRun(ctx, consBus.JS, run, RunOptions{})
	if err != nil {
		t.Fatal(err)
	}

	const batches, perBatch = 30, 5
	got := map[string]int{}
	consumed := make(chan error, 1)
	var consStats ConsumerStats
	go func() {
		cons, err := NewPairConsumer(ctx, consRes, ConsumerOptions{Durable: "trainer", AckWait: 2 * time.Second})
		if err != nil {
			consumed <- err
			return
		}
		defer cons.Close()
		defer func() { consStats = cons.Stats() }()
		for len(got) < batches*perBatch {
			b, err := cons.Next(ctx)
			if err != nil {
				consumed <- err
				return
			}
			for _, p := range b.Rows {
				got[p.PairID]++
			}
			if err := b.AckSync(ctx); err != nil {
				t.Logf("ack of %d failed (it comes back, and is dropped): %v", b.Seq, err)
			}
		}
		consumed <- nil
	}()

	pub := NewPairPublisher(pubBus.JS, run, PublisherOptions{AckTimeout: 2 * time.Second})
	for i := range batches {
		switch i {
		case 10:
			lc.Stop(leader)
		case 20:
			if err := lc.Start(leader); err != nil {
				t.Fatal(err)
			}
		}
		rows := testPairs(i*perBatch, (i+1)*perBatch)
		ids := make([]string, len(rows))
		for j := range rows {
			ids[j] = rows[j].PairID
		}
		if err := pub.Publish(ctx, proto.BatchID(ids), rows, nil); err != nil {
			t.Fatalf("batch %d: %v", i, err)
		}
		if err := pub.Flush(ctx); err != nil {
			t.Fatalf("batch %d: %v", i, err)
		}
	}
	if err := <-consumed; err != nil {
		t.Fatal(err)
	}
	for i := range batches * perBatch {
		if id := testPairs(i, i+1)[0].PairID; got[id] != 1 {
			t.Errorf("pair %s consumed %d times, want once", id, got[id])
		}
	}
	info, err = consRes.Pairs.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.State.Msgs != batches {
		t.Errorf("the pair stream holds %d batches, want %d: a retried publish was stored twice", info.State.Msgs, batches)
	}
	if Reconnects(pubBus.NC) == 0 {
		t.Error("the publisher never reconnected after its server died")
	}
	t.Logf("publisher reconnects %d, retried batches %d, new leader %s; consumer %+v", Reconnects(pubBus.NC), pub.Retried(), info.Cluster.Leader, consStats)
}

// A cluster member is refused, in one line and before it listens, when its cluster options
// do not add up.
func TestClusterOptionsAreCheckedBeforeStarting(t *testing.T) {
	cases := []struct {
		o    ServerOptions
		want string
	}{
		{ServerOptions{ClusterPort: 6222}, "need a cluster name"},
		{ServerOptions{Routes: []string{"nats://127.0.0.1:6222"}}, "need a cluster name"},
		{ServerOptions{ClusterName: "c", ServerName: "a"}, "no cluster port"},
		{ServerOptions{ClusterName: "c", ClusterPort: -1}, "distinct server name"},
		{ServerOptions{ClusterName: "c", ClusterPort: -1, ServerName: "a", Routes: []string{"127.0.0.1"}}, "want nats://HOST:PORT"},
	}
	for _, tc := range cases {
		tc.o.StoreDir = filepath.Join(t.TempDir(), "store")
		s, err := StartServer(tc.o)
		if err == nil {
			s.Shutdown()
			t.Errorf("%+v: started, want an error containing %q", tc.o, tc.want)
			continue
		}
		if !strings.Contains(err.Error(), tc.want) || strings.Contains(err.Error(), "\n") {
			t.Errorf("%+v: %v, want one line containing %q", tc.o, err, tc.want)
		}
		if _, err := os.Stat(tc.o.StoreDir); err == nil {
			t.Errorf("%+v: a refused server left its store directory behind", tc.o)
		}
	}
}

// Reconnection rounds back off from 250 ms to at most ReconnectBackoffMax, jitter included
// (a quarter at most), so a cluster's clients neither hammer the survivors nor wait long.
func TestReconnectBackoffIsBounded(t *testing.T) {
	prev := time.Duration(0)
	for attempt := 1; attempt <= 50; attempt++ {
		d := ReconnectDelay(attempt)
		base := min(250*time.Millisecond<<min(attempt-1, 3), ReconnectBackoffMax)
		if d < base || d > base+base/4 {
			t.Fatalf("attempt %d: %s, want %s plus at most a quarter", attempt, d, base)
		}
		if base < prev {
			t.Fatalf("attempt %d: the backoff shrank", attempt)
		}
		prev = base
	}
}
