// Package punkt is a Go port of NLTK 3.8's Punkt sentence tokenizer with the pre-trained
// English model (nltk_data tokenizers/punkt/PY3/english.pickle), and of nltk.word_tokenize,
// which the official IFEval checker uses to count sentences and words.
//
// Sentences equals PunktSentenceTokenizer.tokenize(text) (default PunktLanguageVars,
// realign_boundaries=True) and WordTokenize equals nltk.word_tokenize(text) on every golden
// in testdata. The regular expressions of nltk/tokenize/punkt.py and destructive.py are
// translated into plain matching code: Go's regexp has no lookaround and its \s, \w and \b
// are ASCII-only, while Python's are Unicode (see internal/pystr). Positions are byte
// offsets into the input; every offset falls on a character boundary, so each sentence is a
// substring of the input, as in Python.
package punkt

import (
	_ "embed"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"unicode/utf8"

	"github.com/autoif/autoif/internal/pystr"
)

//go:embed english.json
var englishJSON []byte

// Orthographic context flags, as in punkt.py: where a word type was seen in training and
// whether it began with an upper- or lower-case letter.
const (
	orthoBegUC = 1 << 1
	orthoMidUC = 1 << 2
	orthoUnkUC = 1 << 3
	orthoBegLC = 1 << 4
	orthoMidLC = 1 << 5
	orthoUnkLC = 1 << 6
	orthoUC    = orthoBegUC + orthoMidUC + orthoUnkUC
	orthoLC    = orthoBegLC + orthoMidLC + orthoUnkLC
)

// Tokenizer is a trained Punkt model. It is immutable and safe for concurrent use.
type Tokenizer struct {
	abbrevTypes  map[string]bool
	collocations map[[2]string]bool
	sentStarters map[string]bool
	orthoContext map[string]int
}

// params is the JSON form of PunktParameters (dumped from the pickle by NLTK 3.8).
type params struct {
	AbbrevTypes  []string       `json:"abbrev_types"`
	Collocations [][2]string    `json:"collocations"`
	SentStarters []string       `json:"sent_starters"`
	OrthoContext map[string]int `json:"ortho_context"`
}

// New builds a Tokenizer from Punkt parameters in the JSON layout of english.json.
func New(paramsJSON []byte) (*Tokenizer, error) {
	var p params
	if err := json.Unmarshal(paramsJSON, &p); err != nil {
		return nil, fmt.Errorf("punkt: parameters: %w", err)
	}
	if len(p.AbbrevTypes) == 0 || len(p.OrthoContext) == 0 {
		return nil, fmt.Errorf("punkt: parameters: no abbrev_types or ortho_context")
	}
	t := &Tokenizer{
		abbrevTypes:  make(map[string]bool, len(p.AbbrevTypes)),
		collocations: make(map[[2]string]bool, len(p.Collocations)),
		sentStarters: make(map[string]bool, len(p.SentStarters)),
		orthoContext: p.OrthoContext,
	}
	for _, a := range p.AbbrevTypes {
		t.abbrevTypes[a] = true
	}
	for _, c := range p.Collocations {
		t.collocations[c] = true
	}
	for _, s := range p.SentStarters {
		t.sentStarters[s] = true
	}
	return t, nil
}

var english = sync.OnceValue(func() *Tokenizer {
	t, err := New(englishJSON)
	if err != nil {
		panic(err) // the embedded model is part of the binary: a build defect, not bad input
	}
	return t
})

// English returns the English model the official IFEval checker loads
// (nltk:tokenizers/punkt/english.pickle), parsed once.
func English() *Tokenizer { return english() }

// Sentences splits text into sentences exactly as NLTK 3.8's
// PunktSentenceTokenizer.tokenize(text) does with realign_boundaries=True.
func (t *Tokenizer) Sentences(text string) []string {
	spans := t.realignBoundaries(text, t.slicesFromText(text))
	out := make([]string, len(spans))
	for i, s := range spans {
		out[i] = text[s.start:s.stop]
	}
	return out
}

