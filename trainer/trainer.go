// Package trainer applies DPO (and SFT) updates to a model from model/ with a gorgonia graph
// of the same forward pass the inference path runs.
//
// A step takes a set of preference pairs, splits them into micro-batches (gradient
// accumulation), computes the frozen reference's log-probs once per pair with a forward-only
// copy of the graph (cached on the Pair, and in offline checkpoints), the policy's log-probs and
// gradients with the graph, the loss with DPOLoss (TRL's dpo_loss), then clips and applies one
// optimiser step to the float32 master weights in place. The graph's log-probs are the ones
// model.Model.LogProbs computes (graph_test.go checks they agree).
//
// Build with -tags openblas (cgo, Debian libopenblas-dev) for OpenBLAS matrix products;
// without it gonum's pure-Go BLAS runs, several times slower.
package trainer

import (
	"errors"
	"fmt"
	"log/slog"
	"math"
	"slices"
	"sync"
	"time"

	"gorgonia.org/tensor"

	"github.com/autoif/autoif/model"
)

// Options configures a Trainer. Start from DefaultOptions.
type Options struct {
	Loss  LossOptions
	Optim OptimOptions
	// BatchSize is the number of pairs (SFT: examples) per micro-batch; a step's pairs are
	// split into ceil(n/BatchSize) micro-batches whose gradients add up (accumulation). A
	// micro-batch whose activations would not fit ActivationBudget is split further: the
	// gradients are the same, the memory that of the smaller micro-batch.
	BatchSize int
	// ActivationBudget bounds the bytes of one micro-batch's activations (estimated from the
	// model's shape and the step's longest pair); 0 means DefaultActivationBudget.
	ActivationBudget int64
	// GradCheckpoint recomputes each decoder layer's forward in the backward instead of
	// keeping its internals: a layer keeps only its input, for about a quarter more compute.
	GradCheckpoint bool
	// MaxLen bounds prompt+response tokens; longer pairs are skipped and counted. Default:
	// the model's max_position_embeddings.
	MaxLen int
	// Reference is the frozen reference policy; nil means a copy of the starting policy (with
	// LoRA: the base with the adapter off, read from the base itself). The trainer keeps its
	// own copy (BF16 where exact, see frozenWeights), not this one.
	Reference *model.Weights
	// LoRA, when set, trains a LoRA adapter (PEFT's rule and layout, model.Adapter) on the
	// projections it targets instead of the policy: the policy's weights stay frozen, as
	// stored (model.LoadWeights keeps a BF16 checkpoint in BF16), only the adapter has
	// gradients and optimiser state, and checkpoints hold the adapter. nil: full fine-tuning.
	LoRA *model.LoRAConfig
	// Seed draws a fresh LoRA adapter's A matrices and its dropout masks.
	Seed uint64
	// Logger receives skip warnings; nil means slog.Default().
	Logger *slog.Logger
}

// DefaultActivationBudget is the activation memory a micro-batch may take by default.
const DefaultActivationBudget = 1536 << 20

// DefaultOptions: sigmoid DPO with β 0.1, AdamW at a constant 1e-6, gradients clipped to
// norm 1, micro-batches of 4 pairs.
func DefaultOptions() Options {
	return Options{
		Loss:      LossOptions{Type: LossSigmoid, Beta: 0.1},
		Optim:     OptimOptions{Name: "adamw", LR: 1e-6, MaxGradNorm: 1, Schedule: "constant"},
		BatchSize: 4,
	}
}

// Pair is one preference pair in token ids.
type Pair struct {
	ID                       string
	Prompt, Chosen, Rejected []int
	// RefChosen and RefRejected are the reference policy's summed log-probs, filled on first
	// use (HasRef) so later epochs do not recompute them.
	RefChosen, RefRejected float64
	HasRef                 bool
	// PolicyVersion sampled the responses (online pairs), for policy/lag.
	PolicyVersion int64
}

// Example is one SFT example: the loss is the NLL of Response given Prompt.
type Example struct {
	ID       string
	Prompt   []int
	Response []int
}

// Metrics are one step's figures, named as TRL logs them (see Map).
type Metrics struct {
	Step                                                     int
	Loss                                                     float64
	RewardsChosen, RewardsRejected, RewardsMargins, Accuracy float64
	LogpsChosen, LogpsRejected                               float64
	GradNorm, LR                                             float64
	// Pairs counts the pairs (SFT: examples) the step used; Tokens their tokens.
	Pairs, Tokens int
	// SFT marks an SFT step: no rewards, LogpsChosen is the responses' mean log-prob.
	SFT bool
	// Skipped counts, by reason, the inputs this step left out.
	Skipped map[string]int
	// StepSeconds is the step's compute time: reference forward, policy forward and
	// backward, optimiser update.
	StepSeconds float64
}

