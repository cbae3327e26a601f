package rollout

import (
	"context"
	"math"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/autoif/autoif/model"
)

// A follower starts on the base model while the run has published nothing, then hands over
// each published version, loaded, in order: whole checkpoints and LoRA adapters over the
// base. A follower that starts later starts on the current version.
func TestFollowerLoadsPublishedVersions(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	r := newTestRun(t, ctx)
	baseDir := filepath.Join(t.TempDir(), "v0")
	w0 := writeTinyModel(t, baseDir, 1)
	base, err := LoadPolicy(baseDir, 0, 1, nil)
	if err != nil {
		t.Fatal(err)
	}
	f, err := NewFollower(r.res, FollowOptions{CacheDir: t.TempDir(), Base: base, Threads: 1})
	if err != nil {
		t.Fatal(err)
	}
	cur, err := f.Current(ctx)
	if err != nil || cur != base {
		t.Fatalf("before any publish: %v %v, want the base", cur, err)
	}
	var mu sync.Mutex
	var got []*Policy
	fctx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() {
		done <- f.Follow(fctx, 0, func(p *Policy) { mu.Lock(); got = append(got, p); mu.Unlock() })
	}()

	v1Dir := filepath.Join(t.TempDir(), "v1")
	writeTinyModel(t, v1Dir, 2)
	publishCheckpoint(t, ctx, r, v1Dir, 1)
	waitFor(t, "version 1", 30*time.Second, func() bool { mu.Lock(); defer mu.Unlock(); return len(got) == 1 })
	a, err := model.NewAdapter(w0.Config, model.LoRAConfig{Rank: 2, Alpha: 4, Targets: model.LoRATargets}, 5)
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range a.Layers {
		for _, p := range l {
			for j := range p.B.Data {
				p.B.Data[j] = float32(math.Sin(float64(j))) * 0.3
			}
		}
	}
	v2Dir := filepath.Join(t.TempDir(), "v2")
	if err := a.Save(v2Dir); err != nil {
		t.Fatal(err)
	}
	publishCheckpoint(t, ctx, r, v2Dir, 2)
	waitFor(t, "version 2", 30*time.Second, func() bool { mu.Lock(); defer mu.Unlock(); return len(got) == 2 })
	stop()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if got[0].Version != 1 || got[0].IsAdapter() || got[1].Version != 2 || !got[1].IsAdapter() || got[1].Tok != base.Tok {
		t.Fatalf("followed %v (adapter %v), %v (adapter %v)", got[0].Version, got[0].IsAdapter(), got[1].Version, got[1].IsAdapter())
	}
	later, _ := NewFollower(r.res, FollowOptions{CacheDir: t.TempDir(), Base: base, Threads: 1})
	if cur, err := later.Current(ctx); err != nil || cur.Version != 2 || !cur.IsAdapter() {
		t.Fatalf("a later follower starts on %+v (%v), want version 2", cur, err)
	}
}
