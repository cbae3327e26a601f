package orchestrator

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/autoif/autoif/model"
	"github.com/autoif/autoif/natsbus"
	"github.com/autoif/autoif/proto"
	"github.com/autoif/autoif/reward"
	"github.com/autoif/autoif/rollout"
	"github.com/autoif/autoif/tokenizer"
)

// A random tiny model follows no instruction, so the loop is driven by a property its
// samples split on about evenly: the parity of the response's code points.
var parityFuncs = []string{
	"def evaluate(response):\n    return sum(ord(c) for c in response) % 2 == 0\n",
	"def evaluate(response):\n    return not (sum(map(ord, response)) & 1)\n",
}

func writeTinyModel(t *testing.T, dir string) {
	t.Helper()
	tokDir := t.TempDir()
	files, err := tokenizer.NewByteLevelJSON(tokenizer.ByteLevelOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if err := files.WriteDir(tokDir); err != nil {
		t.Fatal(err)
	}
	tok, err := tokenizer.Load(tokDir)
	if err != nil {
		t.Fatal(err)
	}
	cfg := &model.Config{
		Architecture: model.ArchLlama, HiddenSize: 32, IntermediateSize: 64, NumHiddenLayers: 1,
		NumAttentionHeads: 2, NumKeyValueHeads: 2, HeadDim: 16, RMSNormEps: 1e-6, RopeTheta: 10000,
		VocabSize: tok.VocabSize(), MaxPositionEmbeddings: 512, TieWordEmbeddings: true,
		EOSTokenIDs: tok.EOSIDs(), InitializerRange: 0.02,
	}
	w, err := model.Init(cfg, 11)
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Save(dir, model.SaveOptions{TokenizerDir: tokDir}); err != nil {
		t.Fatal(err)
	}
}

// paritySet is n prompt units verified by the parity functions.
func paritySet(n int) *PromptSet {
	s := &PromptSet{}
	for i := range n {
		s.Units = append(s.Units, proto.PromptUnit{
			PromptID: fmt.Sprintf("parity-%02d", i), InstructionID: "parity", Instruction: "Make the code points sum to an even number.",
			Query: fmt.Sprintf("Say %d.", i), Prompt: fmt.Sprintf("Say %d. Make the code points sum to an even number.", i), Functions: parityFuncs,
		})
	}
	return s
}

// publishPolicy publishes version v as a trainer must: every checkpoint file into the
// object store first, then the KV pointer.
func publishPolicy(ctx context.Context, res *natsbus.RunResources, v int64, dir string) error {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	for _, e := range entries {
		f, err := os.Open(filepath.Join(dir, e.Name()))
		if err != nil {
			return err
		}
		_, err = res.Checkpoints.Put(ctx, jetstream.ObjectMeta{Name: res.Run.CheckpointObject(v, e.Name())}, f)
		f.Close()
		if err != nil {
			return err
		}
	}
	_, err = res.Policy.Put(ctx, proto.PolicyCurrentKey, []byte(strconv.FormatInt(v, 10)))
	return err
}

// TestOneRunWithARealRolloutWorker runs the orchestrator in sync mode against a real rollout
// worker (tiny model, sandboxed reward) and a stand-in trainer that speaks the trainer's bus
// contract: it consumes pairs, reports its metrics and publishes a new policy version per
// step. The run stops at its step budget.
func TestOneRunWithARealRolloutWorker(t *testing.T) {
	if testing.Short() {
		t.Skip("starts Python reward workers")
	}
	if _, err := exec.LookPath("python3"); err != nil {
		t.Skip("python3 is needed for the reward sandbox")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	r := newTestRun(t)
	modelDir := t.TempDir()
	writeTinyModel(t, modelDir)

	pool, err := reward.NewPool(ctx, reward.Options{Workers: 2, Deadline: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	w, err := rollout.New(r.bus.JS, r.res, pool, rollout.Options{
		K: 4, MaxNewTokens: 6, PromptsPerStep: 4, Seed: 5, ChatTemplate: true, ModelDir: modelDir,
		CacheDir: t.TempDir(), Threads: 1, Name: "w1", FetchWait: 20 * time.Millisecond, Logger: quiet(),
	})
	if err != nil {
		t.Fatal(err)
	}
	wctx, stopWorkers := context.WithCancel(ctx)
	var wg sync.WaitGroup
	defer func() {
		stopWorkers()
		wg.Wait()
	}()
	errs := make(chan error, 2)
	wg.Add(2)
	go func() {
		defer wg.Done()
		errs <- w.Run(wctx)
	}()
	go func() {
		defer wg.Done()
		errs <- standInTrainer(wctx, r, modelDir)
	}()

	cfg := r.config(ModeSync, 4)
	cfg.K, cfg.PairsPerVersion, cfg.MaxSteps, cfg.MaxLag = 4, 1, 2, 1
	out := &syncBuffer{}
	orc, err := New(r.bus.JS, r.res, paritySet(30), cfg, Options{Out: out, PollInterval: 20 * time.Millisecond, LineGrace: 200 * time.Millisecond, Logger: quiet()})
	if err != nil {
		t.Fatal(err)
	}
	sum, err := orc.Run(ctx)
	if err != nil {
		t.Fatal(err)
	}
	stopWorkers()
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil && !errors.Is(err, context.Canceled) {
			t.Fatal(err)
		}
	}
	// Sync mode is on-policy: pairs a batch made beyond one version's arrive a version behind
	// and count as stale, whatever max_lag says.
	if sum.Reason != "steps" || sum.Version != 2 || sum.Pairs == 0 || sum.Enqueued == 0 {
		t.Fatalf("summary %+v, want stopped by steps at version 2 with pairs", sum)
	}
	t.Logf("step lines:\n%s", out.String())

	metrics, err := ReadMetrics(ctx, filepath.Join(r.dir, MetricsFile))
	if err != nil {
		t.Fatal(err)
	}
	for _, step := range []int64{1, 2} {
		if i := findMetric(metrics, Component, step, MetricRewardMean); i < 0 || metrics[i].Value < 0 || metrics[i].Value > 1 {
			t.Errorf("step %d: orchestrator reward/mean %v, want a pass rate", step, valueAt(metrics, i))
		}
		if findMetric(metrics, "trainer", step, "loss") < 0 {
			t.Errorf("step %d: no trainer loss in metrics.parquet", step)
		}
	}
	sawV1 := false
	for _, m := range metrics {
		if m.Component == rollout.Component && m.Name == rollout.MetricPolicyVersion && m.Value == 1 {
			sawV1 = true
		}
	}
	if !sawV1 {
		t.Error("the rollout worker never sampled with version 1: sync mode did not wait for the swap")
	}
	samples, err := ReadSamples(ctx, filepath.Join(r.dir, SamplesFile))
	if err != nil {
		t.Fatal(err)
	}
	if len(samples) == 0 {
		t.Fatal("samples.parquet is empty")
	}
	withPairs := 0
	for _, s := range samples {
		if s.Prompt == "" || (s.RolloutsSeq != 0 && (len(s.Responses) != 4 || len(s.Scores) != 4)) {
			t.Fatalf("sample row %+v, want the prompt and its 4 scored responses", s)
		}
		if len(s.Chosen) == 0 || s.RolloutsSeq == 0 {
			continue
		}
		withPairs++
		// A pair's responses are two of the prompt's scored responses: chosen passed,
		// rejected failed (AutoIF's rule).
		for j := range s.Chosen {
			ci, ri := slices.Index(s.Responses, s.Chosen[j]), slices.Index(s.Responses, s.Rejected[j])
			if ci < 0 || ri < 0 || s.Scores[ci] < 0.5 || s.Scores[ri] != 0 {
				t.Fatalf("sample row %+v: pair %d is not a passing and a failing response of the prompt", s, j)
			}
		}
	}
	if withPairs == 0 {
		t.Fatalf("no sample row joins a prompt's responses with its pairs: %+v", samples)
	}
}

// standInTrainer plays the trainer over the bus: each batch of pairs sampled by the current
// version is one step, reported as metrics, then published as the next version.
func standInTrainer(ctx context.Context, r *testRun, modelDir string) error {
	cons, err := natsbus.NewPairConsumer(ctx, r.res, natsbus.ConsumerOptions{Durable: "trainer"})
	if err != nil {
		return err
	}
	defer cons.Close()
	metrics := NewMetricsPublisher(r.bus.JS, r.res.Run, "trainer")
	version := int64(0)
	for {
		b, err := cons.Next(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		fresh := 0
		for _, p := range b.Rows {
			if p.PolicyVersion == version {
				fresh++
			}
		}
		if err := b.AckSync(ctx); err != nil {
			return err
		}
		if fresh == 0 {
			continue
		}
		version++
		if err := metrics.Publish(ctx, version, version, map[string]float64{"loss": 0.7 / float64(version), "rewards/accuracies": 0.5}); err != nil {
			return err
		}
		if err := publishPolicy(ctx, r.res, version, modelDir); err != nil {
			return err
		}
	}
}