// Map returns the metrics under their usual names (TRL's for DPO).
func (m Metrics) Map() map[string]float64 {
	out := map[string]float64{
		"loss": m.Loss, "grad_norm": m.GradNorm, "learning_rate": m.LR, "step": float64(m.Step),
		"num_tokens": float64(m.Tokens), "step_seconds": m.StepSeconds,
	}
	if m.SFT {
		out["logps/response"] = m.LogpsChosen
	} else {
		out["rewards/chosen"], out["rewards/rejected"] = m.RewardsChosen, m.RewardsRejected
		out["rewards/margins"], out["rewards/accuracies"] = m.RewardsMargins, m.Accuracy
		out["logps/chosen"], out["logps/rejected"] = m.LogpsChosen, m.LogpsRejected
	}
	for k, v := range m.Skipped {
		out["skipped/"+k] = float64(v)
	}
	return out
}

// Skip reasons.
const (
	SkipEmptyPrompt   = "empty_prompt"
	SkipEmptyResponse = "empty_response"
	SkipIdentical     = "chosen_equals_rejected"
	SkipTooLong       = "too_long"
	SkipBadToken      = "token_out_of_vocab"
	// SkipStale: sampled by a policy more versions behind than the online trainer's bound.
	SkipStale = "stale"
)

// Trainer owns the policy's master weights and the optimiser state. It is not safe for
// concurrent use (neither is gorgonia's graph construction).
type Trainer struct {
	opts   Options
	Policy *model.Weights
	// ref is the reference's values; with LoRA and no other reference it is base.
	ref *frozenWeights
	// With LoRA: adapter is what trains (params are its tensors), base the policy's frozen
	// values, refAdapter the adapter snapshot a refreshed reference carries (nil: the base
	// alone), dropSeed the dropout seed of the next micro-batch and micro the micro-batches
	// of the step so far.
	adapter, refAdapter *model.Adapter
	base                *frozenWeights
	dropSeed            uint64
	micro               uint64
	params              []*model.Tensor
	grads               [][]float32
	opt                 *optimizer
	graphs              []*graph // small caches, most recent last
	refGraphs           []*graph
	// arena holds the policy graphs' activations, refArena the reference graphs' (they run
	// concurrently, each graph of a kind one at a time).
	arena, refArena *arena
	// refSeconds is the last step's reference forward, which overlaps the policy's.
	refSeconds float64
	log        *slog.Logger
	// Skipped counts every input left out since the start, by reason.
	Skipped map[string]int
}

// New prepares a trainer that updates policy in place.
func New(policy *model.Weights, opts Options) (*Trainer, error) {
	opts.Loss = opts.Loss.withDefaults()
	opts.Optim = opts.Optim.withDefaults()
	if err := opts.Loss.validate(); err != nil {
		return nil, fmt.Errorf("trainer options: %w", err)
	}
	if err := opts.Optim.validate(); err != nil {
		return nil, fmt.Errorf("trainer options: %w", err)
	}
	if opts.BatchSize <= 0 {
		opts.BatchSize = 4
	}
	if opts.MaxLen <= 0 {
		opts.MaxLen = policy.Config.MaxPositionEmbeddings
	}
	if opts.ActivationBudget <= 0 {
		opts.ActivationBudget = DefaultActivationBudget
	}
	var adapter *model.Adapter
	var base *frozenWeights
	params := policy.Tensors()
	if opts.LoRA != nil {
		a, err := model.NewAdapter(policy.Config, *opts.LoRA, opts.Seed)
		if err != nil {
			return nil, fmt.Errorf("trainer options: %w", err)
		}
		adapter, base, params = a, viewFrozen(policy), a.Tensors()
	} else {
		for _, p := range params {
			if h, _ := p.Half(); h != nil {
				return nil, fmt.Errorf("trainer options: full fine-tuning updates float32 weights, and %s is half-precision (load the policy with model.Load, or train a LoRA adapter)", p.Name)
			}
		}
	}
	var ref *frozenWeights
	switch {
	case opts.Reference != nil:
		ref = newFrozen(opts.Reference)
		if err := ref.fits(policy, "the policy"); err != nil {
			return nil, fmt.Errorf("trainer options: reference: %w", err)
		}
		opts.Reference = nil // the trainer's copy is ref; the caller's may go
	case base != nil:
		ref = base // the same graph code over the same values, without the adapter: no copy
	default:
		ref = newFrozen(policy)
	}
	t := &Trainer{opts: opts, Policy: policy, ref: ref, params: params, log: opts.Logger, Skipped: map[string]int{},
		arena: newArena(), refArena: newArena(), adapter: adapter, base: base}
	if t.log == nil {
		t.log = slog.Default()
	}
	t.log.Debug("reference policy", "mb", ref.bytes()>>20)
	t.grads = make([][]float32, len(t.params))
	for i, p := range t.params {
		t.grads[i] = make([]float32, len(p.Data))
	}
	t.opt = newOptimizer(opts.Optim, t.params)
	return t, nil
}

