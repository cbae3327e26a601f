package orchestrator

import (
	"cmp"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"text/tabwriter"

	"github.com/autoif/autoif/proto"
)

// Metric names of function outcomes, published per step overall (Label "") and per
// instruction (Label = instruction id): evaluations (one function on one response) by outcome,
// and errors by kind as MetricEvalErrors + "/" + label ("evals/error/exception:ValueError").
const (
	MetricEvalPass     = "evals/pass"
	MetricEvalFail     = "evals/fail"
	MetricEvalSkipped  = "evals/skipped" // results the reward's return policy left out
	MetricEvalTimeouts = "evals/timeout"
	MetricEvalErrors   = "evals/error" // every error but timeouts; by kind under it
)

// rolloutSkippedPrompts is the rollout workers' count of prompts they skipped as too long for
// the model (rollout.MetricSkippedPrompts; the orchestrator does not import rollout).
const rolloutSkippedPrompts = "rollout/skipped_prompts"

// evalCounts are function outcomes summed over responses.
type evalCounts struct {
	Pass     int64 `json:"pass"`
	Fail     int64 `json:"fail"`
	Skipped  int64 `json:"skipped"`
	Timeouts int64 `json:"timeouts"`
	// Errors counts errors other than timeouts by label (reward.Eval.Label).
	Errors map[string]int64 `json:"errors,omitempty"`
}

func (c *evalCounts) addRow(ro *proto.ScoredRollout) {
	c.Pass += int64(ro.Passed)
	c.Fail += int64(ro.Failed)
	c.Skipped += int64(ro.Skipped)
	c.Timeouts += int64(ro.Timeouts)
	labelled := int64(0)
	for _, k := range ro.ErrorKinds {
		if k == "timeout" {
			continue
		}
		c.addError(k, 1)
		labelled++
	}
	// A worker that does not label its errors still has them counted.
	if rest := int64(ro.Errors-ro.Timeouts) - labelled; rest > 0 {
		c.addError("error", rest)
	}
}

func (c *evalCounts) addError(label string, n int64) {
	if c.Errors == nil {
		c.Errors = map[string]int64{}
	}
	c.Errors[strings.Clone(label)] += n
}

func (c *evalCounts) add(o evalCounts) {
	c.Pass += o.Pass
	c.Fail += o.Fail
	c.Skipped += o.Skipped
	c.Timeouts += o.Timeouts
	for k, n := range o.Errors {
		c.addError(k, n)
	}
}

func (c evalCounts) errors() int64 {
	var n int64
	for _, v := range c.Errors {
		n += v
	}
	return n
}

func (c evalCounts) total() int64 { return c.Pass + c.Fail + c.Skipped + c.Timeouts + c.errors() }

// byCount lists a count map's keys, most frequent first.
func byCount(m map[string]int64) []string {
	keys := slices.Collect(maps.Keys(m))
	slices.SortFunc(keys, func(a, b string) int { return cmp.Or(cmp.Compare(m[b], m[a]), strings.Compare(a, b)) })
	return keys
}

// String reads "pass 3 fail 5 skipped 0 errors 8 (exception:ValueError 8) timeouts 0".
func (c evalCounts) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "pass %d fail %d skipped %d errors %d", c.Pass, c.Fail, c.Skipped, c.errors())
	if len(c.Errors) > 0 {
		b.WriteString(" (")
		for i, k := range byCount(c.Errors) {
			if i > 0 {
				b.WriteString(", ")
			}
			if i == 3 {
				fmt.Fprintf(&b, "%d more kinds", len(c.Errors)-3)
				break
			}
			fmt.Fprintf(&b, "%s %d", k, c.Errors[k])
		}
		b.WriteString(")")
	}
	fmt.Fprintf(&b, " timeouts %d", c.Timeouts)
	return b.String()
}

func (c evalCounts) events(ev func(name string, v float64, label string) proto.MetricEvent, label string) []proto.MetricEvent {
	out := []proto.MetricEvent{
		ev(MetricEvalPass, float64(c.Pass), label), ev(MetricEvalFail, float64(c.Fail), label),
		ev(MetricEvalSkipped, float64(c.Skipped), label), ev(MetricEvalTimeouts, float64(c.Timeouts), label),
		ev(MetricEvalErrors, float64(c.errors()), label),
	}
	for _, k := range byCount(c.Errors) {
		out = append(out, ev(MetricEvalErrors+"/"+k, float64(c.Errors[k]), label))
	}
	return out
}

// instrTotals is one instruction's account over the run, for the end-of-run table.
type instrTotals struct {
	Responses int64      `json:"responses"`
	ScoreSum  float64    `json:"score_sum"`
	Prompts   int64      `json:"prompts"`
	Ties      int64      `json:"ties"` // prompts whose responses all scored the same
	Pairs     int64      `json:"pairs"`
	Evals     evalCounts `json:"evals"`
}

