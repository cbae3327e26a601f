package rollout

import (
	"fmt"
	"slices"
	"testing"
)

// cands builds candidates with distinct texts from scores.
func cands(scores ...float64) []Candidate {
	out := make([]Candidate, len(scores))
	for i, s := range scores {
		out[i] = Candidate{Index: i, Text: fmt.Sprintf("response %d", i), Score: s}
	}
	return out
}

func TestSelectPairs(t *testing.T) {
	identical := cands(1, 0, 1, 0)
	identical[2].Text = identical[0].Text // same text as a chosen one
	identical[3].Text = identical[1].Text
	sameText := []Candidate{{Index: 0, Text: "x", Score: 1}, {Index: 1, Text: "x", Score: 0}}
	tests := []struct {
		name      string
		cands     []Candidate
		opts      SelectOptions
		want      []IndexPair
		n         int // pairs expected when which ones is the seed's choice
		tie       bool
		identical int
	}{
		{name: "autoif pairs every chosen with every rejected", cands: cands(1, 0, 0.5, 0),
			want: []IndexPair{{0, 1}, {0, 3}, {2, 1}, {2, 3}}},
		{name: "autoif ignores scores between zero and the threshold", cands: cands(0.25, 1, 0.4, 0),
			want: []IndexPair{{1, 3}}},
		{name: "autoif needs a response scoring exactly zero", cands: cands(1, 0.25, 0.3)},
		{name: "autoif needs a response reaching the threshold", cands: cands(0.25, 0, 0.49)},
		{name: "autoif with all scores equal is a tie", cands: cands(1, 1, 1), tie: true},
		{name: "all zero is a tie", cands: cands(0, 0, 0, 0), tie: true},
		{name: "one response is no pair and no tie", cands: cands(1)},
		{name: "autoif threshold is configurable", cands: cands(0.6, 0, 1), opts: SelectOptions{ChosenMin: 0.75},
			want: []IndexPair{{2, 1}}},
		{name: "autoif keeps at most two of each side", cands: cands(1, 1, 1, 0, 0, 0, 1, 0), n: 4},
		{name: "identical responses never pair", cands: sameText, tie: true, identical: 1},
		{name: "identical responses count once", cands: identical, want: []IndexPair{{0, 1}}, identical: 2},
		{name: "best-worst pairs the extremes", cands: cands(0.5, 0.25, 0.75, 0.5), opts: SelectOptions{Mode: ModeBestWorst},
			want: []IndexPair{{2, 1}}},
		{name: "best-worst works without a zero score", cands: cands(0.4, 0.2), opts: SelectOptions{Mode: ModeBestWorst},
			want: []IndexPair{{0, 1}}},
		{name: "best-worst with all equal is a tie", cands: cands(0.5, 0.5), opts: SelectOptions{Mode: ModeBestWorst}, tie: true},
		{name: "margin pairs every ordered difference at least the margin", cands: cands(1, 0.5, 0, 0.75),
			opts: SelectOptions{Mode: ModeMargin, Margin: 0.5},
			want: []IndexPair{{0, 1}, {0, 2}, {1, 2}, {3, 2}}},
		{name: "margin zero pairs any difference but never a tie", cands: cands(1, 1, 0),
			opts: SelectOptions{Mode: ModeMargin},
			want: []IndexPair{{0, 2}, {1, 2}}},
		{name: "margin caps pairs per prompt", cands: cands(1, 0.5, 0, 0.75),
			opts: SelectOptions{Mode: ModeMargin, Margin: 0.25, MaxPairs: 2}, n: 2},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			sel := SelectPairs("prompt-1", tc.cands, tc.opts)
			if sel.Tie != tc.tie {
				t.Errorf("tie = %v, want %v", sel.Tie, tc.tie)
			}
			if sel.Identical != tc.identical {
				t.Errorf("identical = %d, want %d", sel.Identical, tc.identical)
			}
			checkPairs(t, tc.cands, tc.opts, sel.Pairs)
			if tc.want != nil && !slices.Equal(sel.Pairs, tc.want) {
				t.Errorf("pairs = %v, want %v", sel.Pairs, tc.want)
			}
			if tc.want == nil && len(sel.Pairs) != tc.n {
				t.Errorf("pairs = %v, want %d", sel.Pairs, tc.n)
			}
		})
	}
}

