package rollout

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"hash/fnv"
	"math/rand/v2"
	"slices"
	"strconv"
)

// Mode names a pair selection rule.
type Mode string

const (
	// ModeAutoIF is the paper's rule: chosen = score >= ChosenMin (0.5), rejected = score == 0,
	// up to MaxChosen (2) of one and MaxRejected (2) of the other, every chosen × rejected.
	ModeAutoIF Mode = "autoif"
	// ModeBestWorst pairs one highest-scored response with one lowest-scored response.
	ModeBestWorst Mode = "best-worst"
	// ModeMargin pairs every two responses whose scores differ by at least Margin.
	ModeMargin Mode = "margin"
)

// ParseMode reads a selection mode name as the CLI spells it.
func ParseMode(s string) (Mode, error) {
	switch m := Mode(s); m {
	case ModeAutoIF, ModeBestWorst, ModeMargin:
		return m, nil
	case "":
		return ModeAutoIF, nil
	}
	return "", fmt.Errorf("pair selection %q: want autoif, best-worst or margin", s)
}

// SelectOptions configure pair selection. The zero value is AutoIF's rule.
type SelectOptions struct {
	Mode Mode
	// ChosenMin is the lowest score a chosen response may have under ModeAutoIF (default 0.5).
	ChosenMin float64
	// MaxChosen and MaxRejected cap each side under ModeAutoIF (defaults 2 and 2, so at most
	// 4 pairs per prompt, as in the paper).
	MaxChosen, MaxRejected int
	// Margin is the smallest score difference ModeMargin pairs (default and minimum: any
	// positive difference; ties never pair).
	Margin float64
	// MaxPairs caps the pairs of one prompt under ModeMargin (0: no cap). When more qualify,
	// a seeded choice keeps MaxPairs of them.
	MaxPairs int
	// Seed makes the choice among more qualifying responses than a cap allows reproducible.
	Seed uint64
}

func (o SelectOptions) withDefaults() SelectOptions {
	if o.Mode == "" {
		o.Mode = ModeAutoIF
	}
	if o.ChosenMin <= 0 {
		o.ChosenMin = 0.5
	}
	if o.MaxChosen <= 0 {
		o.MaxChosen = 2
	}
	if o.MaxRejected <= 0 {
		o.MaxRejected = 2
	}
	return o
}

// Validate reports options no rule can use.
func (o SelectOptions) Validate() error {
	if _, err := ParseMode(string(o.Mode)); err != nil {
		return err
	}
	if o.ChosenMin > 1 {
		return fmt.Errorf("pair selection: chosen threshold %g above the highest score 1", o.ChosenMin)
	}
	if o.Margin < 0 || o.Margin > 1 {
		return fmt.Errorf("pair selection: margin %g: want 0 to 1", o.Margin)
	}
	return nil
}

// Candidate is one scored response of a prompt.
type Candidate struct {
	// Index is the response's position among the prompt's K samples.
	Index int
	Text  string
	Score float64
}

// IndexPair names a chosen and a rejected candidate by their Index.
type IndexPair struct{ Chosen, Rejected int }

// Selection is what one prompt's responses yielded.
type Selection struct {
	Pairs []IndexPair
	// Tie: every distinct response scored the same, so the prompt carries no preference.
	Tie bool
	// Identical counts responses dropped because an earlier one had the same text: the same
	// text on both sides of a pair teaches nothing, and twice on one side weighs it double.
	Identical int
}

