package orchestrator

import (
	"cmp"
	"fmt"
	"io"
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/autoif/autoif/proto"
)

// Component is the MetricEvent.Component of the orchestrator's own metrics.
const Component = "orchestrator"

// Metric names the orchestrator publishes once per step (component "orchestrator"), besides
// the field's standard reward/mean, policy/version and policy/lag.
const (
	MetricRewardMean    = "reward/mean"    // mean score of the rollouts that arrived during the step
	MetricPolicyVersion = "policy/version" // the version whose publication ended the step
	MetricPolicyLag     = "policy/lag"     // mean versions behind current of the step's pairs, on arrival
	MetricPolicyLagMax  = "policy/lag_max" // the largest of those
	MetricStalePairs    = "pairs/stale"    // pairs already past the trainer's lag bound on arrival (Config.TrainerMaxLag)
	MetricPairs         = "pairs/count"    // pairs that arrived during the step
	MetricPairsPerSec   = "pairs/s"        // MetricPairs over the step's duration
	MetricRollouts      = "rollouts/count" // scored responses that arrived during the step
	MetricStepSeconds   = "step/seconds"   // the step's wall time
	MetricInFlight      = "prompts/in_flight"
	MetricEnqueued      = "prompts/enqueued" // total so far
)

// trainerNames are the trainer figures a step line shows when some component reports them:
// the DPO metrics, its compute time per step and the share of its time spent waiting for pairs.
var trainerNames = map[string]bool{
	"loss": true, "rewards/chosen": true, "rewards/rejected": true, "rewards/margins": true,
	"rewards/accuracies": true, "logps/chosen": true, "logps/rejected": true,
	"step_seconds": true, "idle_fraction": true,
}

// stepAgg accumulates one step: the interval between two policy publications.
type stepAgg struct {
	Step      int64     `json:"step"`
	Start     time.Time `json:"start"`
	Rollouts  int64     `json:"rollouts"`
	RewardSum float64   `json:"reward_sum"`
	Pairs     int64     `json:"pairs"`
	LagSum    int64     `json:"lag_sum"`
	LagMax    int64     `json:"lag_max"`
	Stale     int64     `json:"stale"`
	Samples   int       `json:"samples"`
	// Evals are the function outcomes of the step's rollouts, overall and per instruction.
	Evals    evalCounts             `json:"evals"`
	PerInstr map[string]*evalCounts `json:"per_instruction,omitempty"`
}

// closedStep is a finished step waiting for the trainer's figures before its line prints.
type closedStep struct {
	agg      stepAgg
	version  int64
	end      time.Time
	inFlight int
	enqueued int64
}

// recorder turns the run's streams into per-step aggregates, metric rows and sample rows.
// Only the orchestrator's loop goroutine touches it.
type recorder struct {
	st RecordState
	k  int
	// kMismatch is a response count per prompt other than k, seen once (0: none seen).
	kMismatch int
	maxLag    int64
	perStep   int
	out       io.Writer
	grace     time.Duration
	prompts   map[string]*proto.PromptUnit
	metrics   []MetricRow
	samples   []SampleRow
	sampleAt  map[sampleKey]int

	trainer map[int64]map[string]float64
	pending []closedStep
	dirty   bool
	// lastLine is when the last line was printed.
	lastLine time.Time
	// A worker publishes a step's pairs and its rollouts to two streams, which store them
	// independently: scored lists the (version, prompt)s whose rollouts arrived this step,
	// awaiting those whose pairs arrived first, so a step does not close between the two.
	scored   map[sampleKey]bool
	awaiting map[sampleKey]bool
	// idle follows prompts that made no pair; warnings go to out.
	idle *idleWatch
}

type sampleKey struct {
	version int64
	prompt  string
}

func newRecorder(st RecordState, cfg Config, set *PromptSet, out io.Writer, grace time.Duration) *recorder {
	r := &recorder{
		st: st, k: cfg.K, maxLag: cfg.TrainerMaxLag(), perStep: cfg.SamplesPerStep, out: out, grace: grace,
		prompts: map[string]*proto.PromptUnit{}, sampleAt: map[sampleKey]int{}, trainer: map[int64]map[string]float64{},
		scored: map[sampleKey]bool{}, awaiting: map[sampleKey]bool{},
		idle: newIdleWatch(cfg.WarnIdlePrompts, cfg.MaxIdlePrompts),
	}
	if r.st.Instructions == nil {
		r.st.Instructions = map[string]*instrTotals{}
	}
	for i := range set.Units {
		r.prompts[set.Units[i].PromptID] = &set.Units[i]
	}
	return r
}