// checkPairs asserts what must hold for every selection: the chosen scores higher, the texts
// differ, no pair repeats, and the caps hold.
func checkPairs(t *testing.T, cs []Candidate, o SelectOptions, pairs []IndexPair) {
	t.Helper()
	o = o.withDefaults()
	byIndex := map[int]Candidate{}
	for _, c := range cs {
		byIndex[c.Index] = c
	}
	seen := map[IndexPair]bool{}
	chosen, rejected := map[int]bool{}, map[int]bool{}
	for _, p := range pairs {
		c, r := byIndex[p.Chosen], byIndex[p.Rejected]
		if c.Score <= r.Score {
			t.Errorf("pair %v: chosen score %g not above rejected %g", p, c.Score, r.Score)
		}
		if c.Text == r.Text {
			t.Errorf("pair %v: identical texts", p)
		}
		if seen[p] {
			t.Errorf("pair %v repeated", p)
		}
		seen[p] = true
		chosen[p.Chosen], rejected[p.Rejected] = true, true
		if o.Mode == ModeAutoIF && (c.Score < o.ChosenMin || r.Score != 0) {
			t.Errorf("pair %v breaks the AutoIF rule: chosen %g, rejected %g", p, c.Score, r.Score)
		}
		if o.Mode == ModeMargin && c.Score-r.Score < o.Margin {
			t.Errorf("pair %v: margin %g below %g", p, c.Score-r.Score, o.Margin)
		}
	}
	switch o.Mode {
	case ModeAutoIF:
		if len(chosen) > o.MaxChosen || len(rejected) > o.MaxRejected || len(pairs) != len(chosen)*len(rejected) {
			t.Errorf("AutoIF selection %v: %d chosen × %d rejected, want a full product of at most %d × %d", pairs, len(chosen), len(rejected), o.MaxChosen, o.MaxRejected)
		}
	case ModeMargin:
		if o.MaxPairs > 0 && len(pairs) > o.MaxPairs {
			t.Errorf("%d pairs, cap %d", len(pairs), o.MaxPairs)
		}
	}
}

func TestSelectPairsCapsAtFourPairsAndChoosesBySeed(t *testing.T) {
	cs := cands(1, 1, 1, 0, 0, 0, 1, 0)
	a := SelectPairs("p", cs, SelectOptions{Seed: 7})
	if len(a.Pairs) != 4 {
		t.Fatalf("%d pairs, want 4", len(a.Pairs))
	}
	if b := SelectPairs("p", cs, SelectOptions{Seed: 7}); !slices.Equal(a.Pairs, b.Pairs) {
		t.Errorf("same seed, different pairs: %v vs %v", a.Pairs, b.Pairs)
	}
	// Over many seeds, the choice must cover more than one subset: a fixed "first two" rule
	// would bias training towards early samples.
	subsets := map[string]bool{}
	for seed := range uint64(32) {
		subsets[fmt.Sprint(SelectPairs("p", cs, SelectOptions{Seed: seed}).Pairs)] = true
	}
	if len(subsets) < 3 {
		t.Errorf("32 seeds chose only %d distinct subsets", len(subsets))
	}
}

func TestParseModeRejectsUnknownNames(t *testing.T) {
	for _, tc := range []struct {
		in      string
		want    Mode
		wantErr bool
	}{{"", ModeAutoIF, false}, {"autoif", ModeAutoIF, false}, {"best-worst", ModeBestWorst, false}, {"margin", ModeMargin, false}, {"all", "", true}} {
		got, err := ParseMode(tc.in)
		if (err != nil) != tc.wantErr || got != tc.want {
			t.Errorf("ParseMode(%q) = %q, %v", tc.in, got, err)
		}
	}
}

func TestIDsAreStableAndDistinct(t *testing.T) {
	r0 := RolloutID("p1", 3, 42, 0)
	if r0 != RolloutID("p1", 3, 42, 0) {
		t.Fatal("rollout id not stable")
	}
	ids := map[string]string{}
	for name, id := range map[string]string{
		"base":        r0,
		"index":       RolloutID("p1", 3, 42, 1),
		"version":     RolloutID("p1", 4, 42, 0),
		"seed":        RolloutID("p1", 3, 43, 0),
		"prompt":      RolloutID("p2", 3, 42, 0),
		"pair":        PairID("p1", 3, r0, RolloutID("p1", 3, 42, 1)),
		"pair swap":   PairID("p1", 3, RolloutID("p1", 3, 42, 1), r0),
		"pair prompt": PairID("p2", 3, r0, RolloutID("p1", 3, 42, 1)),
	} {
		if other, dup := ids[id]; dup {
			t.Errorf("%s and %s share id %s", name, other, id)
		}
		ids[id] = name
	}
}
