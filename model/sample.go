package model

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"sort"
	"strings"
	"sync"
)

// SampleOptions controls Generate.
type SampleOptions struct {
	MaxNewTokens int
	// Temperature 0 is greedy decoding.
	Temperature float64
	// TopP in (0, 1) keeps the smallest set of tokens whose probability reaches TopP; 0 or 1
	// keeps all.
	TopP float64
	// TopK > 0 keeps the K most likely tokens.
	TopK int
	// Seed makes sampling reproducible: sequence i draws from its own generator seeded with
	// (Seed, i), so its tokens do not depend on what else is in the batch.
	Seed uint64
	// StopTokens end a sequence; the stop token is kept in Tokens.
	StopTokens []int
	// StopStrings end a sequence once the decoded completion contains one; needs Decode.
	// The tokens up to and including the one that completed the string are kept.
	StopStrings []string
	Decode      func(ids []int) string
}

// Finish reasons.
const (
	FinishStopToken  = "stop_token"
	FinishStopString = "stop_string"
	FinishLength     = "length"
)

// Sample is one generated completion.
type Sample struct {
	Tokens []int
	// LogProbs[i] is log p(Tokens[i]) under the model's plain distribution: log-softmax of the
	// temperature-1 logits, before top-k/top-p filtering, so it is the same number the trainer
	// computes for these tokens (and what LogProbs returns).
	LogProbs []float32
	Finish   string
}

// Generate samples one completion per prompt, all prompts decoding together in one batch
// with a KV cache. Prompts may differ in length (see Cache: no padding).
func (m *Model) Generate(prompts [][]int, opts SampleOptions) ([]Sample, error) {
	if len(prompts) == 0 {
		return nil, nil
	}
	if opts.MaxNewTokens <= 0 {
		return nil, errors.New("generate: max new tokens must be positive")
	}
	if opts.Temperature < 0 || opts.TopP < 0 || opts.TopP > 1 || opts.TopK < 0 {
		return nil, fmt.Errorf("generate: temperature %g, top-p %g, top-k %d out of range", opts.Temperature, opts.TopP, opts.TopK)
	}
	if len(opts.StopStrings) > 0 && opts.Decode == nil {
		return nil, errors.New("generate: stop strings need a Decode function")
	}
	maxLen := 0
	for i, p := range prompts {
		if len(p) == 0 {
			return nil, fmt.Errorf("generate: prompt %d is empty", i)
		}
		maxLen = max(maxLen, len(p)+opts.MaxNewTokens)
	}
	// Only the memory here: sequences past the context window still decode (RoPE extends).
	if err := m.Config.checkKVMemory(len(prompts), maxLen); err != nil {
		return nil, fmt.Errorf("generate: %w", err)
	}
	kc := m.NewCache(len(prompts), maxLen)
	stop := map[int]bool{}
	for _, id := range opts.StopTokens {
		stop[id] = true
	}
	samples := make([]Sample, len(prompts))
	rngs := make([]*rand.Rand, len(prompts))
	for i := range rngs {
		rngs[i] = rand.New(rand.NewPCG(opts.Seed, uint64(i)))
	}
	pool := m.samplerPool()
	input := prompts
	for {
		logits, err := m.Forward(kc, input, false)
		if err != nil {
			return nil, fmt.Errorf("generate: %w", err)
		}
		next := make([][]int, len(prompts))
		active := 0
		toks, lps := m.sampleRows(pool, logits, opts, rngs)
		for i, lg := range logits {
			if lg == nil {
				continue
			}
			s := &samples[i]
			tok, lp := toks[i], lps[i]
			s.Tokens = append(s.Tokens, tok)
			s.LogProbs = append(s.LogProbs, lp)
			switch {
			case stop[tok]:
				s.Finish = FinishStopToken
			case len(opts.StopStrings) > 0 && containsAny(opts.Decode(s.Tokens), opts.StopStrings):
				s.Finish = FinishStopString
			case len(s.Tokens) >= opts.MaxNewTokens:
				s.Finish = FinishLength
			default:
				next[i] = []int{tok}
				active++
			}
		}
		if active == 0 {
			return samples, nil
		}
		input = next
	}
}

func containsAny(s string, subs []string) bool {
	for _, sub := range subs {
		if sub != "" && strings.Contains(s, sub) {
			return true
		}
	}
	return false
}

func (m *Model) samplerPool() *sync.Pool {
	vocab := m.Config.VocabSize
	return &sync.Pool{New: func() any { return NewSampler(vocab) }}
}

// sampleRows samples every row that has logits, rows in parallel: with a large vocabulary
// the exps of a batch are a visible share of a decode step.
func (m *Model) sampleRows(pool *sync.Pool, logits [][]float32, opts SampleOptions, rngs []*rand.Rand) ([]int, []float32) {
	toks := make([]int, len(logits))
	lps := make([]float32, len(logits))
	parallelFor(m.threads(), len(logits), 1, func(lo, hi int) {
		sm := pool.Get().(*Sampler)
		defer pool.Put(sm)
		for i := lo; i < hi; i++ {
			if logits[i] != nil {
				toks[i], lps[i] = sm.Sample(logits[i], opts, rngs[i])
			}
		}
	})
	return toks, lps
}

// Sampler draws one row's token at a time with reusable buffers. Generate runs it; a caller
// with its own decode loop (the server's continuous batching, where rows join and leave
// between steps) runs it on Forward's logits, so both draw the same tokens from the same
// logits, options and generator. One Sampler serves one goroutine at a time.
type Sampler struct {
	probs []float64
	idx   []int
}

// NewSampler makes a sampler for a vocabulary of vocab tokens.
func NewSampler(vocab int) *Sampler {
	return &Sampler{probs: make([]float64, vocab), idx: make([]int, vocab)}
}

