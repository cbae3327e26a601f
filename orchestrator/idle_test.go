package orchestrator

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/autoif/autoif/natsbus"
	"github.com/autoif/autoif/proto"
)

// rows builds one prompt's K scored responses with fill applied to each.
func rows(k int, pairs int32, fill func(i int, ro *proto.ScoredRollout)) promptGroup {
	g := promptGroup{instruction: "i0"}
	for i := range k {
		ro := &proto.ScoredRollout{PromptID: "p0", InstructionID: "i0", PromptPairs: pairs}
		fill(i, ro)
		g.rows = append(g.rows, ro)
	}
	return g
}

func raising(typ string, fns int32) func(int, *proto.ScoredRollout) {
	return func(_ int, ro *proto.ScoredRollout) {
		ro.Errors = fns
		for range fns {
			ro.ErrorKinds = append(ro.ErrorKinds, "exception:"+typ)
		}
		ro.ErrorExample = typ + ": invalid literal for int() with base 10: '- 2'"
	}
}

// Each cause of a prompt without a pair is told apart, with what a person needs to act on it.
func TestIdlePromptCauses(t *testing.T) {
	cases := []struct {
		name      string
		group     promptGroup
		key       string
		mentions  []string
		exampleIn string
	}{
		{"functions raising, by exception type", rows(4, 0, raising("ValueError", 3)), "exception:ValueError",
			[]string{"raised ValueError"}, "invalid literal"},
		{"timeouts", rows(4, 0, func(_ int, ro *proto.ScoredRollout) {
			ro.Errors, ro.Timeouts, ro.ErrorKinds, ro.ErrorExample = 1, 1, []string{"timeout"}, "ran past the 2s deadline"
		}), "timeout", []string{"timed out"}, "deadline"},
		{"results skipped by the autoif return policy", rows(4, 0, func(_ int, ro *proto.ScoredRollout) {
			ro.Skipped, ro.ErrorExample = 2, "evaluate returned str 'true', which int() refuses: skipped (--returns autoif)"
		}), "skipped", []string{"--returns autoif"}, "str 'true'"},
		{"bad return types under strict", rows(4, 0, func(_ int, ro *proto.ScoredRollout) {
			ro.Errors, ro.ErrorKinds, ro.ErrorExample = 1, []string{"bad_return_type"}, "evaluate returned str 'true', want bool"
		}), "bad_return_type", []string{"other than a bool", "--returns"}, "want bool"},
		{"sandbox refusals by kind", rows(4, 0, func(_ int, ro *proto.ScoredRollout) {
			ro.Errors, ro.ErrorKinds, ro.ErrorExample = 1, []string{"import_denied"}, "import of 'socket' denied"
		}), "import_denied", []string{"import_denied"}, "socket"},
		{"all tied at zero", rows(4, 0, func(_ int, ro *proto.ScoredRollout) { ro.Failed = 2 }), "tie:0.000",
			[]string{"tied at score 0.000"}, ""},
		{"all tied at one", rows(4, 0, func(_ int, ro *proto.ScoredRollout) { ro.Passed, ro.Score = 2, 1 }), "tie:1.000",
			[]string{"tied at score 1.000"}, ""},
		{"tied because no function gave a verdict on some and the rest failed", rows(4, 0, func(i int, ro *proto.ScoredRollout) {
			if i == 0 {
				ro.Failed = 1
			}
		}), "tie:0.000", []string{"tied at score 0.000"}, ""},
		{"scores between the thresholds", rows(4, 0, func(i int, ro *proto.ScoredRollout) {
			ro.Passed, ro.Failed, ro.Score = 1, 3, 0.25+float64(i%2)*0.1
		}), "unpaired", []string{"pair selection"}, "0.250 to 0.350"},
	}
	for _, tc := range cases {
		t.Run(strings.ReplaceAll(tc.name, " ", "_"), func(t *testing.T) {
			key, what, example := classify(tc.group)
			if key != tc.key {
				t.Errorf("cause %q, want %q (%s)", key, tc.key, what)
			}
			for _, m := range tc.mentions {
				if !strings.Contains(what, m) {
					t.Errorf("%q does not mention %q", what, m)
				}
			}
			if !strings.Contains(example, tc.exampleIn) {
				t.Errorf("example %q does not contain %q", example, tc.exampleIn)
			}
		})
	}
}