// promptGroup is one prompt's rows of one step, as they arrived.
type promptGroup struct {
	instruction string
	rows        []*proto.ScoredRollout
}

// tie reports whether every response scored the same, and that score.
func (g promptGroup) tie() (float64, bool) {
	if len(g.rows) < 2 {
		return 0, false
	}
	s := g.rows[0].Score
	for _, ro := range g.rows[1:] {
		if ro.Score != s {
			return 0, false
		}
	}
	return s, true
}

// groupRollouts splits a batch's rows by prompt and policy version, in order of arrival.
func groupRollouts(rows []proto.ScoredRollout) []promptGroup {
	var out []promptGroup
	at := map[sampleKey]int{}
	for i := range rows {
		ro := &rows[i]
		k := sampleKey{ro.PolicyVersion, ro.PromptID}
		j, ok := at[k]
		if !ok {
			j = len(out)
			at[k] = j
			out = append(out, promptGroup{instruction: ro.InstructionID})
		}
		out[j].rows = append(out[j].rows, ro)
	}
	return out
}

// idleCause is one reason prompts made no pair, with one example.
type idleCause struct {
	what        string // for a person: "functions raised ValueError"
	prompts     int
	example     string // one message, when the cause has one
	instruction string // the instruction of the example
}

// idleWatch follows the prompts that made no pair, in a row, and says why: a run whose
// functions cannot tell its responses apart samples forever without learning anything.
type idleWatch struct {
	warnAt, stopAt int
	streak         int
	causes         map[string]*idleCause
	evals          evalCounts // function outcomes over the streak's prompts
	warned         int        // the streak length last warned at
	// stop is set once the streak reaches stopAt: the run stops with it.
	stop string
}

func newIdleWatch(warnAt, stopAt int) *idleWatch {
	return &idleWatch{warnAt: warnAt, stopAt: stopAt, causes: map[string]*idleCause{}}
}

// classify names why a prompt that made no pair made none. The instruction's text is the
// prompt unit's, when known.
func classify(g promptGroup) (key, what, example string) {
	var ran, skipped int64
	labels := map[string]int64{}
	for _, ro := range g.rows {
		ran += int64(ro.Passed + ro.Failed)
		skipped += int64(ro.Skipped)
		for _, k := range ro.ErrorKinds {
			labels[k]++
		}
		if example == "" {
			example = ro.ErrorExample
		}
	}
	if ran == 0 && (len(labels) > 0 || skipped > 0) {
		if skipped > 0 {
			labels["skipped"] += skipped
		}
		top := byCount(labels)[0]
		kind, detail, _ := strings.Cut(top, ":")
		switch {
		case kind == "exception" && detail != "":
			what = "functions raised " + detail + " on every response"
		case kind == "exception":
			what = "functions raised on every response"
		case kind == "timeout":
			what = "functions timed out on every response"
		case kind == "skipped":
			what = "functions returned no verdict on any response (results skipped by --returns autoif: not a bool, and not 0/1 by int())"
		case kind == "bad_return_type":
			what = "functions returned something other than a bool on every response (see --returns)"
		default:
			what = "functions failed with " + top + " on every response"
		}
		return top, what, example
	}
	if s, ok := g.tie(); ok {
		key = fmt.Sprintf("tie:%.3f", s)
		what = fmt.Sprintf("all %d responses tied at score %.3f", len(g.rows), s)
		if ran == 0 {
			what += " (no function gave a verdict)"
		}
		return key, what, ""
	}
	lo, hi := g.rows[0].Score, g.rows[0].Score
	for _, ro := range g.rows {
		lo, hi = min(lo, ro.Score), max(hi, ro.Score)
	}
	return "unpaired", "scores differed but the pair selection took none", fmt.Sprintf("scores from %.3f to %.3f", lo, hi)
}

// onPrompt records one finished prompt; it returns a warning to print when the streak reaches
// the warning threshold (and each doubling of it after).
func (w *idleWatch) onPrompt(g promptGroup, instruction string) string {
	if len(g.rows) > 0 && g.rows[0].PromptPairs > 0 {
		w.reset()
		return ""
	}
	key, what, example := classify(g)
	for _, ro := range g.rows {
		w.evals.addRow(ro)
	}
	return w.note(key, what, example, instruction)
}

// onSkipped records prompts the rollout workers skipped as too long for the model.
func (w *idleWatch) onSkipped(n int) string {
	msg := ""
	for range n {
		if m := w.note("too_long", "prompts were skipped as too long for the model (see --max-new-tokens)", "", ""); m != "" {
			msg = m
		}
	}
	return msg
}

