package trainer

import (
	"math"
	"testing"

	"github.com/autoif/autoif/model"
)

// Two steps of each optimiser on one parameter, against the update rules written out as
// torch.optim documents them.
func TestOptimisersFollowTorchUpdateRules(t *testing.T) {
	g1, g2 := 0.5, -0.25
	for _, tc := range []struct {
		o    OptimOptions
		want float64
	}{
		{OptimOptions{Name: "sgd", LR: 0.1}, 1 - 0.1*g1 - 0.1*g2},
		{OptimOptions{Name: "sgd", LR: 0.1, Momentum: 0.9}, func() float64 {
			p := 1 - 0.1*g1 // first step: buf = g
			buf := 0.9*g1 + g2
			return p - 0.1*buf
		}()},
		{OptimOptions{Name: "sgd", LR: 0.1, WeightDecay: 0.5}, func() float64 {
			p := 1 - 0.1*(g1+0.5*1)
			return p - 0.1*(g2+0.5*p)
		}()},
		{OptimOptions{Name: "adamw", LR: 0.1, Beta1: 0.9, Beta2: 0.999, Eps: 1e-8, WeightDecay: 0.01}, func() float64 {
			p, m, v := 1.0, 0.0, 0.0
			for k, g := range []float64{g1, g2} {
				step := float64(k + 1)
				p *= 1 - 0.1*0.01
				m = 0.9*m + 0.1*g
				v = 0.999*v + 0.001*g*g
				mh, vh := m/(1-math.Pow(0.9, step)), v/(1-math.Pow(0.999, step))
				p -= 0.1 * mh / (math.Sqrt(vh) + 1e-8)
			}
			return p
		}()},
	} {
		p := &model.Tensor{Name: "w", Shape: []int{1}, Data: []float32{1}}
		opt := newOptimizer(tc.o.withDefaults(), []*model.Tensor{p})
		opt.apply([][]float32{{float32(g1)}}, tc.o.LR)
		opt.apply([][]float32{{float32(g2)}}, tc.o.LR)
		if math.Abs(float64(p.Data[0])-tc.want) > 1e-6 {
			t.Errorf("%+v: weight %.8f, want %.8f", tc.o, p.Data[0], tc.want)
		}
	}
}

func TestClippingScalesToMaxNormLikeTorch(t *testing.T) {
	grads := [][]float32{{3, 0}, {4}}
	n := gradNorm(grads)
	if n != 5 {
		t.Fatalf("norm %g, want 5", n)
	}
	clipGrads(grads, n, 1)
	if got := gradNorm(grads); math.Abs(got-1) > 1e-6 {
		t.Errorf("clipped norm %g, want 1", got)
	}
	clipGrads(grads, gradNorm(grads), 10) // under the limit: unchanged
	clipGrads(grads, gradNorm(grads), 0)  // 0 disables clipping
	if math.Abs(float64(grads[0][0])-0.6) > 1e-6 {
		t.Errorf("gradients changed under the limit: %v", grads)
	}
}
