package trainer

import (
	"fmt"
	"math"

	"github.com/autoif/autoif/model"
)

// OptimOptions configures the optimiser and the learning-rate schedule.
type OptimOptions struct {
	// Name is "adamw" (default) or "sgd".
	Name string
	// LR is the peak learning rate (default 1e-6, TRL's DPO default).
	LR float64
	// AdamW: Beta1 0.9, Beta2 0.999, Eps 1e-8 by default. WeightDecay applies to both
	// optimisers (decoupled for AdamW, L2 for SGD as torch does); default 0.
	Beta1, Beta2, Eps float64
	WeightDecay       float64
	// Momentum for SGD (default 0).
	Momentum float64
	// MaxGradNorm clips the global gradient norm; 0 disables clipping. Default 1 via
	// Options.withDefaults unless NoClip.
	MaxGradNorm float64
	// Schedule is "constant" (default: an online run has no fixed length), "linear" or
	// "cosine"; the last two decay to 0 at TotalSteps. WarmupSteps ramps linearly first.
	Schedule    string
	WarmupSteps int
	TotalSteps  int
}

func (o OptimOptions) withDefaults() OptimOptions {
	if o.Name == "" {
		o.Name = "adamw"
	}
	if o.LR == 0 {
		o.LR = 1e-6
	}
	if o.Beta1 == 0 {
		o.Beta1 = 0.9
	}
	if o.Beta2 == 0 {
		o.Beta2 = 0.999
	}
	if o.Eps == 0 {
		o.Eps = 1e-8
	}
	if o.Schedule == "" {
		o.Schedule = "constant"
	}
	return o
}

func (o OptimOptions) validate() error {
	if o.Name != "adamw" && o.Name != "sgd" {
		return fmt.Errorf("optimiser %q: want adamw or sgd", o.Name)
	}
	if o.LR < 0 || math.IsNaN(o.LR) {
		return fmt.Errorf("learning rate %g: must be >= 0", o.LR)
	}
	if o.MaxGradNorm < 0 {
		return fmt.Errorf("max grad norm %g: must be >= 0 (0 = no clipping)", o.MaxGradNorm)
	}
	switch o.Schedule {
	case "constant":
	case "linear", "cosine":
		if o.TotalSteps <= o.WarmupSteps {
			return fmt.Errorf("%s schedule needs total steps (%d) > warmup steps (%d)", o.Schedule, o.TotalSteps, o.WarmupSteps)
		}
	default:
		return fmt.Errorf("schedule %q: want constant, linear or cosine", o.Schedule)
	}
	return nil
}

// LRAt is the learning rate of optimiser step `step` (0-based): a linear warmup reaching the
// peak at step WarmupSteps-1, then constant, linear or cosine decay to 0 at TotalSteps.
func (o OptimOptions) LRAt(step int) float64 {
	if step < o.WarmupSteps {
		return o.LR * float64(step+1) / float64(o.WarmupSteps)
	}
	switch o.Schedule {
	case "linear":
		return o.LR * max(0, float64(o.TotalSteps-step)/float64(o.TotalSteps-o.WarmupSteps))
	case "cosine":
		p := min(1, float64(step-o.WarmupSteps)/float64(o.TotalSteps-o.WarmupSteps))
		return o.LR * 0.5 * (1 + math.Cos(math.Pi*p))
	}
	return o.LR
}

// optimizer holds the per-parameter state, parallel to Weights.Tensors().
type optimizer struct {
	o      OptimOptions
	step   int // optimiser steps taken
	m, v   [][]float32
	params []*model.Tensor
}

func newOptimizer(o OptimOptions, params []*model.Tensor) *optimizer {
	opt := &optimizer{o: o, params: params}
	alloc := func() [][]float32 {
		s := make([][]float32, len(params))
		for i, p := range params {
			s[i] = make([]float32, len(p.Data))
		}
		return s
	}
	switch {
	case o.Name == "adamw":
		opt.m, opt.v = alloc(), alloc()
	case o.Momentum > 0:
		opt.m = alloc()
	}
	return opt
}

// gradNorm is the global L2 norm over all gradients.
func gradNorm(grads [][]float32) float64 {
	var ss float64
	for _, g := range grads {
		// Per-block partial sums, added in block order: the same threads give the same norm.
		parts := make([]float64, threads())
		parallelBlocks(len(g), func(b, i0, i1 int) {
			var s float64
			for _, v := range g[i0:i1] {
				s += float64(v) * float64(v)
			}
			parts[b] = s
		})
		for _, s := range parts {
			ss += s
		}
	}
	return math.Sqrt(ss)
}

// clipGrads scales grads so their global norm is at most maxNorm, as
// torch.nn.utils.clip_grad_norm_ does (coefficient maxNorm/(norm+1e-6), capped at 1).
func clipGrads(grads [][]float32, norm, maxNorm float64) {
	if maxNorm <= 0 {
		return
	}
	coef := maxNorm / (norm + 1e-6)
	if coef >= 1 {
		return
	}
	c := float32(coef)
	for _, g := range grads {
		parallelBlocks(len(g), func(_, i0, i1 int) {
			for i := range g[i0:i1] {
				g[i0+i] *= c
			}
		})
	}
}

// apply takes one step with learning rate lr; the updates follow torch.optim.AdamW and
// torch.optim.SGD.
func (opt *optimizer) apply(grads [][]float32, lr float64) {
	opt.step++
	o := opt.o
	switch o.Name {
	case "adamw":
		bc1 := 1 - math.Pow(o.Beta1, float64(opt.step))
		bc2 := 1 - math.Pow(o.Beta2, float64(opt.step))
		stepSize := lr / bc1
		for k, p := range opt.params {
			g, m, v := grads[k], opt.m[k], opt.v[k]
			parallelBlocks(len(p.Data), func(_, i0, i1 int) {
				for i := i0; i < i1; i++ {
					wf := float64(p.Data[i]) * (1 - lr*o.WeightDecay)
					gi := float64(g[i])
					mi := o.Beta1*float64(m[i]) + (1-o.Beta1)*gi
					vi := o.Beta2*float64(v[i]) + (1-o.Beta2)*gi*gi
					m[i], v[i] = float32(mi), float32(vi)
					denom := math.Sqrt(vi)/math.Sqrt(bc2) + o.Eps
					p.Data[i] = float32(wf - stepSize*mi/denom)
				}
			})
		}
	case "sgd":
		for k, p := range opt.params {
			g := grads[k]
			parallelBlocks(len(p.Data), func(_, i0, i1 int) {
				for i := i0; i < i1; i++ {
					w := p.Data[i]
					d := float64(g[i]) + o.WeightDecay*float64(w)
					if o.Momentum > 0 {
						buf := opt.m[k]
						if opt.step > 1 {
							d = o.Momentum*float64(buf[i]) + d
						}
						buf[i] = float32(d)
					}
					p.Data[i] = float32(float64(w) - lr*d)
				}
			})
		}
	}
}