// span is a Python slice [start:stop] in byte offsets.
type span struct{ start, stop int }

// of is text[s.start:s.stop] with Python's rule that a reversed slice is empty.
func (s span) of(text string) string {
	if s.start >= s.stop {
		return ""
	}
	return text[s.start:s.stop]
}

// periodMatch is one match of PunktLanguageVars.period_context_re(): a sentence-ending
// character followed (in a lookahead) by a non-word character or by whitespace and a token.
type periodMatch struct {
	pos          int // the '.', '?' or '!'
	afterTokEnd  int // end of the after_tok group, which starts at pos+1
	nextTokStart int // start of the next_tok group, or -1 when after_tok is punctuation
}

// isNonWordChar is _re_non_word_chars: characters that cannot appear within words.
func isNonWordChar(r rune) bool {
	switch r {
	case ')', '"', ';', '}', ']', '*', ':', '@', '\'', '(', '{', '[', '!', '?':
		return true
	}
	return false
}

func isSentEndChar(c byte) bool { return c == '.' || c == '?' || c == '!' }

// periodMatches runs period_context_re().finditer(text). Each match is the single end
// character (the rest is lookahead), so matches never overlap.
func periodMatches(text string) []periodMatch {
	var out []periodMatch
	for i := 0; i < len(text); i++ {
		if !isSentEndChar(text[i]) {
			continue
		}
		j := i + 1
		if j >= len(text) {
			continue
		}
		r, w := utf8.DecodeRuneInString(text[j:])
		if isNonWordChar(r) {
			out = append(out, periodMatch{pos: i, afterTokEnd: j + w, nextTokStart: -1})
			continue
		}
		k := skipSpace(text, j)
		if k == j || k == len(text) {
			continue
		}
		e := skipNonSpace(text, k)
		out = append(out, periodMatch{pos: i, afterTokEnd: e, nextTokStart: k})
	}
	return out
}

func skipSpace(s string, i int) int {
	for i < len(s) {
		r, w := utf8.DecodeRuneInString(s[i:])
		if !pystr.IsSpace(r) {
			break
		}
		i += w
	}
	return i
}

func skipNonSpace(s string, i int) int {
	for i < len(s) {
		r, w := utf8.DecodeRuneInString(s[i:])
		if pystr.IsSpace(r) {
			break
		}
		i += w
	}
	return i
}

// lastASCIISpace is _get_last_whitespace_index: the index of the last character of
// string.whitespace (ASCII only), or 0 when there is none (an index of 0 reads the same).
func lastASCIISpace(s string) int {
	for i := len(s) - 1; i >= 0; i-- {
		switch s[i] {
		case ' ', '\t', '\n', '\r', '\v', '\f':
			return i
		}
	}
	return 0
}

// candidate is one potential sentence break and the text around it that decides it.
type candidate struct {
	m       periodMatch
	context string
}

// matchPotentialEndContexts is _match_potential_end_contexts: each match with the word
// before it; runs like "!!!" collapse onto their last character.
func matchPotentialEndContexts(text string) []candidate {
	var out []candidate
	prev := span{}
	var prevMatch *periodMatch
	emit := func() {
		ctx := prev.of(text) + text[prevMatch.pos:prevMatch.afterTokEnd]
		out = append(out, candidate{m: *prevMatch, context: ctx})
	}
	matches := periodMatches(text)
	for i := range matches {
		m := &matches[i]
		before := span{prev.stop, m.pos}.of(text)
		idx := lastASCIISpace(before)
		if idx != 0 {
			idx += prev.stop + 1
		} else {
			idx = prev.start
		}
		word := span{idx, m.pos}
		if prevMatch != nil && prev.stop <= word.start {
			emit()
		}
		prevMatch = m
		prev = word
	}
	if prevMatch != nil {
		emit()
	}
	return out
}