// A warning comes at the threshold and at each doubling, a pair ends the streak, and the stop
// comes exactly at the limit, naming the main cause, its instruction and an example.
func TestIdleWatchWarnsResetsAndStops(t *testing.T) {
	w := newIdleWatch(4, 10)
	raise := rows(4, 0, raising("KeyError", 2))
	var warnings []int
	feed := func(n int) {
		for range n {
			if msg := w.onPrompt(raise, "Answer in exactly three words"); msg != "" {
				warnings = append(warnings, w.streak)
				if !strings.Contains(msg, "KeyError") || !strings.Contains(msg, "Answer in exactly three words") {
					t.Errorf("warning does not name the exception type and instruction:\n%s", msg)
				}
			}
		}
	}
	feed(9)
	if fmt.Sprint(warnings) != "[4 8]" || w.stop != "" {
		t.Fatalf("after 9 idle prompts: warnings at %v, stop %q; want warnings at [4 8] and no stop", warnings, w.stop)
	}
	w.onPrompt(rows(4, 2, func(int, *proto.ScoredRollout) {}), "")
	if w.streak != 0 || len(w.causes) != 0 {
		t.Fatalf("a prompt with pairs left the streak at %d with causes %v", w.streak, w.causes)
	}
	warnings = nil
	feed(3)
	if n := w.onSkipped(7); n == "" && w.stop == "" {
		t.Fatalf("3 idle prompts and 7 skipped as too long did not stop at 10 (streak %d)", w.streak)
	}
	if !strings.Contains(w.stop, "10 prompts in a row") || !strings.Contains(w.stop, "too long") {
		t.Errorf("stop %q: want the count and the main cause, the skipped prompts", w.stop)
	}
	if msg := w.onSkipped(20); msg != "" || w.streak != 10 {
		t.Errorf("prompts finishing after the stop warned (%q) or moved the streak to %d", msg, w.streak)
	}
	if r := w.report("x"); !strings.Contains(r, "KeyError") || !strings.Contains(r, "errors 24 (exception:KeyError 24)") {
		t.Errorf("report leaves out the minor cause or the outcomes:\n%s", r)
	}
	if w := newIdleWatch(0, 0); w.note("tie:0.000", "tied", "", "") != "" || w.stop != "" {
		t.Error("0 must mean never warn and never stop")
	}
}

// idleWorker takes prompts off the queue until ctx ends, publishing K rows per prompt as fill
// makes them, and no pairs: a rollout worker whose prompts teach nothing.
func (r *testRun) idleWorker(ctx context.Context, fill func(u proto.PromptUnit, k int, ro *proto.ScoredRollout)) <-chan int {
	taken := make(chan int, 1)
	cons, err := natsbus.NewConsumer(ctx, r.res.Conn, r.res.Prompts, proto.PromptUnits, natsbus.ConsumerOptions{Durable: "rollout", MaxAckPending: 1000, PullBatch: 1}, nil)
	if err != nil {
		r.t.Fatal(err)
	}
	go func() {
		defer cons.Close()
		n := 0
		defer func() { taken <- n }()
		hdr := nats.Header{}
		hdr.Set(proto.HeaderPolicyVersion, "0")
		for {
			b, err := cons.Next(ctx)
			if err != nil {
				return
			}
			for _, u := range b.Rows {
				n++
				var out []proto.ScoredRollout
				for k := range 4 {
					ro := proto.ScoredRollout{RolloutID: fmt.Sprintf("%s-%d-%d", u.PromptID, n, k), PromptID: u.PromptID,
						InstructionID: u.InstructionID, Response: "r" + strconv.Itoa(k)}
					fill(u, k, &ro)
					out = append(out, ro)
				}
				if r.rolls.Publish(ctx, "rolls-"+out[0].RolloutID, out, hdr) != nil || r.rolls.Flush(ctx) != nil || b.AckSync(ctx) != nil {
					return
				}
			}
		}
	}()
	return taken
}

