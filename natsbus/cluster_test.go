package natsbus

import (
	"context"
	"io"
	"log/slog"
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