// Sample draws a token from logits (MaxNewTokens and the stop options are the caller's
// business) and returns it with its temperature-1 log-prob.
func (sm *Sampler) Sample(logits []float32, opts SampleOptions, rng *rand.Rand) (int, float32) {
	mx := math.Inf(-1)
	best := 0
	for i, v := range logits {
		if float64(v) > mx {
			mx, best = float64(v), i
		}
	}
	// At temperature 1 the sampling weights are the normaliser's terms: one pass of exp.
	var z, sum float64
	if opts.Temperature == 1 {
		for i, v := range logits {
			p := math.Exp(float64(v) - mx)
			sm.probs[i] = p
			z += p
		}
		sum = z
	} else {
		for _, v := range logits {
			z += math.Exp(float64(v) - mx)
		}
	}
	logZ := mx + math.Log(z)
	lp := func(tok int) float32 { return float32(float64(logits[tok]) - logZ) }
	if opts.Temperature == 0 {
		return best, lp(best)
	}
	if opts.Temperature != 1 {
		inv := 1 / opts.Temperature
		for i, v := range logits {
			p := math.Exp((float64(v) - mx) * inv)
			sm.probs[i] = p
			sum += p
		}
	}
	cand := sm.idx[:0]
	for i := range logits {
		cand = append(cand, i)
	}
	if (opts.TopK > 0 && opts.TopK < len(cand)) || (opts.TopP > 0 && opts.TopP < 1) {
		// Ties break by token id so the same seed gives the same tokens.
		sort.Slice(cand, func(a, b int) bool {
			pa, pb := sm.probs[cand[a]], sm.probs[cand[b]]
			if pa != pb {
				return pa > pb
			}
			return cand[a] < cand[b]
		})
		if opts.TopK > 0 && opts.TopK < len(cand) {
			cand = cand[:opts.TopK]
		}
		if opts.TopP > 0 && opts.TopP < 1 {
			var kept float64
			for _, c := range cand {
				kept += sm.probs[c]
			}
			var cum float64
			for i, c := range cand {
				cum += sm.probs[c]
				if cum >= opts.TopP*kept {
					cand = cand[:i+1]
					break
				}
			}
		}
		sum = 0
		for _, c := range cand {
			sum += sm.probs[c]
		}
	}
	u := rng.Float64() * sum
	for _, c := range cand {
		u -= sm.probs[c]
		if u < 0 {
			return c, lp(c)
		}
	}
	last := cand[len(cand)-1]
	return last, lp(last)
}

// LogProbs returns log p(completion[i] | prompt, completion[:i]) for every completion token:
// one full forward pass, log-softmax of the raw (temperature-1) logits. This is the quantity
// DPO sums per completion.
func (m *Model) LogProbs(prompt, completion []int) ([]float32, error) {
	out, err := m.LogProbsBatch([][]int{prompt}, [][]int{completion})
	if err != nil {
		return nil, err
	}
	return out[0], nil
}

// LogProbsBatch is LogProbs for several pairs in one batched forward pass.
func (m *Model) LogProbsBatch(prompts, completions [][]int) ([][]float32, error) {
	if len(prompts) != len(completions) {
		return nil, fmt.Errorf("log-probs: %d prompts, %d completions", len(prompts), len(completions))
	}
	seqs := make([][]int, len(prompts))
	maxLen := 0
	for i := range prompts {
		if len(prompts[i]) == 0 {
			return nil, fmt.Errorf("log-probs: prompt %d is empty", i)
		}
		for _, tok := range completions[i] {
			if tok < 0 || tok >= m.Config.VocabSize {
				return nil, fmt.Errorf("log-probs: completion %d: token id %d outside vocab of %d", i, tok, m.Config.VocabSize)
			}
		}
		seqs[i] = append(append([]int(nil), prompts[i]...), completions[i]...)
		// The last token's logits predict nothing in the completion.
		seqs[i] = seqs[i][:len(seqs[i])-1]
		maxLen = max(maxLen, len(seqs[i]))
	}
	kc := m.NewCache(len(seqs), maxLen)
	hs, _, _, err := m.hidden(kc, seqs, true)
	if err != nil {
		return nil, fmt.Errorf("log-probs: %w", err)
	}
	// Only positions that predict a completion token need logits, and those go through
	// lm_head a chunk at a time: a whole sequence's logits over a 150k vocabulary would be
	// gigabytes.
	type target struct{ row, j, pos, tok int }
	var targets []target
	flat := 0
	out := make([][]float32, len(prompts))
	for i, comp := range completions {
		out[i] = make([]float32, len(comp))
		for j, tok := range comp {
			targets = append(targets, target{i, j, flat + len(prompts[i]) - 1 + j, tok})
		}
		flat += len(seqs[i])
	}
	h, v := m.Config.HiddenSize, m.Config.VocabSize
	const chunk = 64
	buf := make([]float32, chunk*h)
	for lo := 0; lo < len(targets); lo += chunk {
		part := targets[lo:min(lo+chunk, len(targets))]
		for k, tg := range part {
			copy(buf[k*h:(k+1)*h], hs[tg.pos*h:(tg.pos+1)*h])
		}
		logits := m.lmHead(buf, len(part))
		for k, tg := range part {
			out[tg.row][tg.j] = logSoftmaxAt(logits[k*v:(k+1)*v], tg.tok)
		}
	}
	return out, nil
}

func logSoftmaxAt(logits []float32, tok int) float32 {
	mx := math.Inf(-1)
	for _, v := range logits {
		mx = max(mx, float64(v))
	}
	var z float64
	for _, v := range logits {
		z += math.Exp(float64(v) - mx)
	}
	return float32(float64(logits[tok]) - mx - math.Log(z))
}
