package trainer

import (
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"syscall"
	"time"

	"gorgonia.org/tensor"

	"github.com/autoif/autoif/model"
)

// BenchOptions shape `autoif bench train`: DPO steps of PairsPerStep pairs, every prompt and
// response of fixed length, so Go and PyTorch run the very same work.
type BenchOptions struct {
	// Mode is what trains: BenchFull (every weight, AdamW state for each; the default) or
	// BenchLoRA (a LoRA adapter of LoRA's shape on the frozen base, AdamW state for it only).
	Mode string
	LoRA *model.LoRAConfig
	// GradCheckpoint and ActivationBudget are the trainer's (Options).
	GradCheckpoint   bool
	ActivationBudget int64
	PairsPerStep     int // default 8
	PromptLen        int // default 64
	ResponseLen      int // default 64
	Steps            int // timed steps (default 3), after one untimed warm-up step
	Seed             uint64
}

// Bench modes: BenchFull is full fine-tuning (float32 weights, gradients and AdamW state),
// BenchLoRA a LoRA adapter on the frozen base (load it with model.LoadWeights to keep a BF16
// checkpoint in BF16).
const (
	BenchFull = "full"
	BenchLoRA = "lora"
)

func (o *BenchOptions) defaults() {
	if o.Mode == "" {
		o.Mode = BenchFull
	}
	if o.PairsPerStep <= 0 {
		o.PairsPerStep = 8
	}
	if o.PromptLen <= 0 {
		o.PromptLen = 64
	}
	if o.ResponseLen <= 0 {
		o.ResponseLen = 64
	}
	if o.Steps <= 0 {
		o.Steps = 3
	}
}

// BenchResult is the best of the timed steps.
type BenchResult struct {
	StepSeconds float64 // whole step: reference forward, policy forward and backward, update
	RefSeconds  float64 // of which the reference forward
	// StepCPUSeconds is the process CPU time (all threads) of the fastest step: on a shared
	// machine, work per CPU-second moves less with other load than work per second.
	StepCPUSeconds float64
	PairsPerS      float64
	PairsPerCPUS   float64
	TokensPerS     float64 // prompt+response tokens of both sequences of each pair
	StepFLOPs      float64 // useful model FLOPs per step (see StepFLOPs)
	GFLOPs         float64
}

// BenchPairs draws the bench's pairs: prompt and responses of fixed lengths, token ids
// uniform over the vocabulary (the model is random anyway).
func BenchPairs(cfg *model.Config, o BenchOptions) []*Pair {
	o.defaults()
	rng := rand.New(rand.NewPCG(o.Seed, 17))
	toks := func(n int) []int {
		s := make([]int, n)
		for i := range s {
			s[i] = 3 + rng.IntN(cfg.VocabSize-3)
		}
		return s
	}
	pairs := make([]*Pair, o.PairsPerStep)
	for i := range pairs {
		pairs[i] = &Pair{ID: fmt.Sprint("bench-", i), Prompt: toks(o.PromptLen), Chosen: toks(o.ResponseLen), Rejected: toks(o.ResponseLen)}
	}
	return pairs
}

// StepFLOPs counts the matmul FLOPs of one DPO step that any implementation must do: for
// each of the 2·pairs sequences, a reference forward and a policy forward and backward, with
// causal attention over the real tokens and lm_head only at the scored positions. Full
// fine-tuning's backward is twice the forward (input and weight gradients); with lora (the
// adapter's own FLOPs, r/out of the rest, left out) the frozen weights need only their input
// gradients, once the forward, while attention's backward stays twice its forward.
func StepFLOPs(c *model.Config, pairs, promptLen, responseLen int, lora bool) float64 {
	D, I, V := float64(c.HiddenSize), float64(c.IntermediateSize), float64(c.VocabSize)
	q, kv := float64(c.NumAttentionHeads*c.HeadDim), float64(c.NumKeyValueHeads*c.HeadDim)
	L := float64(promptLen + responseLen - 1)
	perToken := 2 * (D*q + 2*D*kv + q*D + 3*D*I)
	attn := float64(c.NumHiddenLayers) * 2 * 2 * q * L * (L + 1) / 2
	lin := float64(c.NumHiddenLayers)*L*perToken + float64(responseLen)*2*D*V
	if lora {
		return float64(2*pairs) * (3*lin + 4*attn)
	}
	return float64(2*pairs) * 4 * (lin + attn)
}

