package model

import (
	"fmt"
	"math"
	"math/rand/v2"
	"strings"
	"testing"
)

func TestGenerateSameSeedSameOutput(t *testing.T) {
	m, tokens, _ := loadGolden(t, "llama_gqa_untied_bf16")
	opts := SampleOptions{MaxNewTokens: 12, Temperature: 1, TopP: 0.95, TopK: 50, Seed: 42}
	prompts := [][]int{tokens[:4], tokens[4:11]}
	a, err := m.Generate(prompts, opts)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := m.Generate(prompts, opts)
	opts.Seed = 43
	c, _ := m.Generate(prompts, opts)
	if fmt.Sprint(a) != fmt.Sprint(b) {
		t.Errorf("same seed, different samples:\n%v\n%v", a, b)
	}
	if fmt.Sprint(a) == fmt.Sprint(c) {
		t.Errorf("seeds 42 and 43 gave identical samples %v", a)
	}
	// A sequence's draw does not depend on what else is in the batch.
	opts.Seed = 42
	alone, _ := m.Generate(prompts[:1], opts)
	if fmt.Sprint(alone[0].Tokens) != fmt.Sprint(a[0].Tokens) {
		t.Errorf("row 0 alone %v, in batch %v", alone[0].Tokens, a[0].Tokens)
	}
}

// The log-probs Generate reports are what the trainer recomputes with LogProbs.
func TestSampledLogProbsMatchLogProbs(t *testing.T) {
	for _, name := range goldenDirs {
		t.Run(name, func(t *testing.T) {
			m, tokens, _ := loadGolden(t, name)
			prompts := [][]int{tokens[:3], tokens[6:15]}
			samples, err := m.Generate(prompts, SampleOptions{MaxNewTokens: 10, Temperature: 0.8, Seed: 1})
			if err != nil {
				t.Fatal(err)
			}
			for i, s := range samples {
				lp, err := m.LogProbs(prompts[i], s.Tokens)
				if err != nil {
					t.Fatal(err)
				}
				if d := maxAbsDiff(lp, s.LogProbs); d > 1e-4 {
					t.Errorf("sample %d: log-probs differ by %g: %v vs %v", i, d, lp, s.LogProbs)
				}
				for _, v := range lp {
					if !(v <= 0) {
						t.Errorf("log-prob %v is not <= 0", v)
					}
				}
			}
		})
	}
}

func TestLogProbsMatchTorchGoldenLogits(t *testing.T) {
	m, tokens, want := loadGolden(t, "qwen2_mha_tied_bf16")
	v := m.Config.VocabSize
	lp, err := m.LogProbs(tokens[:6], tokens[6:])
	if err != nil {
		t.Fatal(err)
	}
	for j, tok := range tokens[6:] {
		pos := 5 + j
		w := logSoftmaxAt(want[pos*v:(pos+1)*v], tok)
		if math.Abs(float64(lp[j]-w)) > 1e-4 {
			t.Errorf("token %d: log-prob %v, torch logits give %v", j, lp[j], w)
		}
	}
}

func TestGreedyAndTopK1AgreeAndFollowArgmax(t *testing.T) {
	m, tokens, _ := loadGolden(t, "llama_mha_tied_f32")
	greedy, err := m.Generate([][]int{tokens[:5]}, SampleOptions{MaxNewTokens: 8})
	if err != nil {
		t.Fatal(err)
	}
	topk, _ := m.Generate([][]int{tokens[:5]}, SampleOptions{MaxNewTokens: 8, Temperature: 1.5, TopK: 1, Seed: 9})
	if fmt.Sprint(greedy[0].Tokens) != fmt.Sprint(topk[0].Tokens) {
		t.Errorf("greedy %v, top-k 1 %v", greedy[0].Tokens, topk[0].Tokens)
	}
	seq := append([]int(nil), tokens[:5]...)
	for _, tok := range greedy[0].Tokens {
		kc := m.NewCache(1, len(seq))
		lg, _ := m.Forward(kc, [][]int{seq}, false)
		best := 0
		for i, v := range lg[0] {
			if v > lg[0][best] {
				best = i
			}
		}
		if tok != best {
			t.Fatalf("greedy picked %d, argmax is %d", tok, best)
		}
		seq = append(seq, tok)
	}
}