// restore loads the rows the last process flushed, dropping those beyond the committed
// stream positions: they will be read again.
func (r *recorder) restore(metrics []MetricRow, samples []SampleRow) {
	for _, m := range metrics {
		if m.Seq < r.st.MetricsNext {
			r.metrics = append(r.metrics, m)
			r.noteTrainer(m.Component, m.Step, m.Name, m.Value)
		}
	}
	for _, s := range samples {
		if s.RolloutsSeq >= r.st.RolloutsNext {
			s.RolloutsSeq, s.Responses, s.Scores = 0, nil, nil
		}
		if s.PairsSeq >= r.st.PairsNext {
			s.PairsSeq, s.Chosen, s.Rejected = 0, nil, nil
		}
		if s.RolloutsSeq == 0 && s.PairsSeq == 0 {
			continue
		}
		r.sampleAt[sampleKey{s.PolicyVersion, s.PromptID}] = len(r.samples)
		r.samples = append(r.samples, s)
	}
}

func headerVersion(h nats.Header) int64 {
	if v, err := strconv.ParseInt(h.Get(proto.HeaderPolicyVersion), 10, 64); err == nil {
		return v
	}
	return -1
}

func (r *recorder) noteTrainer(component string, step int64, name string, v float64) {
	if !trainerNames[name] || component == "rollout" {
		return
	}
	m := r.trainer[step]
	if m == nil {
		m = map[string]float64{}
		r.trainer[step] = m
	}
	m[name] = v
}

func (r *recorder) onMetrics(seq uint64, h nats.Header, rows []proto.MetricEvent) {
	if seq < r.st.MetricsNext {
		return
	}
	v := headerVersion(h)
	for _, e := range rows {
		r.metrics = append(r.metrics, MetricRow{Time: e.Time, Component: strings.Clone(e.Component), Step: e.Step,
			Name: strings.Clone(e.Name), Value: e.Value, Label: strings.Clone(e.Label), PolicyVersion: v, Seq: seq})
		r.noteTrainer(e.Component, e.Step, e.Name, e.Value)
		if e.Name == rolloutSkippedPrompts && e.Label == "" && e.Value >= 1 {
			r.warn(r.idle.onSkipped(int(e.Value)))
		}
	}
	r.st.MetricsNext = seq + 1
	r.dirty = true
}

func (r *recorder) sample(version int64, promptID string) *SampleRow {
	k := sampleKey{version, promptID}
	if i, ok := r.sampleAt[k]; ok {
		return &r.samples[i]
	}
	if r.st.Open.Samples >= r.perStep {
		return nil
	}
	r.st.Open.Samples++
	row := SampleRow{Step: r.st.Open.Step, PolicyVersion: version, PromptID: strings.Clone(promptID)}
	if u := r.prompts[promptID]; u != nil {
		row.InstructionID, row.Prompt = u.InstructionID, u.Prompt
	}
	r.sampleAt[k] = len(r.samples)
	r.samples = append(r.samples, row)
	return &r.samples[len(r.samples)-1]
}

func (r *recorder) onRollouts(seq uint64, rows []proto.ScoredRollout, now time.Time) {
	if seq < r.st.RolloutsNext {
		return
	}
	r.touch(now)
	for i := range rows {
		ro := &rows[i]
		r.st.Open.Rollouts++
		r.st.Open.RewardSum += ro.Score
		r.st.Rollouts++
		k := sampleKey{ro.PolicyVersion, ro.PromptID}
		if !r.scored[k] {
			r.scored[sampleKey{ro.PolicyVersion, strings.Clone(ro.PromptID)}] = true
			delete(r.awaiting, k)
		}
		if s := r.sample(ro.PolicyVersion, ro.PromptID); s != nil && s.RolloutsSeq != seq {
			if s.RolloutsSeq != 0 {
				// The same prompt sampled again by the same version: keep the newest.
				s.Responses, s.Scores, s.Verdicts = nil, nil, nil
			}
			s.RolloutsSeq = seq
			n := 0
			for j := i; j < len(rows); j++ {
				if rows[j].PromptID == ro.PromptID && rows[j].PolicyVersion == ro.PolicyVersion {
					n++
				}
			}
			if n != r.k && r.kMismatch == 0 {
				r.kMismatch = n
			}
			for j := i; j < len(rows); j++ {
				if rows[j].PromptID == ro.PromptID && rows[j].PolicyVersion == ro.PolicyVersion {
					s.Responses = append(s.Responses, strings.Clone(rows[j].Response))
					s.Scores = append(s.Scores, rows[j].Score)
					ro := &rows[j]
					s.Verdicts = append(s.Verdicts, Verdict{Passed: ro.Passed, Failed: ro.Failed, Errors: ro.Errors,
						Timeouts: ro.Timeouts, Skipped: ro.Skipped, ErrorKinds: cloneStrings(ro.ErrorKinds)})
				}
			}
			if s.InstructionID == "" {
				s.InstructionID = strings.Clone(ro.InstructionID)
			}
		}
	}
	for _, g := range groupRollouts(rows) {
		r.onPrompt(g)
	}
	r.st.RolloutsNext = seq + 1
	r.dirty = true
}

