package ifeval

import (
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"strings"

	"github.com/autoif/autoif/internal/pystr"
)

// args reads one instruction's kwargs the way Python binds build_description(**kwargs): a key
// the instruction does not take is an error (TypeError), JSON null is None, and None means
// "draw at random" wherever the official code does so.
type args struct {
	id   string
	kw   map[string]any
	used map[string]bool
	rnd  *rand.Rand
	err  error
}

func (a *args) fail(format string, v ...any) {
	if a.err == nil {
		a.err = fmt.Errorf("%s: "+format, append([]any{a.id}, v...)...)
	}
}

func (a *args) get(key string) (any, bool) {
	a.used[key] = true
	v, ok := a.kw[key]
	if !ok || v == nil {
		return nil, false
	}
	return v, true
}

// integer returns the kwarg as an int, or ok=false for None/absent.
func (a *args) integer(key string) (n int, ok bool) {
	v, ok := a.get(key)
	if !ok {
		return 0, false
	}
	f, isNum := v.(float64)
	if !isNum || f != math.Trunc(f) || math.Abs(f) > 1<<53 {
		a.fail("%s must be an integer, got %v", key, v)
		return 0, false
	}
	return int(f), true
}

// intOrRandom is the official `x = arg; if x is None or x < 0: x = random.randint(lo, hi)`.
func (a *args) intOrRandom(key string, lo, hi int) int {
	n, ok := a.integer(key)
	if !ok || n < 0 {
		return lo + a.rnd.IntN(hi-lo+1)
	}
	return n
}

func (a *args) str(key string) (string, bool) {
	v, ok := a.get(key)
	if !ok {
		return "", false
	}
	s, isStr := v.(string)
	if !isStr {
		a.fail("%s must be a string, got %v", key, v)
		return "", false
	}
	return s, true
}

// strStrippedOrRandom is `x = arg.strip() if isinstance(arg, str) else arg; if x is None:
// x = random.choice(options)`.
func (a *args) strStrippedOrRandom(key string, options []string) string {
	s, ok := a.str(key)
	if !ok {
		return options[a.rnd.IntN(len(options))]
	}
	return pystr.Strip(s)
}

func (a *args) strList(key string) []string {
	v, ok := a.get(key)
	if !ok {
		return nil
	}
	list, isList := v.([]any)
	if !isList {
		a.fail("%s must be a list of strings, got %v", key, v)
		return nil
	}
	out := make([]string, 0, len(list))
	for _, e := range list {
		s, isStr := e.(string)
		if !isStr {
			a.fail("%s must be a list of strings, got element %v", key, e)
			return nil
		}
		out = append(out, s)
	}
	return out
}

// comparisonRelations is _COMPARISON_RELATION.
var comparisonRelations = []string{relLessThan, relAtLeast}

const (
	relLessThan = "less than"
	relAtLeast  = "at least"
)

// relation is the official relation handling: None draws one, anything but the two
// relations is a ValueError.
func (a *args) relation(key string) string {
	s, ok := a.str(key)
	if !ok {
		return comparisonRelations[a.rnd.IntN(2)]
	}
	if !slices.Contains(comparisonRelations, s) {
		a.fail("%s must be %q or %q, got %q", key, relLessThan, relAtLeast, s)
	}
	return s
}

// done reports the first error, or a key the instruction does not take.
func (a *args) done() error {
	if a.err != nil {
		return a.err
	}
	var extra []string
	for k := range a.kw {
		if !a.used[k] {
			extra = append(extra, k)
		}
	}
	if len(extra) > 0 {
		slices.Sort(extra)
		return fmt.Errorf("%s: unexpected kwargs %s", a.id, strings.Join(extra, ", "))
	}
	return nil
}

func compare(relation string, n, threshold int) bool {
	if relation == relLessThan {
		return n < threshold
	}
	return n >= threshold
}
