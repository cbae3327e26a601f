package rollout

import (
	"context"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/autoif/autoif/model"
	"github.com/autoif/autoif/proto"
	"github.com/autoif/autoif/tokenizer"
)

// A LoRA run publishes adapters only. A worker under a steady stream of prompts swaps each
// published adapter onto the base it already holds: every prompt is sampled exactly once, the
// versions only move forward, a rollout stamped with a version was sampled by base+that
// adapter, and what crossed the bus and the cache is the adapter, not the base.
func TestWorkerSwapsAdaptersUnderLoadWithoutDroppingWork(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	r := newTestRun(t, ctx)
	baseDir := filepath.Join(t.TempDir(), "base")
	base := writeTinyModel(t, baseDir, 1)
	adapters := map[int64]*model.Adapter{}
	adapterDirs := map[int64]string{}
	for v := int64(1); v <= 3; v++ {
		a, err := model.NewAdapter(base.Config, model.LoRAConfig{Rank: 4, Alpha: 8, Targets: model.LoRATargets}, uint64(v))
		if err != nil {
			t.Fatal(err)
		}
		// A trained adapter: B non-zero, so each version samples differently.
		for _, l := range a.Layers {
			for _, p := range l {
				for j := range p.B.Data {
					p.B.Data[j] = float32(math.Sin(float64(j)*0.7+float64(v))) * 0.5
				}
			}
		}
		dir := filepath.Join(t.TempDir(), fmt.Sprintf("a%d", v))
		if err := a.Save(dir); err != nil {
			t.Fatal(err)
		}
		adapters[v], adapterDirs[v] = a, dir
	}
	const k, perStep = 2, 2
	cacheDir := t.TempDir()
	w := startWorker(t, ctx, r, newTestPool(t), Options{
		K: k, MaxNewTokens: 6, PromptsPerStep: perStep, Seed: 3, ModelDir: baseDir, CacheDir: cacheDir, Name: "w1",
	})

	// Load: prompts keep arriving while the versions are published.
	var units []proto.PromptUnit
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := range 12 {
			batch := testUnits(fmt.Sprintf("load%02d", i), perStep)
			r.enqueue(t, ctx, batch, perStep)
			units = append(units, batch...)
			if i%3 == 2 {
				v := int64(i/3 + 1)
				if v <= 3 {
					publishCheckpoint(t, ctx, r, adapterDirs[v], v)
				}
			}
			time.Sleep(40 * time.Millisecond)
		}
	}()
	<-done
	waitFor(t, "version 3 to load", 60*time.Second, func() bool { return w.Stats().LoadedVersion == 3 })
	tail := testUnits("tail", perStep)
	r.enqueue(t, ctx, tail, perStep)
	units = append(units, tail...)
	rows, _ := collectRows(t, ctx, r.bus.JS, r.res.Rollouts, proto.ScoredRollouts, len(units)*k, nil)

	per := map[string]int{}
	var last int64
	tok, err := tokenizer.Load(baseDir)
	if err != nil {
		t.Fatal(err)
	}
	prompts := map[string]string{}
	for _, u := range units {
		prompts[u.PromptID] = u.Prompt
	}
	checked := map[int64]bool{}
	for _, ro := range rows {
		per[ro.PromptID]++
		if ro.PolicyVersion < last {
			t.Errorf("rollout %s has version %d after %d: versions went back", ro.RolloutID, ro.PolicyVersion, last)
		}
		last = ro.PolicyVersion
		if ro.PolicyVersion == 0 || checked[ro.PolicyVersion] {
			continue
		}
		checked[ro.PolicyVersion] = true
		m, err := model.New(base).WithAdapter(adapters[ro.PolicyVersion])
		if err != nil {
			t.Fatal(err)
		}
		ids := make([]int, len(ro.TokenIDs))
		for i, id := range ro.TokenIDs {
			ids[i] = int(id)
		}
		lps, err := m.LogProbs(tok.Encode(prompts[ro.PromptID], true), ids)
		if err != nil {
			t.Fatal(err)
		}
		var sum float64
		for _, lp := range lps {
			sum += float64(lp)
		}
		if math.Abs(sum-ro.LogProbSum) > 1e-3*max(1, math.Abs(sum)) {
			t.Errorf("rollout %s: log-prob %g under base+adapter v%d, the worker says %g", ro.RolloutID, sum, ro.PolicyVersion, ro.LogProbSum)
		}
	}
	for _, u := range units {
		if per[u.PromptID] != k {
			t.Errorf("prompt %s sampled into %d rollouts, want %d", u.PromptID, per[u.PromptID], k)
		}
	}
	if last != 3 {
		t.Errorf("the last rollouts have version %d, want 3", last)
	}
	if st := w.Stats(); st.Swaps < 1 || st.PolicyVersion != 3 {
		t.Errorf("stats %+v: want swaps ending on version 3", st)
	}
	// The cached version is the adapter alone.
	entries, err := os.ReadDir(CheckpointDir(cacheDir, 3))
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if e.Name() == "model.safetensors" {
			t.Error("version 3's cache holds a whole model; an adapter version should carry the adapter only")
		}
	}
	if w.base == nil || w.base.Version != 0 || w.base.Model.Adapter() != nil {
		t.Error("the worker's base is not the adapter-free initial model")
	}
}