// onPrompt accounts one prompt's scored responses: the step's and the instruction's function
// outcomes, and whether the prompt taught anything.
func (r *recorder) onPrompt(g promptGroup) {
	open := &r.st.Open
	if open.PerInstr == nil {
		open.PerInstr = map[string]*evalCounts{}
	}
	per := open.PerInstr[g.instruction]
	if per == nil {
		per = &evalCounts{}
		open.PerInstr[strings.Clone(g.instruction)] = per
	}
	t := r.st.Instructions[g.instruction]
	if t == nil {
		t = &instrTotals{}
		r.st.Instructions[strings.Clone(g.instruction)] = t
	}
	for _, ro := range g.rows {
		open.Evals.addRow(ro)
		per.addRow(ro)
		t.Evals.addRow(ro)
		t.Responses++
		t.ScoreSum += ro.Score
	}
	t.Prompts++
	t.Pairs += int64(g.rows[0].PromptPairs)
	if _, tie := g.tie(); tie {
		t.Ties++
	}
	text := ""
	if u := r.prompts[g.rows[0].PromptID]; u != nil {
		text = cmp.Or(u.Instruction, u.Prompt)
	}
	r.warn(r.idle.onPrompt(g, text))
}

// warn prints an idle warning, if any, where the step lines go.
func (r *recorder) warn(msg string) {
	if msg != "" {
		fmt.Fprintln(r.out, msg)
	}
}

// instructionText is an instruction's text, from the first prompt unit that has it.
func (r *recorder) instructionText(id string) string {
	for _, u := range r.prompts {
		if u.InstructionID == id {
			return cmp.Or(u.Instruction, u.Prompt)
		}
	}
	return ""
}

func (r *recorder) onPairs(seq uint64, rows []proto.Pair, now time.Time) {
	if seq < r.st.PairsNext {
		return
	}
	r.touch(now)
	for i := range rows {
		p := &rows[i]
		lag := max(r.st.Version-p.PolicyVersion, 0)
		r.st.Open.Pairs++
		r.st.Open.LagSum += lag
		r.st.Open.LagMax = max(r.st.Open.LagMax, lag)
		r.st.Pairs++
		if k := (sampleKey{p.PolicyVersion, p.PromptID}); !r.scored[k] {
			r.awaiting[sampleKey{p.PolicyVersion, strings.Clone(p.PromptID)}] = true
		}
		if p.PolicyVersion >= r.st.Version {
			// Only pairs of the current policy can make its successor in sync mode: a
			// worker that had not swapped yet sampled the rest with the old one.
			r.st.PairsSinceVersion++
		}
		if lag > r.maxLag {
			r.st.Open.Stale++
			r.st.StalePairs++
		}
		if s := r.sample(p.PolicyVersion, p.PromptID); s != nil {
			if s.PairsSeq != seq {
				s.PairsSeq, s.Chosen, s.Rejected = seq, nil, nil
			}
			s.Chosen = append(s.Chosen, strings.Clone(p.Chosen))
			s.Rejected = append(s.Rejected, strings.Clone(p.Rejected))
			if s.Prompt == "" {
				s.Prompt = strings.Clone(p.Prompt)
			}
		}
	}
	r.st.PairsNext = seq + 1
	r.dirty = true
}

func (r *recorder) touch(now time.Time) {
	if r.st.Open.Start.IsZero() {
		r.st.Open.Start = now
	}
}

// onVersion closes the step under way when the trainer publishes a newer version, and
// returns the orchestrator's metric events for it.
func (r *recorder) onVersion(v int64, now time.Time, inFlight int, enqueued int64) []proto.MetricEvent {
	if v <= r.st.Version {
		return nil
	}
	closed := r.st.Open
	if closed.Start.IsZero() {
		closed.Start = now
	}
	closed.Step = v
	r.st.Version = v
	r.st.PairsSinceVersion = 0
	clear(r.scored)
	r.st.Open = stepAgg{Step: v + 1, Start: now}
	r.dirty = true
	c := closedStep{agg: closed, version: v, end: now, inFlight: inFlight, enqueued: enqueued}
	r.pending = append(r.pending, c)
	return c.events()
}