// Close releases the trainer's compiled graphs now rather than when the collector gets to
// them (see graph.release): their activations, and through their ops the weights, are then
// garbage at the next collection. The trainer must not be used after.
func (t *Trainer) Close() {
	for _, g := range t.graphs {
		g.release()
	}
	t.graphs = nil
	t.dropReferenceGraphs()
}

// Adapter is the LoRA adapter being trained (updated in place by every step), nil without
// LoRA.
func (t *Trainer) Adapter() *model.Adapter { return t.adapter }

// StepCount is the number of optimiser steps taken (restored on resume).
func (t *Trainer) StepCount() int { return t.opt.step }

// Options returns the effective options.
func (t *Trainer) Options() Options { return t.opts }

// check returns the skip reason for a pair, or "".
func (t *Trainer) check(p *Pair) string {
	v := t.Policy.Config.VocabSize
	switch {
	case len(p.Prompt) == 0:
		return SkipEmptyPrompt
	case len(p.Chosen) == 0 || len(p.Rejected) == 0:
		return SkipEmptyResponse
	case slices.Equal(p.Chosen, p.Rejected):
		return SkipIdentical
	case len(p.Prompt)+max(len(p.Chosen), len(p.Rejected)) > t.opts.MaxLen:
		return SkipTooLong
	}
	for _, s := range [][]int{p.Prompt, p.Chosen, p.Rejected} {
		for _, id := range s {
			if id < 0 || id >= v {
				return SkipBadToken
			}
		}
	}
	return ""
}

func (t *Trainer) skip(m *Metrics, reason, id string) {
	t.Skipped[reason]++
	if m.Skipped == nil {
		m.Skipped = map[string]int{}
	}
	m.Skipped[reason]++
	t.log.Warn("skipping input", "reason", reason, "id", id, "step", t.opt.step+1)
}

// ErrNonFinite is wrapped by Step's error when a loss or gradient is NaN or infinite; the
// weights are left as they were before the step.
var ErrNonFinite = errors.New("non-finite loss")