// runIdle runs an orchestrator against idleWorker until it stops by itself (or the test gives
// up), returning its summary, error, output and how many prompts the worker took.
func (r *testRun) runIdle(cfg Config, fill func(u proto.PromptUnit, k int, ro *proto.ScoredRollout)) (Summary, string, int, error) {
	r.t.Helper()
	set := testSet(6)
	for i := range set.Units {
		set.Units[i].Instruction = "Write the response as a list of prime numbers " + set.Units[i].InstructionID
	}
	out := &syncBuffer{}
	r.progress = nil // written by the run's loop, read once it returned
	orc, err := New(r.bus.JS, r.res, set, cfg, Options{Out: out, PollInterval: 20 * time.Millisecond, LineGrace: 100 * time.Millisecond, StatusEvery: time.Hour, Logger: quiet(),
		OnProgress: func(p Progress) { r.progress = append(r.progress, p) }})
	if err != nil {
		r.t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	wctx, stopWorker := context.WithCancel(ctx)
	taken := r.idleWorker(wctx, fill)
	sum, runErr := orc.Run(ctx)
	if ctx.Err() != nil {
		r.t.Fatalf("the run did not stop by itself: %+v, %v\n%s", sum, runErr, out)
	}
	stopWorker()
	return sum, out.String(), <-taken, runErr
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

// The run: every function raises on every response. It stops by itself within
// --max-idle-prompts, with an error, and its last lines name the exception and an instruction.
func TestRunWhoseFunctionsAlwaysRaiseStopsItself(t *testing.T) {
	r := newTestRun(t)
	cfg := r.config(ModeSync, 4)
	cfg.WarnIdlePrompts, cfg.MaxIdlePrompts = 8, 24
	sum, out, taken, err := r.runIdle(cfg, func(_ proto.PromptUnit, _ int, ro *proto.ScoredRollout) {
		raising("ValueError", 1)(0, ro)
	})
	if err == nil || sum.Reason != reasonNoSignal {
		t.Fatalf("reason %q, error %v: want %q and an error", sum.Reason, err, reasonNoSignal)
	}
	if taken > cfg.MaxIdlePrompts+cfg.MaxInFlight {
		t.Errorf("the worker took %d prompts; the run should stop within %d (+%d in flight)", taken, cfg.MaxIdlePrompts, cfg.MaxInFlight)
	}
	for _, want := range []string{"24 prompts in a row", "ValueError", "Write the response as a list of prime numbers"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not say %q", err, want)
		}
	}
	t.Logf("the run's output:\n%s", out)
	tail := lastLines(out, 5)
	for _, want := range []string{"ValueError", "instruction: Write the response as a list of prime numbers", "invalid literal"} {
		if !strings.Contains(tail, want) {
			t.Errorf("last lines do not say %q:\n%s", want, tail)
		}
	}
	if !strings.Contains(out, "warning: no preference pair from the last 8 prompts") {
		t.Errorf("no warning at --warn-idle-prompts 8:\n%s", out)
	}
	if !strings.Contains(out, "mean score") {
		t.Errorf("no per-instruction table at the end:\n%s", out)
	}
	st, lerr := LoadState(r.dir)
	if lerr != nil || st == nil || st.StopReason != reasonNoSignal {
		t.Errorf("state.json stop reason: %+v, %v", st, lerr)
	}
}

// A run whose responses all score 0 says they tied at 0.
func TestRunWhoseResponsesAllTieSaysSo(t *testing.T) {
	r := newTestRun(t)
	cfg := r.config(ModeAsync, 4)
	cfg.WarnIdlePrompts, cfg.MaxIdlePrompts = 0, 12
	_, out, _, err := r.runIdle(cfg, func(_ proto.PromptUnit, _ int, ro *proto.ScoredRollout) { ro.Failed = 2 })
	if err == nil || !strings.Contains(err.Error(), "tied at score 0.000") {
		t.Fatalf("error %v: want one saying the responses tied at 0", err)
	}
	if strings.Contains(out, "warning:") {
		t.Errorf("--warn-idle-prompts 0 warned:\n%s", out)
	}
	if !strings.Contains(lastLines(out, 3), "tied at score 0.000") {
		t.Errorf("last lines do not say the responses tied:\n%s", lastLines(out, 3))
	}
}

// Budgets stop a run that makes no pairs, idle limit or not.
func TestWallBudgetStopsARunWithoutPairs(t *testing.T) {
	r := newTestRun(t)
	cfg := r.config(ModeSync, 2)
	cfg.MaxIdlePrompts, cfg.MaxWall = 0, 700*time.Millisecond
	start := time.Now()
	sum, _, taken, err := r.runIdle(cfg, func(_ proto.PromptUnit, _ int, ro *proto.ScoredRollout) { ro.Failed = 1 })
	if err != nil || sum.Reason != "wall time" {
		t.Fatalf("reason %q, error %v: want the wall-time budget", sum.Reason, err)
	}
	if d := time.Since(start); d > 20*time.Second || taken == 0 {
		t.Errorf("took %v and %d prompts", d, taken)
	}
	// The live status line's feed: polled all along, with the wall budget to count down.
	if len(r.progress) == 0 {
		t.Fatal("OnProgress was never called")
	}
	first, last := r.progress[0], r.progress[len(r.progress)-1]
	if first.MaxWall != cfg.MaxWall || first.ETA <= 0 || first.ETA > cfg.MaxWall || last.IdlePrompts == 0 {
		t.Errorf("progress from %+v to %+v: want the wall budget, an ETA within it and the prompts without a pair", first, last)
	}
}

// Step lines and metrics.parquet carry function outcomes, overall and per instruction.
func TestStepsCarryFunctionOutcomes(t *testing.T) {
	var a stepAgg
	g := rows(2, 0, raising("ValueError", 2))
	g.rows[1].ErrorKinds, g.rows[1].Errors, g.rows[1].Passed, g.rows[1].Skipped, g.rows[1].Timeouts = []string{"timeout"}, 1, 1, 1, 1
	a.PerInstr = map[string]*evalCounts{"i0": {}}
	for _, ro := range g.rows {
		a.Evals.addRow(ro)
		a.PerInstr["i0"].addRow(ro)
	}
	c := closedStep{agg: a, version: 1, end: time.Now()}
	line := stepLine(c, nil)
	if !strings.Contains(line, "evals: pass 1 fail 0 skipped 1 errors 2 (exception:ValueError 2) timeouts 1") {
		t.Errorf("step line %q", line)
	}
	got := map[string]float64{}
	for _, e := range c.events() {
		got[e.Name+"|"+e.Label] = e.Value
	}
	for k, v := range map[string]float64{"evals/pass|": 1, "evals/skipped|": 1, "evals/timeout|": 1, "evals/error|": 2,
		"evals/error/exception:ValueError|": 2, "evals/error/exception:ValueError|i0": 2, "evals/fail|i0": 0} {
		if g, ok := got[k]; !ok || g != v {
			t.Errorf("metric %s = %v (present %v), want %v", k, g, ok, v)
		}
	}
}

func TestRecordStateCloneIsDeep(t *testing.T) {
	s := RecordState{Instructions: map[string]*instrTotals{"i": {Responses: 1}}}
	s.Open.PerInstr = map[string]*evalCounts{"i": {Errors: map[string]int64{"x": 1}}}
	c := s.clone()
	s.Instructions["i"].Responses++
	s.Open.PerInstr["i"].Errors["x"]++
	if c.Instructions["i"].Responses != 1 || c.Open.PerInstr["i"].Errors["x"] != 1 {
		t.Error("the clone moved with the original")
	}
}

func TestProgressLineAndETA(t *testing.T) {
	p := Progress{Version: 2, MaxSteps: 6, Pairs: 40, PairsPerSec: 1.25, Elapsed: 100 * time.Second, InFlight: 3, IdlePrompts: 7}
	// Two versions in 80s of this process: four more take 160s.
	p.ETA = eta(p, 0, 0, 80*time.Second)
	if p.ETA != 160*time.Second {
		t.Errorf("ETA %v, want 2m40s", p.ETA)
	}
	p.MaxWall = 150 * time.Second
	if got := eta(p, 0, 0, 80*time.Second); got != 50*time.Second {
		t.Errorf("ETA with a nearer wall budget %v, want 50s", got)
	}
	if got := eta(Progress{Version: 0, MaxSteps: 3}, 0, 0, time.Minute); got != 0 {
		t.Errorf("ETA before any version %v, want unknown (0)", got)
	}
	line := p.Line()
	for _, want := range []string{"policy v2/6", "pairs 40", "reward -", "1.25 pairs/s", "ETA 2m40s", "7 prompts without a pair"} {
		if !strings.Contains(line, want) {
			t.Errorf("%q does not show %q", line, want)
		}
	}
}