func (c closedStep) seconds() float64 { return max(c.end.Sub(c.agg.Start).Seconds(), 1e-9) }

func (c closedStep) events() []proto.MetricEvent {
	a := c.agg
	ev := func(name string, v float64) proto.MetricEvent {
		return proto.MetricEvent{Time: c.end, Component: Component, Step: a.Step, Name: name, Value: v}
	}
	out := []proto.MetricEvent{
		ev(MetricPolicyVersion, float64(c.version)),
		ev(MetricPairs, float64(a.Pairs)),
		ev(MetricPairsPerSec, float64(a.Pairs)/c.seconds()),
		ev(MetricRollouts, float64(a.Rollouts)),
		ev(MetricStalePairs, float64(a.Stale)),
		ev(MetricStepSeconds, c.seconds()),
		ev(MetricInFlight, float64(c.inFlight)),
		ev(MetricEnqueued, float64(c.enqueued)),
	}
	if a.Rollouts > 0 {
		out = append(out, ev(MetricRewardMean, a.RewardSum/float64(a.Rollouts)))
	}
	if a.Pairs > 0 {
		out = append(out, ev(MetricPolicyLag, float64(a.LagSum)/float64(a.Pairs)), ev(MetricPolicyLagMax, float64(a.LagMax)))
	}
	labelled := func(name string, v float64, label string) proto.MetricEvent {
		e := ev(name, v)
		e.Label = label
		return e
	}
	out = append(out, a.Evals.events(labelled, "")...)
	for _, id := range slices.Sorted(maps.Keys(a.PerInstr)) {
		out = append(out, a.PerInstr[id].events(labelled, id)...)
	}
	return out
}

// printReady prints the lines of closed steps whose trainer figures are in, or that waited
// long enough for them (or all, with force).
func (r *recorder) printReady(now time.Time, force bool) {
	for len(r.pending) > 0 {
		c := r.pending[0]
		tm := r.trainer[c.agg.Step]
		_, hasLoss := tm["loss"]
		// Versions move because a trainer runs, so its figures are worth a short wait.
		if !force && !hasLoss && now.Sub(c.end) < r.grace {
			return
		}
		r.pending = r.pending[1:]
		fmt.Fprintln(r.out, stepLine(c, tm))
		r.lastLine = now
		delete(r.trainer, c.agg.Step-8)
	}
}

func stepLine(c closedStep, tm map[string]float64) string {
	a := c.agg
	var b strings.Builder
	fmt.Fprintf(&b, "step %-4d", a.Step)
	if a.Rollouts > 0 {
		fmt.Fprintf(&b, "  reward/mean %.3f", a.RewardSum/float64(a.Rollouts))
	} else {
		b.WriteString("  reward/mean   -  ")
	}
	fmt.Fprintf(&b, "  pairs/s %.2f  policy/version %d", float64(a.Pairs)/c.seconds(), c.version)
	if a.Pairs > 0 {
		fmt.Fprintf(&b, "  policy/lag %.2f", float64(a.LagSum)/float64(a.Pairs))
	}
	for _, k := range []string{"loss", "rewards/accuracies", "rewards/margins"} {
		if v, ok := tm[k]; ok {
			fmt.Fprintf(&b, "  %s %.4f", k, v)
		}
	}
	if v, ok := tm["step_seconds"]; ok {
		fmt.Fprintf(&b, "  train %.2fs", v)
		if idle, ok := tm["idle_fraction"]; ok {
			fmt.Fprintf(&b, " (idle %.0f%%)", 100*idle)
		}
	}
	fmt.Fprintf(&b, "  pairs %d", a.Pairs)
	if a.Stale > 0 {
		fmt.Fprintf(&b, " (%d stale)", a.Stale)
	}
	fmt.Fprintf(&b, "  in-flight %d  %.1fs", c.inFlight, c.seconds())
	if a.Evals.total() > 0 {
		fmt.Fprintf(&b, "  evals: %s", a.Evals)
	}
	return b.String()
}

// stepSamples are the sample rows recorded during a step, newest last.
func (r *recorder) stepSamples(step int64) []SampleRow {
	i := len(r.samples)
	for i > 0 && r.samples[i-1].Step >= step {
		i--
	}
	j := i
	for j < len(r.samples) && r.samples[j].Step == step {
		j++
	}
	return r.samples[i:j]
}

// cloneStrings copies strings that may point into a decoded message's buffer.
func cloneStrings(in []string) []string {
	if len(in) == 0 {
		return nil
	}
	out := make([]string, len(in))
	for i, v := range in {
		out[i] = strings.Clone(v)
	}
	return out
}