// Bench times DPO steps of full fine-tuning or LoRA with AdamW (clipped to norm 1, the
// trainer's defaults; the PyTorch baseline does the same), one trainer reused across Runs.
type Bench struct {
	o     BenchOptions
	tr    *Trainer
	pairs []*Pair
	warm  bool
}

// NewBench prepares a bench on w (which it updates).
func NewBench(w *model.Weights, o BenchOptions) (*Bench, error) {
	o.defaults()
	opts := DefaultOptions()
	switch {
	case o.Mode == BenchFull && o.LoRA == nil:
	case o.Mode == BenchLoRA && o.LoRA != nil:
		opts.LoRA = o.LoRA
	case o.Mode == BenchLoRA:
		return nil, fmt.Errorf("bench mode %s needs a LoRA configuration", BenchLoRA)
	default:
		return nil, fmt.Errorf("bench mode %q: want %s, or %s with a LoRA configuration", o.Mode, BenchFull, BenchLoRA)
	}
	opts.BatchSize = o.PairsPerStep
	opts.GradCheckpoint, opts.ActivationBudget = o.GradCheckpoint, o.ActivationBudget
	opts.Logger = quietLog()
	tr, err := New(w, opts)
	if err != nil {
		return nil, err
	}
	return &Bench{o: o, tr: tr, pairs: BenchPairs(w.Config, o)}, nil
}

// Run times o.Steps steps (after a warm-up step on the first call) and returns the fastest.
func (b *Bench) Run() (BenchResult, error) {
	o := b.o
	res := BenchResult{StepFLOPs: StepFLOPs(b.tr.Policy.Config, o.PairsPerStep, o.PromptLen, o.ResponseLen, o.Mode == BenchLoRA)}
	for i := 0; i < o.Steps; i++ {
		for _, p := range b.pairs {
			p.HasRef = false // the reference forward is part of every step
		}
		t0, c0 := time.Now(), cpuSeconds()
		if _, err := b.tr.Step(b.pairs); err != nil {
			return res, err
		}
		sec, cpu, ref := time.Since(t0).Seconds(), cpuSeconds()-c0, b.tr.refSeconds
		if !b.warm {
			b.warm = true // graph compilation, first allocations
			i--
			continue
		}
		if res.StepSeconds == 0 || sec < res.StepSeconds {
			res.StepSeconds, res.RefSeconds = sec, ref
		}
		if res.StepCPUSeconds == 0 || cpu < res.StepCPUSeconds {
			res.StepCPUSeconds = cpu
		}
	}
	res.PairsPerS = float64(o.PairsPerStep) / res.StepSeconds
	res.PairsPerCPUS = float64(o.PairsPerStep) / res.StepCPUSeconds
	res.TokensPerS = float64(2*o.PairsPerStep*(o.PromptLen+o.ResponseLen)) / res.StepSeconds
	res.GFLOPs = res.StepFLOPs / res.StepSeconds / 1e9
	return res, nil
}

// Close releases the bench's trainer (Trainer.Close).
func (b *Bench) Close() { b.tr.Close() }

// BenchDPO is NewBench then one Run.
func BenchDPO(w *model.Weights, o BenchOptions) (BenchResult, error) {
	b, err := NewBench(w, o)
	if err != nil {
		return BenchResult{}, err
	}
	return b.Run()
}

// cpuSeconds is the process's user+system CPU time.
func cpuSeconds() float64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return float64(ru.Utime.Nano()+ru.Stime.Nano()) / 1e9
}

// MatmulPeakGFLOPs measures float32 matrix multiply throughput of the BLAS the graph uses, on
// n×n matrices for at least dur: the machine's attainable peak for this code.
func MatmulPeakGFLOPs(n int, dur time.Duration) float64 {
	a := tensor.New(tensor.WithShape(n, n), tensor.WithBacking(make([]float32, n*n)))
	b := tensor.New(tensor.WithShape(n, n), tensor.WithBacking(make([]float32, n*n)))
	for i, d := 0, a.Data().([]float32); i < len(d); i++ {
		d[i] = float32(i%7) * 0.1
	}
	c := tensor.New(tensor.WithShape(n, n), tensor.Of(tensor.Float32))
	best := 0.0
	start := time.Now()
	for time.Since(start) < dur {
		t0 := time.Now()
		if _, err := tensor.MatMul(a, b, tensor.WithReuse(c)); err != nil {
			return 0
		}
		best = max(best, 2*float64(n)*float64(n)*float64(n)/time.Since(t0).Seconds()/1e9)
	}
	return best
}

func quietLog() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }
