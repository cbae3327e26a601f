package ifeval

import (
	"regexp"
	"testing"
	"unicode/utf8"
)

// The keyword checks search the case-folded response for the case-folded keyword instead of
// running a (?i) regexp per keyword. Both must find the same things: found, counted
// (non-overlapping, leftmost first) and, for forbidden words, bounded by Python's \b. The
// reference for the last is the regexp search the folded one replaced.
func checkFoldedSearch(t *testing.T, text, word string) {
	t.Helper()
	if regexp.QuoteMeta(word) != word || !utf8.ValidString(word) {
		return // not plain text: such keywords stay regexps
	}
	re := regexp.MustCompile("(?i)" + word)
	kw, err := newKeyword(word)
	if err != nil {
		t.Fatal(err)
	}
	tx := NewText(text)
	if got, want := kw.found(tx), re.MatchString(text); got != want {
		t.Errorf("found %q in %q: %v, regexp %v", word, text, got, want)
	}
	if got, want := kw.count(tx), len(re.FindAllStringIndex(text, -1)); got != want {
		t.Errorf("count %q in %q: %d, regexp %d", word, text, got, want)
	}
	if word == "" {
		return
	}
	if got, want := searchWordBounded(tx, foldString(word)), regexpWordBounded(re, text); got != want {
		t.Errorf(`\b%s\b in %q: %v, regexp %v`, word, text, got, want)
	}
}

// regexpWordBounded is re.search(r"\b"+word+r"\b") by trying every match start of re.
func regexpWordBounded(re *regexp.Regexp, s string) bool {
	for pos := 0; pos <= len(s); {
		loc := re.FindStringIndex(s[pos:])
		if loc == nil {
			return false
		}
		start, end := pos+loc[0], pos+loc[1]
		if pyWordBoundary(s, start) && pyWordBoundary(s, end) {
			return true
		}
		_, size := utf8.DecodeRuneInString(s[start:])
		pos = start + max(size, 1)
	}
	return false
}

var foldCases = []struct{ text, word string }{
	{"The KEY is key, Key and kEy.", "key"},
	{"the \u212aelvin sign folds to k", "k"},  // K (3 bytes) matches 'k'
	{"ſtop: the long s", "stop"},              // ſ (2 bytes) matches 's'
	{"ǅemal Ǆ ǆ", "ǆ"},                        // a three-member orbit
	{"Σίσυφος ΣΊΣΥΦΟΣ σίσυφος ς", "σ"},        // σ, ς and Σ share an orbit
	{"bad \xff bytes \xffkey\xff", "key"},     // invalid UTF-8 next to a match
	{"\xff\xfe", "\ufffd"},                    // an invalid byte decodes as U+FFFD
	{"aaaa", "aa"},                            // non-overlapping count
	{"cat concatenate cat_s cats Cat", "cat"}, // \b on either side
	{"naïvecat caténa écat", "cat"},           // Unicode letters are \w for Python
	{"über Über ÜBER", "über"},
	{"İstanbul istanbul", "i"}, // İ folds to itself
	{"", "x"},
	{"abc", ""},
	{"a\u0307b ı I i", "i"},
}

func TestFoldedSearchIsTheRegexp(t *testing.T) {
	for _, c := range foldCases {
		checkFoldedSearch(t, c.text, c.word)
	}
}

func FuzzFoldedSearchIsTheRegexp(f *testing.F) {
	for _, c := range foldCases {
		f.Add(c.text, c.word)
	}
	f.Fuzz(checkFoldedSearch)
}
