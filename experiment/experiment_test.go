package experiment

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/autoif/autoif/orchestrator"
	"github.com/autoif/autoif/proto"
	"github.com/autoif/autoif/testbed/tinyif"
	"github.com/autoif/autoif/trainer"
)

// Every warm-start batch pads to the same graph shape: the same longest sequence and a sum
// of response lengths in one 32-token window, whatever the examples drawn.
func TestShapeStableBatchesPadToOneShape(t *testing.T) {
	cases := []struct {
		name  string
		size  int
		steps int
	}{
		{"batch of 16", 16, 200},
		{"batch of 4", 4, 200},
		{"batch smaller than the minimum", 2, 50},
	}
	set, err := tinyif.Load()
	if err != nil {
		t.Fatal(err)
	}
	var exs []*trainer.Example
	for _, e := range set.SFT(tinyif.Train, tinyif.SFTOptions{Seed: 3}) {
		exs = append(exs, &trainer.Example{ID: e.PromptID, Prompt: make([]int, len(e.Prompt)), Response: make([]int, len(e.Response)+1)})
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			batches := shapeStableBatches(exs, tc.size, tc.steps, 7)
			if len(batches) != tc.steps {
				t.Fatalf("%d batches, want %d", len(batches), tc.steps)
			}
			type shape struct{ T, M int }
			shapes := map[shape]int{}
			distinct := map[string]bool{}
			for _, b := range batches {
				if len(b) != max(tc.size, 3) {
					t.Fatalf("batch of %d, want %d", len(b), max(tc.size, 3))
				}
				var s shape
				for _, e := range b {
					s.T = max(s.T, len(e.Prompt)+len(e.Response))
					s.M += len(e.Response)
					distinct[e.ID] = true
				}
				s.M = (s.M + 31) / 32
				shapes[s]++
			}
			if len(shapes) != 1 {
				t.Fatalf("batches pad to %d shapes %v, want one", len(shapes), shapes)
			}
			if len(distinct) < tc.steps {
				t.Fatalf("only %d distinct examples in %d batches: the draw is not spreading over the data", len(distinct), tc.steps)
			}
		})
	}
}

func abs(x float64) float64 {
	if x < 0 {
		return -x
	}
	return x
}

func TestEvalUnitsSpreadOverEveryInstruction(t *testing.T) {
	set, err := tinyif.Load()
	if err != nil {
		t.Fatal(err)
	}
	all := set.Units(tinyif.HeldOut)
	for _, n := range []int{0, 100, 400, len(all) + 5} {
		got := evalUnits(all, n)
		want := min(n, len(all))
		if n == 0 {
			want = len(all)
		}
		if len(got) != want {
			t.Fatalf("n=%d: %d units, want %d", n, len(got), want)
		}
		instr := map[string]bool{}
		for _, u := range got {
			instr[u.InstructionID] = true
		}
		if len(instr) != len(set.Instructions) {
			t.Fatalf("n=%d: %d instructions covered, want all %d", n, len(instr), len(set.Instructions))
		}
	}
}

// The whole experiment on a miniature budget: it trains and caches a warm start, reuses it
// on a second run, and writes a summary whose figures are pass rates of what it measured.
func TestRunTinyIFWritesSummaryAndReusesWarmStart(t *testing.T) {
	if testing.Short() {
		t.Skip("trains models and starts Python reward workers")
	}
	if _, err := exec.LookPath("python3"); err != nil {
		t.Skip("python3 is needed for the reward sandbox")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	root := t.TempDir()
	o := DefaultTinyIF()
	o.RunDir = filepath.Join(root, "run")
	o.WarmStart.Dir = filepath.Join(root, "warmstart")
	o.WarmStart.Shape = ModelShape{Layers: 1, Hidden: 32, Heads: 2, Intermediate: 64, MaxPositions: 256}
	o.WarmStart.Steps, o.WarmStart.BatchSize = 4, 8
	o.Steps, o.PairsPerStep, o.BatchSize, o.K, o.PromptsPerStep, o.MaxInFlight = 2, 4, 4, 4, 4, 8
	o.MaxNewTokens, o.EvalPrompts, o.RewardWorkers = 12, 40, 1
	o.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	run, err := proto.NewRun("exp-test")
	if err != nil {
		t.Fatal(err)
	}
	o.Run = run
	for i, wantCached := range []bool{false, true} {
		sum, err := RunTinyIF(ctx, o)
		if err != nil {
			t.Fatalf("run %d: %v", i, err)
		}
		if sum.WarmStartCached != wantCached {
			t.Fatalf("run %d: warm start cached %v, want %v", i, sum.WarmStartCached, wantCached)
		}
		data, err := os.ReadFile(filepath.Join(o.RunDir, SummaryFile))
		if err != nil {
			t.Fatal(err)
		}
		var got map[string]any
		if err := json.Unmarshal(data, &got); err != nil {
			t.Fatal(err)
		}
		for _, k := range []string{"heldout_pass_rate_before", "heldout_pass_rate_after", "offline_dpo_heldout_pass_rate"} {
			v, ok := got[k].(float64)
			if !ok || v < 0 || v > 1 {
				t.Fatalf("run %d: %s = %v, want a pass rate", i, k, got[k])
			}
		}
		if got["wall_s"].(float64) <= 0 || sum.Steps != 2 || sum.Pairs < 8 || sum.OfflinePairs == 0 {
			t.Fatalf("run %d: summary %s", i, data)
		}
		if _, err := os.Stat(filepath.Join(o.RunDir, orchestrator.MetricsFile)); err != nil {
			t.Fatal(err)
		}
	}
}

// A directory that no experiment wrote is never cleared.
func TestRunTinyIFRefusesAForeignRunDirectory(t *testing.T) {
	dir := t.TempDir()
	keep := filepath.Join(dir, "precious.txt")
	if err := os.WriteFile(keep, []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	o := DefaultTinyIF()
	o.RunDir = dir
	o.WarmStart.Dir = filepath.Join(t.TempDir(), "ws")
	if _, err := RunTinyIF(context.Background(), o); err == nil {
		t.Fatal("a foreign non-empty run directory was accepted")
	}
	if _, err := os.Stat(keep); err != nil {
		t.Fatalf("the foreign file is gone: %v", err)
	}
}