// SelectPairs builds the preference pairs of one prompt's scored responses. promptID seeds
// the choice among more qualifying responses than a cap allows, so the same responses of
// the same prompt always give the same pairs.
func SelectPairs(promptID string, cands []Candidate, o SelectOptions) Selection {
	o = o.withDefaults()
	var sel Selection
	seen := make(map[string]bool, len(cands))
	uniq := make([]Candidate, 0, len(cands))
	for _, c := range cands {
		if seen[c.Text] {
			sel.Identical++
			continue
		}
		seen[c.Text] = true
		uniq = append(uniq, c)
	}
	if len(uniq) < 2 {
		// One distinct response is a tie with itself: nothing to prefer.
		sel.Tie = len(cands) >= 2
		return sel
	}
	lo, hi := uniq[0].Score, uniq[0].Score
	for _, c := range uniq[1:] {
		lo, hi = min(lo, c.Score), max(hi, c.Score)
	}
	if lo == hi {
		sel.Tie = true
		return sel
	}
	rng := rand.New(rand.NewPCG(o.Seed, hashString(promptID)))
	switch o.Mode {
	case ModeBestWorst:
		var best, worst []int
		for _, c := range uniq {
			if c.Score == hi {
				best = append(best, c.Index)
			}
			if c.Score == lo {
				worst = append(worst, c.Index)
			}
		}
		sel.Pairs = []IndexPair{{Chosen: pick(rng, best, 1)[0], Rejected: pick(rng, worst, 1)[0]}}
	case ModeMargin:
		margin := o.Margin
		var all []IndexPair
		for _, c := range uniq {
			for _, r := range uniq {
				if d := c.Score - r.Score; d > 0 && d >= margin {
					all = append(all, IndexPair{Chosen: c.Index, Rejected: r.Index})
				}
			}
		}
		if o.MaxPairs > 0 && len(all) > o.MaxPairs {
			rng.Shuffle(len(all), func(i, j int) { all[i], all[j] = all[j], all[i] })
			all = all[:o.MaxPairs]
			slices.SortFunc(all, func(a, b IndexPair) int {
				if a.Chosen != b.Chosen {
					return a.Chosen - b.Chosen
				}
				return a.Rejected - b.Rejected
			})
		}
		sel.Pairs = all
	default:
		var chosen, rejected []int
		for _, c := range uniq {
			switch {
			case c.Score >= o.ChosenMin:
				chosen = append(chosen, c.Index)
			case c.Score == 0:
				rejected = append(rejected, c.Index)
			}
		}
		chosen, rejected = pick(rng, chosen, o.MaxChosen), pick(rng, rejected, o.MaxRejected)
		for _, c := range chosen {
			for _, r := range rejected {
				sel.Pairs = append(sel.Pairs, IndexPair{Chosen: c, Rejected: r})
			}
		}
	}
	return sel
}

// pick returns n of idx chosen by rng (all of them when n covers them), in ascending order.
func pick(rng *rand.Rand, idx []int, n int) []int {
	if len(idx) <= n {
		return idx
	}
	c := slices.Clone(idx)
	rng.Shuffle(len(c), func(i, j int) { c[i], c[j] = c[j], c[i] })
	c = c[:n]
	slices.Sort(c)
	return c
}

func hashString(s string) uint64 {
	h := fnv.New64a()
	h.Write([]byte(s))
	return h.Sum64()
}

// RolloutID names one sampled response: the prompt, the policy version, the sampling seed of
// its step and its index among the prompt's samples. The same sample always gets the same id;
// a prompt sampled again (another step, another seed) gets new ones.
func RolloutID(promptID string, version int64, seed uint64, index int) string {
	return idOf("rollout", promptID, strconv.FormatInt(version, 10), strconv.FormatUint(seed, 10), strconv.Itoa(index))
}

// PairID names a pair by its prompt, policy version and the rollouts on each side.
func PairID(promptID string, version int64, chosenRollout, rejectedRollout string) string {
	return idOf("pair", promptID, strconv.FormatInt(version, 10), chosenRollout, rejectedRollout)
}

func idOf(parts ...string) string {
	h := sha256.New()
	var n [8]byte
	for _, p := range parts {
		// Length-prefixed, so ("ab","c") and ("a","bc") differ.
		binary.LittleEndian.PutUint64(n[:], uint64(len(p)))
		h.Write(n[:])
		h.Write([]byte(p))
	}
	return hex.EncodeToString(h.Sum(nil)[:16])
}