func (w *idleWatch) note(key, what, example, instruction string) string {
	if w.stop != "" {
		// Prompts still in flight when the limit was reached: the account stays the one the
		// stop was made on.
		return ""
	}
	w.streak++
	c := w.causes[key]
	if c == nil {
		c = &idleCause{what: what}
		w.causes[key] = c
	}
	c.prompts++
	if c.example == "" && example != "" {
		c.example, c.instruction = example, instruction
	}
	if c.instruction == "" {
		c.instruction = instruction
	}
	if w.stopAt > 0 && w.streak >= w.stopAt && w.stop == "" {
		w.stop = fmt.Sprintf("no preference pair from %d prompts in a row (--max-idle-prompts %d): %s", w.streak, w.stopAt, w.headline())
		return ""
	}
	if w.warnAt > 0 && w.streak >= w.warnAt && w.streak >= 2*w.warned {
		w.warned = w.streak
		return w.report(fmt.Sprintf("warning: no preference pair from the last %d prompts", w.streak))
	}
	return ""
}

func (w *idleWatch) reset() {
	w.streak, w.warned = 0, 0
	clear(w.causes)
	w.evals = evalCounts{}
}

// ranked lists the streak's causes, most prompts first.
func (w *idleWatch) ranked() []string {
	counts := map[string]int64{}
	for k, c := range w.causes {
		counts[k] = int64(c.prompts)
	}
	return byCount(counts)
}

// headline is the streak's main cause in one line.
func (w *idleWatch) headline() string {
	r := w.ranked()
	if len(r) == 0 {
		return "no prompt finished"
	}
	c := w.causes[r[0]]
	s := fmt.Sprintf("%d of them: %s", c.prompts, c.what)
	if c.instruction != "" {
		s += fmt.Sprintf(", e.g. instruction %q", preview(c.instruction, 80))
	}
	if c.example != "" {
		s += ": " + preview(c.example, 160)
	}
	return s
}

// report is the streak's account, several lines: each cause with its example, then the
// function outcomes over those prompts.
func (w *idleWatch) report(title string) string {
	var b strings.Builder
	b.WriteString(title + ", by cause:\n")
	for _, k := range w.ranked() {
		c := w.causes[k]
		fmt.Fprintf(&b, "  %5d prompts: %s\n", c.prompts, c.what)
		if c.instruction != "" {
			fmt.Fprintf(&b, "         instruction: %s\n", preview(c.instruction, 120))
		}
		if c.example != "" {
			fmt.Fprintf(&b, "         example: %s\n", preview(c.example, 200))
		}
	}
	fmt.Fprintf(&b, "  function outcomes over them: %s", w.evals)
	return b.String()
}

func preview(s string, n int) string {
	s = strings.Join(strings.Fields(s), " ")
	if r := []rune(s); len(r) > n {
		return string(r[:n-1]) + "…"
	}
	return s
}

// writeInstructionTable prints the run's account per instruction: responses, mean score,
// error rate (evaluations that gave no verdict, skipped ones aside), ties, pairs made.
func writeInstructionTable(out io.Writer, totals map[string]*instrTotals, text func(id string) string) {
	if len(totals) == 0 {
		return
	}
	ids := slices.Sorted(maps.Keys(totals))
	fmt.Fprintln(out, "per instruction, over the run:")
	tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "responses\tmean score\terror rate\tskipped\tprompts\tties\tpairs\t\tinstruction")
	for _, id := range ids {
		t := totals[id]
		mean, errRate, skipped := 0.0, 0.0, 0.0
		if t.Responses > 0 {
			mean = t.ScoreSum / float64(t.Responses)
		}
		if n := t.Evals.total(); n > 0 {
			errRate = float64(t.Evals.errors()+t.Evals.Timeouts) / float64(n)
			skipped = float64(t.Evals.Skipped) / float64(n)
		}
		fmt.Fprintf(tw, "%d\t%.3f\t%.1f%%\t%.1f%%\t%d\t%d\t%d\t\t%s\n", t.Responses, mean, 100*errRate, 100*skipped, t.Prompts, t.Ties, t.Pairs,
			preview(cmp.Or(text(id), id), 60))
	}
	_ = tw.Flush()
}

// clone copies the counts, maps included.
func (c evalCounts) clone() evalCounts {
	c.Errors = maps.Clone(c.Errors)
	return c
}

// clone copies a record state deeply: the committed copy must not move with the live one.
func (s RecordState) clone() RecordState {
	s.Open.Evals = s.Open.Evals.clone()
	if s.Open.PerInstr != nil {
		per := make(map[string]*evalCounts, len(s.Open.PerInstr))
		for k, v := range s.Open.PerInstr {
			c := v.clone()
			per[k] = &c
		}
		s.Open.PerInstr = per
	}
	if s.Instructions != nil {
		ins := make(map[string]*instrTotals, len(s.Instructions))
		for k, v := range s.Instructions {
			c := *v
			c.Evals = v.Evals.clone()
			ins[k] = &c
		}
		s.Instructions = ins
	}
	return s
}