// slicesFromText is _slices_from_text.
func (t *Tokenizer) slicesFromText(text string) []span {
	var out []span
	lastBreak := 0
	for _, c := range matchPotentialEndContexts(text) {
		if t.textContainsSentbreak(c.context) {
			out = append(out, span{lastBreak, c.m.pos + 1})
			if c.m.nextTokStart >= 0 {
				lastBreak = c.m.nextTokStart
			} else {
				lastBreak = c.m.pos + 1
			}
		}
	}
	return append(out, span{lastBreak, len(pystr.TrimRightSpace(text))})
}

// realignBoundaries is _realign_boundaries: closing quotes and brackets after a sentence
// end move into the sentence they close.
func (t *Tokenizer) realignBoundaries(text string, slices []span) []span {
	var out []span
	realign := 0
	for i, s1 := range slices {
		s1 = span{s1.start + realign, s1.stop}
		if i+1 == len(slices) {
			if s1.of(text) != "" {
				out = append(out, s1)
			}
			continue
		}
		s2 := slices[i+1]
		if n, end, ok := boundaryRealignment(s2.of(text)); ok {
			out = append(out, span{s1.start, s2.start + n})
			realign = end
		} else {
			realign = 0
			if s1.of(text) != "" {
				out = append(out, s1)
			}
		}
	}
	return out
}

func isRealignChar(c byte) bool {
	return c == '"' || c == '\'' || c == ')' || c == ']' || c == '}'
}

// boundaryRealignment matches re_boundary_realignment, ["\')\]}]+?(?:\s+|(?=--)|$) with
// MULTILINE, at the start of s. It returns the length of the match with trailing whitespace
// stripped and the length of the whole match.
func boundaryRealignment(s string) (stripped, end int, ok bool) {
	for n := 1; n <= len(s) && isRealignChar(s[n-1]); n++ {
		if k := skipSpace(s, n); k > n {
			return n, k, true
		}
		if strings.HasPrefix(s[n:], "--") || n == len(s) || s[n] == '\n' {
			return n, n, true
		}
	}
	return 0, 0, false
}

// token is PunktToken with the annotations the tokenizer (not the trainer) uses.
type token struct {
	tok         string
	typ         string // lower-cased, numbers replaced by ##number##
	periodFinal bool
	sentbreak   bool
	abbr        bool
	ellipsis    bool
}

func newToken(tok string) token {
	return token{tok: tok, typ: tokenType(tok), periodFinal: strings.HasSuffix(tok, ".")}
}

// tokenType is PunktToken._get_type: _RE_NUMERIC (^-?[\.,]?\d[\d,\.-]*\.?$) replaced by
// ##number## in the lower-cased token.
func tokenType(tok string) string {
	low := pystr.Lower(tok)
	s := low
	s = strings.TrimPrefix(s, "-")
	if s != "" && (s[0] == '.' || s[0] == ',') {
		s = s[1:]
	}
	r, w := utf8.DecodeRuneInString(s)
	if s == "" || !pystr.IsDecimal(r) {
		return low
	}
	for _, r := range s[w:] {
		if !(pystr.IsDecimal(r) || r == ',' || r == '.' || r == '-') {
			return low
		}
	}
	return "##number##"
}

func (k *token) typeNoPeriod() string {
	if len(k.typ) > 1 && k.typ[len(k.typ)-1] == '.' {
		return k.typ[:len(k.typ)-1]
	}
	return k.typ
}

func (k *token) typeNoSentperiod() string {
	if k.sentbreak {
		return k.typeNoPeriod()
	}
	return k.typ
}

func (k *token) firstRune() rune {
	r, _ := utf8.DecodeRuneInString(k.tok)
	return r
}

func (k *token) firstUpper() bool { return pystr.IsUpper(k.firstRune()) }
func (k *token) firstLower() bool { return pystr.IsLower(k.firstRune()) }
func (k *token) isNumber() bool   { return strings.HasPrefix(k.typ, "##number##") }