// Step applies one DPO optimiser step over pairs (skipping, and counting, bad ones). A step
// whose pairs are all skipped changes nothing and returns Metrics with Pairs 0.
func (t *Trainer) Step(pairs []*Pair) (m Metrics, err error) {
	start := time.Now()
	defer func() { m.StepSeconds = time.Since(start).Seconds() }()
	m = Metrics{Step: t.opt.step + 1}
	var ok []*Pair
	for _, p := range pairs {
		if r := t.check(p); r != "" {
			t.skip(&m, r, p.ID)
			continue
		}
		ok = append(ok, p)
	}
	if len(ok) == 0 {
		m.Step--
		return m, nil
	}
	// The frozen reference's forward needs nothing from the policy's, so it runs alongside
	// it: on a few cores each fills the other's serial stretches (element-wise ops, gradient
	// bookkeeping, uneven GEMM halves). The loss waits for it; every return path waits too,
	// so no reference work outlives the step.
	// With one thread there is nothing to fill, and it would take a second core's time.
	refDone := make(chan error, 1)
	refForward := func() {
		t0 := time.Now()
		err := t.refLogProbs(ok)
		t.refSeconds = time.Since(t0).Seconds()
		refDone <- err
	}
	if threads() > 1 {
		go refForward()
	} else {
		refForward()
	}
	waitRef := sync.OnceValue(func() error { return <-refDone })
	defer waitRef()
	t.zeroGrads()
	n := len(ok)
	B := t.pairMicroBatch(ok)
	lo := t.opts.Loss
	for start := 0; start < n; start += B {
		mb := ok[start:min(start+B, n)]
		b := len(mb)
		seqs := make([]Seq, 0, 2*b)
		weights := make([]float64, 2*B)
		chosenLen := make([]int, b)
		for i, p := range mb {
			seqs = append(seqs, Seq{p.Prompt, p.Chosen})
			chosenLen[i] = len(p.Chosen)
			weights[i], weights[B+i] = 1, 1
			if lo.LengthNormalize {
				weights[i], weights[B+i] = 1/float64(len(p.Chosen)), 1/float64(len(p.Rejected))
			}
			m.Tokens += 2*len(p.Prompt) + len(p.Chosen) + len(p.Rejected)
		}
		for i := b; i < B; i++ {
			seqs = append(seqs, Seq{}) // keeps chosen at [0,B) and rejected at [B,2B)
		}
		for _, p := range mb {
			seqs = append(seqs, Seq{p.Prompt, p.Rejected})
		}
		var out DPOOutput
		loss := func(lp []float64) (float64, []float64) {
			if waitRef() != nil {
				return math.NaN(), make([]float64, len(lp)) // the step returns the reference error below
			}
			refC, refR := make([]float64, b), make([]float64, b)
			for i, p := range mb {
				refC[i], refR[i] = p.RefChosen, p.RefRejected
				if lo.LengthNormalize {
					refC[i] /= float64(len(p.Chosen))
					refR[i] /= float64(len(p.Rejected))
				}
			}
			out = DPOLoss(lo, lp[:b], lp[B:B+b], refC, refR, chosenLen, n)
			d := make([]float64, len(lp))
			var sum float64
			for i := range b {
				sum += out.Losses[i]
				d[i], d[B+i] = out.DChosen[i], out.DRejected[i]
			}
			return sum / float64(n), d
		}
		logps, _, err := t.forwardBackward(seqs, 2*B, weights, loss)
		if rerr := waitRef(); rerr != nil {
			return m, rerr
		}
		if err != nil {
			return m, fmt.Errorf("step %d: %w", m.Step, err)
		}
		for i, p := range mb {
			if !finite(out.Losses[i]) || !finite(logps[i]) || !finite(logps[B+i]) {
				return m, fmt.Errorf("step %d: pair %s: loss %g (policy log-probs %g, %g): %w", m.Step, p.ID, out.Losses[i], logps[i], logps[B+i], ErrNonFinite)
			}
			m.Loss += out.Losses[i] / float64(n)
			m.RewardsChosen += out.ChosenRewards[i] / float64(n)
			m.RewardsRejected += out.RejectedRewards[i] / float64(n)
			if out.ChosenRewards[i] > out.RejectedRewards[i] {
				m.Accuracy += 1 / float64(n)
			}
			m.LogpsChosen += logps[i] / float64(n)
			m.LogpsRejected += logps[B+i] / float64(n)
		}
	}
	m.RewardsMargins = m.RewardsChosen - m.RewardsRejected
	m.Pairs = n
	return m, t.apply(&m, ok)
}

// StepSFT applies one optimiser step of mean token NLL over examples.
func (t *Trainer) StepSFT(examples []*Example) (m Metrics, err error) {
	start := time.Now()
	defer func() { m.StepSeconds = time.Since(start).Seconds() }()
	m = Metrics{Step: t.opt.step + 1, SFT: true}
	var ok []*Example
	total := 0
	for _, e := range examples {
		var reason string
		switch {
		case len(e.Prompt) == 0:
			reason = SkipEmptyPrompt
		case len(e.Response) == 0:
			reason = SkipEmptyResponse
		case len(e.Prompt)+len(e.Response) > t.opts.MaxLen:
			reason = SkipTooLong
		case slices.ContainsFunc(e.Prompt, t.badToken) || slices.ContainsFunc(e.Response, t.badToken):
			reason = SkipBadToken
		}
		if reason != "" {
			t.skip(&m, reason, e.ID)
			continue
		}
		ok = append(ok, e)
		total += len(e.Response)
	}
	if len(ok) == 0 {
		m.Step--
		return m, nil
	}
	t.zeroGrads()
	longest := 0
	for _, e := range ok {
		longest = max(longest, len(e.Prompt)+len(e.Response))
	}
	B := t.microBatch(1, longest)
	for start := 0; start < len(ok); start += B {
		mb := ok[start:min(start+B, len(ok))]
		seqs := make([]Seq, len(mb))
		weights := make([]float64, B)
		for i, e := range mb {
			seqs[i] = Seq{e.Prompt, e.Response}
			weights[i] = 1
			m.Tokens += len(e.Prompt) + len(e.Response)
		}
		loss := func(lp []float64) (float64, []float64) {
			l, d := SFTLoss(lp[:len(mb)], total)
			return l, append(d, make([]float64, len(lp)-len(mb))...)
		}
		logps, l, err := t.forwardBackward(seqs, B, weights, loss)
		if err != nil {
			return m, fmt.Errorf("step %d: %w", m.Step, err)
		}
		if !finite(l) {
			return m, fmt.Errorf("step %d: examples %s..: loss %g: %w", m.Step, mb[0].ID, l, ErrNonFinite)
		}
		m.Loss += l
		for i := range mb {
			m.LogpsChosen += logps[i] / float64(len(ok))
		}
	}
	m.Pairs = len(ok)
	return m, t.apply(&m, nil)
}

