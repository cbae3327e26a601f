package trainer

import (
	"math"
	"testing"
)

// TestDPOLossGradientsMatchFiniteDifferences checks every loss variant's analytic derivative.
func TestDPOLossGradientsMatchFiniteDifferences(t *testing.T) {
	pc, pr := []float64{-10.5, -3.25, -7}, []float64{-9, -6.5, -7.5}
	rc, rr := []float64{-10, -4, -6}, []float64{-9.5, -6, -7.25}
	lens := []int{4, 2, 5}
	for _, o := range []LossOptions{
		{Type: LossSigmoid, Beta: 0.1},
		{Type: LossSigmoid, Beta: 0.5, LabelSmoothing: 0.2},
		{Type: LossIPO, Beta: 0.1},
		{Type: LossHinge, Beta: 0.3},
		{Type: LossSigmoid, Beta: 0.1, NLLAlpha: 0.7},
		{Type: LossSigmoid, Beta: 0.1, NLLAlpha: 0.7, LengthNormalize: true},
	} {
		mean := func() float64 {
			out := DPOLoss(o, pc, pr, rc, rr, lens, 3)
			return (out.Losses[0] + out.Losses[1] + out.Losses[2]) / 3
		}
		out := DPOLoss(o, pc, pr, rc, rr, lens, 3)
		for _, v := range []struct {
			x []float64
			d []float64
		}{{pc, out.DChosen}, {pr, out.DRejected}} {
			for i := range v.x {
				const h = 1e-6
				x0 := v.x[i]
				v.x[i] = x0 + h
				fp := mean()
				v.x[i] = x0 - h
				fm := mean()
				v.x[i] = x0
				if num := (fp - fm) / (2 * h); math.Abs(num-v.d[i]) > 1e-7 {
					t.Errorf("%+v: pair %d: analytic %g, numeric %g", o, i, v.d[i], num)
				}
			}
		}
	}
}

// TestDPOLossKnownValues pins the formulas to hand-computed numbers (TRL's definitions).
func TestDPOLossKnownValues(t *testing.T) {
	// chosen logratio 1, rejected logratio -1: logits 2.
	pc, pr, rc, rr := []float64{-4}, []float64{-6}, []float64{-5}, []float64{-5}
	for _, tc := range []struct {
		o    LossOptions
		want float64
	}{
		{LossOptions{Type: LossSigmoid, Beta: 0.1}, math.Log1p(math.Exp(-0.2))},
		{LossOptions{Type: LossSigmoid, Beta: 0.1, LabelSmoothing: 0.1}, 0.9*math.Log1p(math.Exp(-0.2)) + 0.1*math.Log1p(math.Exp(0.2))},
		{LossOptions{Type: LossIPO, Beta: 0.1}, 9},
		{LossOptions{Type: LossHinge, Beta: 0.1}, 0.8},
		{LossOptions{Type: LossHinge, Beta: 1}, 0},
	} {
		out := DPOLoss(tc.o, pc, pr, rc, rr, []int{3}, 1)
		if math.Abs(out.Losses[0]-tc.want) > 1e-12 {
			t.Errorf("%+v: loss %g, want %g", tc.o, out.Losses[0], tc.want)
		}
		if math.Abs(out.ChosenRewards[0]-tc.o.Beta) > 1e-12 || math.Abs(out.RejectedRewards[0]+tc.o.Beta) > 1e-12 {
			t.Errorf("%+v: rewards %g, %g", tc.o, out.ChosenRewards[0], out.RejectedRewards[0])
		}
	}
}

func TestLRScheduleShapes(t *testing.T) {
	for _, tc := range []struct {
		o    OptimOptions
		step int
		want float64
	}{
		{OptimOptions{LR: 1, Schedule: "constant"}, 0, 1},
		{OptimOptions{LR: 1, Schedule: "constant"}, 1000, 1},
		{OptimOptions{LR: 1, Schedule: "constant", WarmupSteps: 4}, 0, 0.25},
		{OptimOptions{LR: 1, Schedule: "constant", WarmupSteps: 4}, 3, 1},
		{OptimOptions{LR: 1, Schedule: "linear", WarmupSteps: 2, TotalSteps: 12}, 7, 0.5},
		{OptimOptions{LR: 1, Schedule: "cosine", WarmupSteps: 2, TotalSteps: 12}, 7, 0.5},
		{OptimOptions{LR: 1, Schedule: "cosine", TotalSteps: 10}, 10, 0},
	} {
		if got := tc.o.LRAt(tc.step); math.Abs(got-tc.want) > 1e-12 {
			t.Errorf("%+v step %d: lr %g, want %g", tc.o, tc.step, got, tc.want)
		}
	}
}
