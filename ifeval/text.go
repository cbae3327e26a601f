package ifeval

import (
	"regexp"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/autoif/autoif/internal/pystr"
	"github.com/autoif/autoif/langdetect"
	"github.com/autoif/autoif/punkt"
)

// Text is a response together with what the checks derive from it: the lowercased text, the
// word, sentence, bullet and paragraph counts, the detected language and so on. Each is
// worked out on first use and then shared by every instruction checked against the same
// Text: a rollout scores all constraints of a prompt on each response, the evaluation all of
// a row's instructions, so the work a response costs no longer grows with the number of
// constraints. A Text is not safe for concurrent use.
type Text struct {
	s    string
	done uint32 // bit per feature below

	strip, lower, lowerStrip, endLower string
	fold                               folded
	words, sentences, capitalWords     int
	paragraphs, placeholders, bullets  int
	highlights                         int
	lang                               string
	langErr                            bool
	isJSON, hasTitle, twoResponses     bool
	letters                            [26]int
	nth                                []string // the "\n\n" paragraphs
	nthCount                           int
	byPattern                          map[*regexp.Regexp]int // sections and postscript matches
}

const (
	fStrip = 1 << iota
	fLower
	fLowerStrip
	fEndLower
	fFold
	fWords
	fSentences
	fCapitalWords
	fParagraphs
	fPlaceholders
	fBullets
	fHighlights
	fLang
	fJSON
	fTitle
	fTwoResponses
	fLetters
	fNth
)

// NewText wraps a response; nothing is computed until a check asks for it.
func NewText(s string) *Text { return &Text{s: s} }

// String is the response itself.
func (t *Text) String() string { return t.s }

// need reports whether feature f is still to be computed, and marks it computed.
func (t *Text) need(f uint32) bool {
	if t.done&f != 0 {
		return false
	}
	t.done |= f
	return true
}

// Strip is str.strip().
func (t *Text) Strip() string {
	if t.need(fStrip) {
		t.strip = pystr.Strip(t.s)
	}
	return t.strip
}

// Blank reports whether the response is only whitespace: the official evaluation then
// counts no instruction as followed.
func (t *Text) Blank() bool { return t.Strip() == "" }

func (t *Text) lowerText() string {
	if t.need(fLower) {
		t.lower = pystr.Lower(t.s)
	}
	return t.lower
}

func (t *Text) lowerStripped() string {
	if t.need(fLowerStrip) {
		t.lowerStrip = pystr.Lower(t.Strip())
	}
	return t.lowerStrip
}

func (t *Text) endLowered() string {
	if t.need(fEndLower) {
		t.endLower = pystr.Lower(strings.Trim(t.Strip(), `"`))
	}
	return t.endLower
}

func (t *Text) folded() *folded {
	if t.need(fFold) {
		t.fold = foldText(t.s)
	}
	return &t.fold
}

func (t *Text) wordCount() int {
	if t.need(fWords) {
		t.words = countWords(t.s)
	}
	return t.words
}

func (t *Text) sentenceCount() int {
	if t.need(fSentences) {
		t.sentences = len(punkt.English().Sentences(t.s))
	}
	return t.sentences
}

func (t *Text) capitalWordCount() int {
	if t.need(fCapitalWords) {
		for _, w := range punkt.WordTokenize(t.s) {
			if pystr.IsUpperString(w) {
				t.capitalWords++
			}
		}
	}
	return t.capitalWords
}

// language is langdetect's verdict; ok is false when it finds no feature to go by.
func (t *Text) language() (lang string, ok bool) {
	if t.need(fLang) {
		var err error
		t.lang, err = langdetect.Detect(t.s)
		t.langErr = err != nil
	}
	return t.lang, !t.langErr
}

// letterCount counts an ASCII letter c (a-z: letter_frequency's letter always is one) in
// response.lower().
func (t *Text) letterCount(c rune) int {
	if t.need(fLetters) {
		for _, r := range t.lowerText() {
			if r >= 'a' && r <= 'z' {
				t.letters[r-'a']++
			}
		}
	}
	return t.letters[c-'a']
}

// patternCount memoises the number of matches of a pattern that depends on the
// instruction's arguments (a section splitter, a postscript marker) against the text the
// instruction names (the response or its lowercase form).
func (t *Text) patternCount(re *regexp.Regexp, s string) int {
	if n, ok := t.byPattern[re]; ok {
		return n
	}
	if t.byPattern == nil {
		t.byPattern = map[*regexp.Regexp]int{}
	}
	n := len(re.FindAllStringIndex(s, -1))
	t.byPattern[re] = n
	return n
}

// folded is the response with every character replaced by the smallest member of its
// simple case-folding orbit (unicode.SimpleFold), which is exactly the equivalence a Go
// (?i) literal matches by: the keyword checks then run as plain substring searches. Invalid
// UTF-8 bytes become U+FFFD, as Go's regexp decodes them. orig maps a byte offset of s
// (at a character boundary) to the response's; nil when the two coincide.
type folded struct {
	s    string
	orig []int32
}

// foldRune is the orbit's smallest member.
func foldRune(r rune) rune {
	if r < utf8.RuneSelf {
		if r >= 'a' && r <= 'z' { // 'K' < 'k' < U+212A, 'S' < 's' < U+017F
			r -= 'a' - 'A'
		}
		return r
	}
	m := r
	for f := unicode.SimpleFold(r); f != r; f = unicode.SimpleFold(f) {
		m = min(m, f)
	}
	return m
}

// foldString folds a keyword; it is valid UTF-8 from JSON, but treated as foldText does.
func foldString(s string) string { return foldText(s).s }

func foldText(s string) folded {
	// ASCII without lower case letters folds to itself.
	i := 0
	for ; i < len(s); i++ {
		if c := s[i]; c >= utf8.RuneSelf || (c >= 'a' && c <= 'z') {
			break
		}
	}
	if i == len(s) {
		return folded{s: s}
	}
	var b strings.Builder
	b.Grow(len(s))
	b.WriteString(s[:i])
	var orig []int32
	for i < len(s) {
		c := s[i]
		if c < utf8.RuneSelf {
			if c >= 'a' && c <= 'z' {
				c -= 'a' - 'A'
			}
			b.WriteByte(c)
			if orig != nil {
				orig = append(orig, int32(i))
			}
			i++
			continue
		}
		r, n := utf8.DecodeRuneInString(s[i:])
		f := foldRune(r)
		if orig == nil && utf8.RuneLen(f) != n {
			orig = make([]int32, b.Len(), len(s)+8)
			for j := range orig {
				orig[j] = int32(j)
			}
		}
		at := b.Len()
		b.WriteRune(f)
		if orig != nil {
			for range b.Len() - at {
				orig = append(orig, int32(i))
			}
		}
		i += n
	}
	if orig != nil {
		orig = append(orig, int32(len(s)))
	}
	return folded{s: b.String(), orig: orig}
}

// offset is the response's byte offset of the folded text's offset i (a character boundary).
func (f *folded) offset(i int) int {
	if f.orig == nil {
		return i
	}
	return int(f.orig[i])
}
