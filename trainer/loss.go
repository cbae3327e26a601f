package trainer

import (
	"fmt"
	"math"
)

// Loss types, as TRL's DPOConfig.loss_type names them.
const (
	LossSigmoid = "sigmoid" // DPO (Rafailov et al. 2023); with LabelSmoothing > 0, conservative DPO
	LossIPO     = "ipo"     // IPO (Azar et al. 2023)
	LossHinge   = "hinge"   // SLiC-style hinge (Zhao et al. 2023)
)

// LossOptions configures the preference loss.
type LossOptions struct {
	// Type is LossSigmoid (default), LossIPO or LossHinge.
	Type string
	// Beta is the KL-penalty strength β (default 0.1; the AutoIF paper used 0.3 at 7B). For IPO
	// it is τ, the regularisation.
	Beta float64
	// LabelSmoothing ε in [0, 0.5): conservative DPO, the probability that a label is flipped.
	LabelSmoothing float64
	// LengthNormalize averages token log-probs over the completion instead of summing them
	// (IPO's paper form; off by default: DPO sums).
	LengthNormalize bool
	// NLLAlpha adds α·(mean token NLL of the chosen response) to each pair's loss (RPO).
	NLLAlpha float64
}

func (o LossOptions) withDefaults() LossOptions {
	if o.Type == "" {
		o.Type = LossSigmoid
	}
	if o.Beta == 0 {
		o.Beta = 0.1
	}
	return o
}

func (o LossOptions) validate() error {
	switch o.Type {
	case LossSigmoid, LossIPO, LossHinge:
	default:
		return fmt.Errorf("loss %q: want sigmoid, ipo or hinge", o.Type)
	}
	if o.Beta <= 0 || math.IsNaN(o.Beta) {
		return fmt.Errorf("beta %g: must be positive", o.Beta)
	}
	if o.LabelSmoothing < 0 || o.LabelSmoothing >= 0.5 {
		return fmt.Errorf("label smoothing %g: want [0, 0.5)", o.LabelSmoothing)
	}
	if o.LabelSmoothing > 0 && o.Type != LossSigmoid {
		return fmt.Errorf("label smoothing applies to the sigmoid loss only, not %s", o.Type)
	}
	if o.NLLAlpha < 0 {
		return fmt.Errorf("nll alpha %g: must be >= 0", o.NLLAlpha)
	}
	return nil
}

// DPOOutput is the per-pair result of DPOLoss, and the derivatives of the batch-mean loss.
type DPOOutput struct {
	Losses          []float64 // per pair
	ChosenRewards   []float64 // β·(policy - reference) log-prob of the chosen response
	RejectedRewards []float64
	// DChosen[i], DRejected[i] are ∂(mean loss)/∂(policy chosen/rejected log-prob of pair i).
	DChosen, DRejected []float64
}

// DPOLoss is TRL's dpo_loss for a batch of pairs: the log-probs are per pair (sums over the
// completion tokens, or means with LengthNormalize); chosenTokens is the chosen response's
// length for the NLL term. The batch loss is the mean of Losses, over n pairs (n >= len: a step
// split into micro-batches passes the whole step's pair count so gradients add up to the
// mean).
func DPOLoss(o LossOptions, policyChosen, policyRejected, refChosen, refRejected []float64, chosenTokens []int, n int) DPOOutput {
	beta := o.Beta
	out := DPOOutput{
		Losses: make([]float64, len(policyChosen)), ChosenRewards: make([]float64, len(policyChosen)),
		RejectedRewards: make([]float64, len(policyChosen)),
		DChosen:         make([]float64, len(policyChosen)), DRejected: make([]float64, len(policyChosen)),
	}
	for i := range policyChosen {
		chosenLogratios := policyChosen[i] - refChosen[i]
		rejectedLogratios := policyRejected[i] - refRejected[i]
		logits := chosenLogratios - rejectedLogratios

		var loss, dLogits float64
		switch o.Type {
		case LossSigmoid:
			// -(1-ε)·logσ(βz) - ε·logσ(-βz); d/dz = -(1-ε)·β·σ(-βz) + ε·β·σ(βz)
			ls := o.LabelSmoothing
			loss = (1-ls)*softplus(-beta*logits) + ls*softplus(beta*logits)
			dLogits = -(1-ls)*beta*sigmoid(-beta*logits) + ls*beta*sigmoid(beta*logits)
		case LossIPO:
			// (z - 1/(2τ))²
			d := logits - 1/(2*beta)
			loss = d * d
			dLogits = 2 * d
		case LossHinge:
			// relu(1 - βz)
			if m := 1 - beta*logits; m > 0 {
				loss = m
				dLogits = -beta
			}
		}
		dChosen, dRejected := dLogits, -dLogits
		if o.NLLAlpha > 0 {
			// Mean token NLL of the chosen response: -logp/len for a sum, -logp for a mean.
			scale := 1.0
			if !o.LengthNormalize {
				scale = 1 / float64(max(chosenTokens[i], 1))
			}
			loss += -o.NLLAlpha * policyChosen[i] * scale
			dChosen += -o.NLLAlpha * scale
		}
		out.Losses[i] = loss
		out.ChosenRewards[i] = beta * chosenLogratios
		out.RejectedRewards[i] = beta * rejectedLogratios
		out.DChosen[i] = dChosen / float64(n)
		out.DRejected[i] = dRejected / float64(n)
	}
	return out
}

// SFTLoss is the mean token negative log-likelihood of the responses: logps are per-sequence
// sums, tokens their lengths, totalTokens the count over the whole step. It returns this
// part's contribution to the loss and ∂loss/∂logp per sequence.
func SFTLoss(logps []float64, totalTokens int) (float64, []float64) {
	var loss float64
	d := make([]float64, len(logps))
	for i, lp := range logps {
		loss -= lp / float64(totalTokens)
		d[i] = -1 / float64(totalTokens)
	}
	return loss, d
}

// softplus(x) = log(1 + eˣ) = -logσ(-x), computed without overflow.
func softplus(x float64) float64 {
	if x > 0 {
		return x + math.Log1p(math.Exp(-x))
	}
	return math.Log1p(math.Exp(x))
}

func sigmoid(x float64) float64 {
	if x >= 0 {
		return 1 / (1 + math.Exp(-x))
	}
	e := math.Exp(x)
	return e / (1 + e)
}