func TestGenerateStops(t *testing.T) {
	m, tokens, _ := loadGolden(t, "qwen2_gqa_bias_f32")
	free, _ := m.Generate([][]int{tokens[:4]}, SampleOptions{MaxNewTokens: 10, Temperature: 1, Seed: 5})
	if len(free[0].Tokens) != 10 || free[0].Finish != FinishLength {
		t.Fatalf("unconstrained: %d tokens, finish %s", len(free[0].Tokens), free[0].Finish)
	}
	stopAt := free[0].Tokens[3]
	first := 0
	for first < len(free[0].Tokens) && free[0].Tokens[first] != stopAt {
		first++
	}
	byToken, _ := m.Generate([][]int{tokens[:4]}, SampleOptions{MaxNewTokens: 10, Temperature: 1, Seed: 5, StopTokens: []int{stopAt}})
	if got := byToken[0]; len(got.Tokens) != first+1 || got.Finish != FinishStopToken {
		t.Errorf("stop token %d: got %v (%s), want %d tokens", stopAt, got.Tokens, got.Finish, first+1)
	}
	decode := func(ids []int) string {
		var b strings.Builder
		for _, id := range ids {
			fmt.Fprintf(&b, "<%d>", id)
		}
		return b.String()
	}
	stopStr := fmt.Sprintf("<%d><%d>", free[0].Tokens[5], free[0].Tokens[6])
	byString, _ := m.Generate([][]int{tokens[:4]}, SampleOptions{MaxNewTokens: 10, Temperature: 1, Seed: 5, StopStrings: []string{stopStr}, Decode: decode})
	if got := byString[0]; got.Finish != FinishStopString || !strings.HasSuffix(decode(got.Tokens), stopStr) {
		t.Errorf("stop string %s: got %v (%s)", stopStr, got.Tokens, got.Finish)
	}
	if _, err := m.Generate([][]int{tokens[:4]}, SampleOptions{MaxNewTokens: 3, StopStrings: []string{"x"}}); err == nil {
		t.Error("stop strings without a decoder were accepted")
	}
}

func TestTopPKeepsOnlyTheNucleus(t *testing.T) {
	// Probabilities about .64 .24 .09 .03: top-p 0.8 keeps the first two.
	logits := []float32{3, 2, 1, 0}
	sm := NewSampler(len(logits))
	rng := rand.New(rand.NewPCG(1, 2))
	counts := make([]int, len(logits))
	const n = 4000
	for range n {
		tok, lp := sm.Sample(logits, SampleOptions{Temperature: 1, TopP: 0.8}, rng)
		counts[tok]++
		if want := logSoftmaxAt(logits, tok); lp != want {
			t.Fatalf("log-prob %v, want temperature-1 %v", lp, want)
		}
	}
	if counts[2]+counts[3] != 0 {
		t.Errorf("tokens outside the nucleus sampled: %v", counts)
	}
	if frac := float64(counts[0]) / n; math.Abs(frac-0.731) > 0.03 {
		t.Errorf("token 0 drawn %.3f of the time, want about 0.731 (renormalised)", frac)
	}
}

func TestForwardRejectsBadInput(t *testing.T) {
	m, _, _ := loadGolden(t, "llama_mha_tied_f32")
	kc := m.NewCache(1, 4)
	if _, err := m.Forward(kc, [][]int{{1, 2, 3, 4, 5}}, false); err == nil {
		t.Error("overflowing the cache was accepted")
	}
	if _, err := m.Forward(kc, [][]int{{m.Config.VocabSize}}, false); err == nil {
		t.Error("token id outside the vocab was accepted")
	}
	if _, err := m.LogProbs([]int{1}, []int{-1}); err == nil {
		t.Error("negative completion id was accepted")
	}
}

// Batched log-probs (rows of different lengths, more targets than one lm_head chunk) equal
// the per-pair ones.
func TestLogProbsBatchMatchesOneAtATime(t *testing.T) {
	m, tokens, _ := loadGolden(t, "llama_bias_headdim_rope3_f32")
	long := append(append(append([]int(nil), tokens...), tokens...), tokens...)
	prompts := [][]int{tokens[:1], tokens[3:9], long[:2], tokens[:4]}
	completions := [][]int{long[1:50], tokens[9:12], long[2:60], nil}
	batch, err := m.LogProbsBatch(prompts, completions)
	if err != nil {
		t.Fatal(err)
	}
	for i := range prompts {
		one, err := m.LogProbs(prompts[i], completions[i])
		if err != nil {
			t.Fatal(err)
		}
		if len(one) != len(completions[i]) {
			t.Fatalf("pair %d: %d log-probs for %d tokens", i, len(one), len(completions[i]))
		}
		if d := maxAbsDiff(one, batch[i]); d > 1e-5 {
			t.Errorf("pair %d: batched differs from alone by %g", i, d)
		}
	}
	// And the first pair against a plain full forward.
	seq := append(append([]int(nil), prompts[0]...), completions[0]...)
	kc := m.NewCache(1, len(seq))
	logits, _ := m.Forward(kc, [][]int{seq}, true)
	v := m.Config.VocabSize
	for j, tok := range completions[0] {
		want := logSoftmaxAt(logits[0][j*v:(j+1)*v], tok)
		if math.Abs(float64(want-batch[0][j])) > 1e-5 {
			t.Fatalf("token %d: %v, full forward gives %v", j, batch[0][j], want)
		}
	}
}