func (t *Trainer) badToken(id int) bool { return id < 0 || id >= t.Policy.Config.VocabSize }

// apply clips and takes the optimiser step, refusing a non-finite gradient.
func (t *Trainer) apply(m *Metrics, pairs []*Pair) error {
	m.GradNorm = gradNorm(t.grads)
	if !finite(m.GradNorm) {
		ids := make([]string, len(pairs))
		for i, p := range pairs {
			ids[i] = p.ID
		}
		return fmt.Errorf("step %d: gradient norm %g (pairs %v): %w", m.Step, m.GradNorm, ids, ErrNonFinite)
	}
	clipGrads(t.grads, m.GradNorm, t.opts.Optim.MaxGradNorm)
	m.LR = t.opts.Optim.LRAt(t.opt.step)
	t.opt.apply(t.grads, m.LR)
	return nil
}

// forwardBackward runs one micro-batch through a (cached) graph of S sequences, adding the
// gradients into t.grads.
func (t *Trainer) forwardBackward(seqs []Seq, S int, weights []float64, loss lossFunc) ([]float64, float64, error) {
	T, M := graphShape(seqs)
	T, M = roundUp(T, 16), roundUp(M, 32)
	gr, err := cachedGraph(&t.graphs, S, T, M, func() (*graph, error) {
		return newGraph(t.Policy, S, T, M, graphOptions{dt: tensor.Float32, withGrad: true, checkpoint: t.opts.GradCheckpoint, arena: t.arena,
			vals: t.base, adapter: t.adapter, dropSeed: &t.dropSeed})
	})
	if err != nil {
		return nil, 0, err
	}
	p, err := pack(seqs, weights, S, T, M, t.Policy.Config.VocabSize)
	if err != nil {
		return nil, 0, err
	}
	// Fresh dropout masks for every micro-batch, the same ones again for the same step of a
	// resumed run.
	t.dropSeed = mix64(t.opts.Seed ^ mix64(uint64(t.opt.step)<<20|t.micro))
	t.micro++
	return gr.run(p, loss, t.grads)
}

// cachedGraph returns a compiled graph for the shape from cache, building it on a miss. A few
// shapes are kept: each holds its activations' memory.
func cachedGraph(cache *[]*graph, S, T, M int, build func() (*graph, error)) (*graph, error) {
	for i, g := range *cache {
		if g.S == S && g.T == T && g.M == M {
			*cache = append(append((*cache)[:i:i], (*cache)[i+1:]...), g)
			return g, nil
		}
	}
	g, err := build()
	if err != nil {
		return nil, err
	}
	if len(*cache) >= 3 {
		(*cache)[0].release()
		*cache = (*cache)[1:]
	}
	*cache = append(*cache, g)
	return g, nil
}

// RefreshReference makes the reference a copy of the policy as it is now (a reference
// refreshed every N versions, as some online DPO recipes do, instead of AutoIF's frozen
// starting policy). Log-probs already computed for pairs against the old reference are kept.
func (t *Trainer) RefreshReference() error {
	if t.adapter != nil {
		// The base is frozen: the policy now is the base plus a snapshot of the adapter.
		t.refAdapter = t.adapter.Clone()
		t.dropReferenceGraphs()
		return nil
	}
	if err := t.ref.fits(t.Policy, "refresh reference: the policy"); err != nil {
		return err
	}
	for i, p := range t.params {
		t.ref.set(i, p.Data)
	}
	t.dropReferenceGraphs()
	return nil
}