// isEllipsis is _RE_ELLIPSIS, \.\.+$: two or more periods and nothing else.
func (k *token) isEllipsis() bool {
	return len(k.tok) >= 2 && strings.Trim(k.tok, ".") == ""
}

// isInitial is _RE_INITIAL, [^\W\d]\.$: one letter (or '_') and a period.
func (k *token) isInitial() bool {
	r, w := utf8.DecodeRuneInString(k.tok)
	return w+1 == len(k.tok) && k.tok[w] == '.' && pystr.IsWord(r) && !pystr.IsDecimal(r)
}

// tokenizeWords is _tokenize_words: the Punkt word tokenizer, line by line.
func tokenizeWords(text string) []token {
	var out []token
	for _, line := range strings.Split(text, "\n") {
		for _, w := range punktWords(line) {
			out = append(out, newToken(w))
		}
	}
	return out
}

// textContainsSentbreak reports whether a token other than the last is a sentence break.
func (t *Tokenizer) textContainsSentbreak(text string) bool {
	toks := tokenizeWords(text)
	for i := range toks {
		t.firstPass(&toks[i])
	}
	for i := range toks {
		if i+1 < len(toks) {
			t.secondPass(&toks[i], &toks[i+1])
		}
		if toks[i].sentbreak {
			return i+1 < len(toks)
		}
	}
	return false
}

// firstPass is _first_pass_annotation: decisions from the token's own type.
func (t *Tokenizer) firstPass(k *token) {
	switch {
	case k.tok == "." || k.tok == "?" || k.tok == "!":
		k.sentbreak = true
	case k.isEllipsis():
		k.ellipsis = true
	case k.periodFinal && !strings.HasSuffix(k.tok, ".."):
		low := pystr.Lower(k.tok[:len(k.tok)-1])
		if t.abbrevTypes[low] || t.abbrevTypes[low[strings.LastIndexByte(low, '-')+1:]] {
			k.abbr = true
		} else {
			k.sentbreak = true
		}
	}
}

// secondPass is _second_pass_annotation: the collocation, orthographic and sentence-starter
// heuristics decide a period-final token from the token after it.
func (t *Tokenizer) secondPass(k1, k2 *token) {
	if !k1.periodFinal {
		return
	}
	typ := k1.typeNoPeriod()
	nextTyp := k2.typeNoSentperiod()
	initial := k1.isInitial()
	if t.collocations[[2]string{typ, nextTyp}] {
		k1.sentbreak, k1.abbr = false, true
		return
	}
	if (k1.abbr || k1.ellipsis) && !initial {
		h := t.orthoHeuristic(k2)
		if h == orthoYes {
			k1.sentbreak = true
			return
		}
		if k2.firstUpper() && t.sentStarters[nextTyp] {
			k1.sentbreak = true
			return
		}
	}
	if initial || typ == "##number##" {
		h := t.orthoHeuristic(k2)
		if h == orthoNo {
			k1.sentbreak, k1.abbr = false, true
			return
		}
		if h == orthoUnknown && initial && k2.firstUpper() && t.orthoContext[nextTyp]&orthoLC == 0 {
			k1.sentbreak, k1.abbr = false, true
		}
	}
}

type orthoVerdict int

const (
	orthoUnknown orthoVerdict = iota
	orthoYes
	orthoNo
)

// orthoHeuristic is _ortho_heuristic: whether the token looks like the first of a sentence.
func (t *Tokenizer) orthoHeuristic(k *token) orthoVerdict {
	switch k.tok {
	case ";", ":", ",", ".", "!", "?":
		return orthoNo
	}
	oc := t.orthoContext[k.typeNoSentperiod()]
	if k.firstUpper() && oc&orthoLC != 0 && oc&orthoMidUC == 0 {
		return orthoYes
	}
	if k.firstLower() && (oc&orthoUC != 0 || oc&orthoBegLC == 0) {
		return orthoNo
	}
	return orthoUnknown
}