// An adapter version with no base to put it on is one clear error.
func TestAdapterVersionWithoutABaseIsAnError(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	r := newTestRun(t, ctx)
	cfg := writeTinyModel(t, filepath.Join(t.TempDir(), "m"), 1).Config
	a, _ := model.NewAdapter(cfg, model.LoRAConfig{Rank: 2, Alpha: 4, Targets: []string{"q_proj"}}, 1)
	dir := filepath.Join(t.TempDir(), "a")
	if err := a.Save(dir); err != nil {
		t.Fatal(err)
	}
	publishCheckpoint(t, ctx, r, dir, 1)
	w, err := New(r.bus.JS, r.res, scorerFunc(nil), Options{CacheDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	err = w.Run(ctx)
	if err == nil || !strings.Contains(err.Error(), "LoRA adapter") || !strings.Contains(err.Error(), "no base model") {
		t.Fatalf("Run = %v, want an error naming the missing base", err)
	}
}

// A version whose files cannot be fetched yet (here: the key moved before the objects were
// put; in the wild, a 2 GB fetch timing out under load) is retried until it loads, not given up
// after a few tries: in sync mode the run waits for exactly that version.
func TestWorkerKeepsRetryingTheNewestVersion(t *testing.T) {
	if testing.Short() {
		t.Skip("waits out the old give-up time")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	r := newTestRun(t, ctx)
	v0 := filepath.Join(t.TempDir(), "v0")
	writeTinyModel(t, v0, 1)
	v1 := filepath.Join(t.TempDir(), "v1")
	writeTinyModel(t, v1, 2)
	w := startWorker(t, ctx, r, newTestPool(t), Options{K: 2, MaxNewTokens: 4, ModelDir: v0, CacheDir: t.TempDir(), Name: "w1"})
	r.enqueue(t, ctx, testUnits("p", 1), 1)
	waitFor(t, "the worker's first step", 30*time.Second, func() bool { return w.Stats().Steps == 1 })
	if _, err := r.res.Policy.Put(ctx, proto.PolicyCurrentKey, []byte("1")); err != nil {
		t.Fatal(err)
	}
	// The old loop gave up after five attempts, 1+2+3+4 s apart.
	time.Sleep(12 * time.Second)
	if v := w.Stats().LoadedVersion; v != 0 {
		t.Fatalf("loaded version %d with no files published", v)
	}
	publishCheckpoint(t, ctx, r, v1, 1)
	waitFor(t, "version 1 to load after its files arrived", 45*time.Second, func() bool { return w.Stats().LoadedVersion == 1 })
}