// dropReferenceGraphs forgets the reference's graphs, whose params hold the slices the
// reference's values were in.
func (t *Trainer) dropReferenceGraphs() {
	for _, g := range t.refGraphs {
		g.release()
	}
	t.refGraphs = nil
}

// refLogProbs fills the reference log-probs of pairs that lack them with a forward-only graph
// of the frozen reference: the policy's own graph code, so at step 0 policy and reference agree
// exactly, in micro-batches of the policy's shape.
func (t *Trainer) refLogProbs(pairs []*Pair) error {
	var todo []*Pair
	for _, p := range pairs {
		if !p.HasRef {
			todo = append(todo, p)
		}
	}
	B := t.pairMicroBatch(pairs)
	for lo := 0; lo < len(todo); lo += B {
		part := todo[lo:min(lo+B, len(todo))]
		seqs := make([]Seq, 2*B)
		weights := make([]float64, 2*B)
		for i, p := range part {
			seqs[i], seqs[B+i] = Seq{p.Prompt, p.Chosen}, Seq{p.Prompt, p.Rejected}
			weights[i], weights[B+i] = 1, 1
		}
		T, M := graphShape(seqs)
		T, M = roundUp(T, 16), roundUp(M, 32)
		gr, err := cachedGraph(&t.refGraphs, 2*B, T, M, func() (*graph, error) {
			return newGraph(t.Policy, 2*B, T, M, graphOptions{dt: tensor.Float32, vals: t.ref, arena: t.refArena, adapter: t.refAdapter})
		})
		if err != nil {
			return fmt.Errorf("reference log-probs: %w", err)
		}
		pk, err := pack(seqs, weights, 2*B, T, M, t.Policy.Config.VocabSize)
		if err != nil {
			return fmt.Errorf("reference log-probs: %w", err)
		}
		lps, _, err := gr.run(pk, func(lp []float64) (float64, []float64) { return 0, make([]float64, len(lp)) }, nil)
		if err != nil {
			return fmt.Errorf("reference log-probs: %w", err)
		}
		for i, p := range part {
			p.RefChosen, p.RefRejected = lps[i], lps[B+i]
			if !finite(p.RefChosen) || !finite(p.RefRejected) {
				return fmt.Errorf("pair %s: reference log-probs %g, %g: %w", p.ID, p.RefChosen, p.RefRejected, ErrNonFinite)
			}
			p.HasRef = true
		}
	}
	return nil
}

// pairMicroBatch is the micro-batch size for a step over pairs (see microBatch).
func (t *Trainer) pairMicroBatch(pairs []*Pair) int {
	longest := 0
	for _, p := range pairs {
		longest = max(longest, len(p.Prompt)+max(len(p.Chosen), len(p.Rejected)))
	}
	return t.microBatch(2, longest)
}

// microBatch is the items per micro-batch: BatchSize, or fewer when that many items of
// seqsPerItem sequences of up to longest tokens would keep more activations than
// ActivationBudget.
func (t *Trainer) microBatch(seqsPerItem, longest int) int {
	T := roundUp(roundUp(longest-1, 8), 16) // graphShape's and forwardBackward's padding
	per := int64(seqsPerItem) * int64(T) * activationBytesPerPosition(t.Policy.Config, T, t.opts.GradCheckpoint)
	return int(min(int64(t.opts.BatchSize), max(1, t.opts.ActivationBudget/per)))
}

// activationBytesPerPosition estimates what a float32 policy graph keeps per position of a
// T-position sequence: per layer its output and its input's gradient, and without
// checkpointing its internals (layerInternals); plus the scratch that one layer's forward
// and backward share.
func activationBytesPerPosition(c *model.Config, T int, checkpoint bool) int64 {
	D, I, H := c.HiddenSize, c.IntermediateSize, c.NumAttentionHeads
	q, kv := H*c.HeadDim, c.NumKeyValueHeads*c.HeadDim
	internal := 3*D + 2*q + 2*kv + 2*I + H*T
	perLayer := 2 * D
	if !checkpoint {
		perLayer += internal
	}
	shared := internal + 2*I + (3*I + 3*D + 2*q + 2*kv) // + σ and the activation, + backward temporaries
	return 4 * int64(c.NumHiddenLayers*perLayer+shared)
}

func (t *Trainer) zeroGrads() {
	t.micro = 0
	for _, g := range t.grads {
		parallelBlocks(len(g), func(_, i0, i1 int) { clear(g[i0:i1]) })
	}
}

func finite(x float64) bool { return !math.IsNaN(x) && !math.IsInf(x, 0) }
