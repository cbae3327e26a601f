package trainer

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"strings"
	"testing"
)

func fixedPairs(n, vocab int, seed uint64) []*Pair {
	rng := rand.New(rand.NewPCG(seed, 11))
	toks := func(k int) []int {
		s := make([]int, k)
		for i := range s {
			s[i] = 3 + rng.IntN(vocab-3)
		}
		return s
	}
	pairs := make([]*Pair, n)
	for i := range pairs {
		pairs[i] = &Pair{ID: fmt.Sprint("p", i), Prompt: append([]int{1}, toks(2+rng.IntN(4))...), Chosen: toks(1 + rng.IntN(5)), Rejected: toks(1 + rng.IntN(5))}
	}
	return pairs
}

func TestOverfittingEightPairsReachesFullAccuracy(t *testing.T) {
	w := tinyWeights(t, tinyConfig(true, false, true), 21)
	opts := DefaultOptions()
	opts.Optim.LR = 1e-2
	opts.BatchSize = 3 // 8 pairs = micro-batches of 3, 3, 2: accumulation is exercised
	tr, err := New(w, opts)
	if err != nil {
		t.Fatal(err)
	}
	pairs := fixedPairs(8, w.Config.VocabSize, 1)
	var first, last Metrics
	for i := range 40 {
		m, err := tr.Step(pairs)
		if err != nil {
			t.Fatal(err)
		}
		if i == 0 {
			first = m
		}
		last = m
		if m.Accuracy == 1 && m.Loss < 0.3 {
			break
		}
	}
	if math.Abs(first.Loss-math.Log(2)) > 1e-5 || math.Abs(first.RewardsMargins) > 1e-5 {
		t.Errorf("first step: loss %g, margins %g; the policy starts as the reference, want ln 2 and 0", first.Loss, first.RewardsMargins)
	}
	if last.Accuracy != 1 {
		t.Errorf("after %d steps rewards/accuracies = %g, want 1", last.Step, last.Accuracy)
	}
	if last.Loss >= first.Loss {
		t.Errorf("loss went from %g to %g", first.Loss, last.Loss)
	}
}

func TestBadPairsAreSkippedAndCounted(t *testing.T) {
	w := tinyWeights(t, tinyConfig(false, false, true), 2)
	opts := DefaultOptions()
	opts.MaxLen = 12
	tr, err := New(w, opts)
	if err != nil {
		t.Fatal(err)
	}
	good := &Pair{ID: "good", Prompt: []int{1, 4}, Chosen: []int{5, 6}, Rejected: []int{7}}
	pairs := []*Pair{
		good,
		{ID: "empty", Prompt: []int{1}, Chosen: nil, Rejected: []int{3}},
		{ID: "same", Prompt: []int{1}, Chosen: []int{3, 4}, Rejected: []int{3, 4}},
		{ID: "long", Prompt: make([]int, 11), Chosen: []int{3, 4}, Rejected: []int{5}},
		{ID: "vocab", Prompt: []int{1}, Chosen: []int{3, 999}, Rejected: []int{5}},
		{ID: "noprompt", Chosen: []int{3}, Rejected: []int{5}},
	}
	m, err := tr.Step(pairs)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]int{SkipEmptyResponse: 1, SkipIdentical: 1, SkipTooLong: 1, SkipBadToken: 1, SkipEmptyPrompt: 1}
	if m.Pairs != 1 || fmt.Sprint(m.Skipped) != fmt.Sprint(want) {
		t.Errorf("pairs %d skipped %v, want 1 and %v", m.Pairs, m.Skipped, want)
	}
	// A step with nothing usable changes nothing.
	before := append([]float32(nil), w.EmbedTokens.Data...)
	m, err = tr.Step(pairs[1:])
	if err != nil || m.Pairs != 0 || tr.StepCount() != 1 {
		t.Errorf("all-bad step: pairs %d, steps %d, err %v", m.Pairs, tr.StepCount(), err)
	}
	for i := range before {
		if before[i] != w.EmbedTokens.Data[i] {
			t.Fatal("an all-skipped step changed the weights")
		}
	}
}

func TestNonFiniteLossStopsNamingStepAndPair(t *testing.T) {
	w := tinyWeights(t, tinyConfig(false, false, false), 2)
	tr, err := New(w, DefaultOptions())
	if err != nil {
		t.Fatal(err)
	}
	pairs := []*Pair{{ID: "ok", Prompt: []int{1, 2}, Chosen: []int{3}, Rejected: []int{4}}, {ID: "poisoned", Prompt: []int{1, 5}, Chosen: []int{5}, Rejected: []int{6}}}
	if _, err := tr.Step(pairs[:1]); err != nil {
		t.Fatal(err)
	}
	// A NaN input embedding of token 5, which only the second pair's prompt feeds in (the
	// head is untied), poisons only that pair's policy log-probs.
	for i := range w.Config.HiddenSize {
		w.EmbedTokens.Data[5*w.Config.HiddenSize+i] = float32(math.NaN())
	}
	_, err = tr.Step(pairs)
	if !errors.Is(err, ErrNonFinite) {
		t.Fatalf("err %v, want ErrNonFinite", err)
	}
	if msg := err.Error(); !strings.Contains(msg, "step 2") || !strings.Contains(msg, "poisoned") {
		t.Errorf("error %q does not name step 2 and pair poisoned", msg)
	}
}
