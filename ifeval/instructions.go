package ifeval

import (
	"fmt"
	"math/rand/v2"
	"regexp"
	"slices"
	"strings"
	"sync"
	"unicode/utf8"

	"github.com/autoif/autoif/internal/pystr"
)

// Instruction is one verifiable instruction built from its kwargs: the official
// Instruction after build_description, reduced to check_following.
type Instruction interface {
	// Follows reports whether the response follows the instruction.
	Follows(t *Text) bool
}

type builder func(a *args) (Instruction, error)

// registry is instructions_registry.INSTRUCTION_DICT: the 25 instruction types IFEval uses.
var registry = map[string]builder{
	"keywords:existence":                            buildKeywordExistence,
	"keywords:frequency":                            buildKeywordFrequency,
	"keywords:forbidden_words":                      buildForbiddenWords,
	"keywords:letter_frequency":                     buildLetterFrequency,
	"language:response_language":                    buildResponseLanguage,
	"length_constraints:number_sentences":           buildNumberSentences,
	"length_constraints:number_paragraphs":          buildNumberParagraphs,
	"length_constraints:number_words":               buildNumberWords,
	"length_constraints:nth_paragraph_first_word":   buildNthParagraphFirstWord,
	"detectable_content:number_placeholders":        buildPlaceholders,
	"detectable_content:postscript":                 buildPostscript,
	"detectable_format:number_bullet_lists":         buildBulletLists,
	"detectable_format:constrained_response":        buildConstrainedResponse,
	"detectable_format:number_highlighted_sections": buildHighlights,
	"detectable_format:multiple_sections":           buildSections,
	"detectable_format:json_format":                 buildJSONFormat,
	"detectable_format:title":                       buildTitle,
	"combination:two_responses":                     buildTwoResponses,
	"combination:repeat_prompt":                     buildRepeatPrompt,
	"startend:end_checker":                          buildEndChecker,
	"change_case:capital_word_frequency":            buildCapitalWordFrequency,
	"change_case:english_capital":                   buildEnglishCapital,
	"change_case:english_lowercase":                 buildEnglishLowercase,
	"punctuation:no_comma":                          buildNoComma,
	"startend:quotation":                            buildQuotation,
}

// InstructionIDs lists the supported instruction ids, sorted.
func InstructionIDs() []string {
	ids := make([]string, 0, len(registry))
	for id := range registry {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	return ids
}

// Build makes the instruction `id` from its kwargs (decoded JSON: numbers are float64) exactly
// as the official build_description(**kwargs) does. Where the official code draws an absent
// argument at random, Build draws from rnd; a nil rnd uses a fixed seed. The official data
// hits that only in keys 1122 and 1129, whose letter ('#', '!') is not an ASCII letter, so
// the official checker counts a random letter there. Ids may carry M-IFEval's "en:" prefix.
func Build(id string, kwargs map[string]any, rnd *rand.Rand) (Instruction, error) {
	b, ok := registry[strings.TrimPrefix(id, "en:")]
	if !ok {
		return nil, fmt.Errorf("unknown instruction id %q", id)
	}
	if rnd == nil {
		rnd = rand.New(rand.NewPCG(1, 2))
	}
	a := &args{id: id, kw: kwargs, used: map[string]bool{}, rnd: rnd}
	in, err := b(a)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", id, err)
	}
	if err := a.done(); err != nil {
		return nil, err
	}
	return in, nil
}

// Random choices the official code makes, kept to its ranges.
var (
	starterEndOptions = []string{"Any other questions?", "Is there anything else I can help with?"}
	sectionSpliters   = []string{"Section", "SECTION"}
	postscriptMarkers = []string{"P.S.", "P.P.S"}
	asciiLetters      = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
)

// errRandomWords: the official code draws missing keywords from its own word list; an
// evaluation row must name them.
func errRandomWords(key string) error {
	return fmt.Errorf("%s is required (the official checker would draw random words)", key)
}

// pyPattern compiles a string the official code uses as a Python regular expression. Plain
// text (every kwarg in the official data) is matched literally; anything else must be valid
// in both dialects.
func pyPattern(prefix, pattern string) (*regexp.Regexp, error) {
	if regexp.QuoteMeta(pattern) == pattern {
		return regexp.MustCompile(prefix + pattern), nil
	}
	re, err := regexp.Compile(prefix + pattern)
	if err != nil {
		return nil, fmt.Errorf("pattern %q: %w", pattern, err)
	}
	return re, nil
}

// patterns holds the regexps built from arguments (section splitters, postscript markers),
// one per pattern, so that constraints with the same argument share the match count a Text
// keeps per regexp.
var patterns sync.Map // string -> *regexp.Regexp

// sharedPattern compiles a pattern that is valid by construction, once.
func sharedPattern(pattern string) *regexp.Regexp {
	if re, ok := patterns.Load(pattern); ok {
		return re.(*regexp.Regexp)
	}
	re, _ := patterns.LoadOrStore(pattern, regexp.MustCompile(pattern))
	return re.(*regexp.Regexp)
}

// keywords:existence — every keyword is found (as a regex, ignoring case).
type keywordExistence struct{ kws []keyword }

// keyword is a pattern searched ignoring case. Plain text (every keyword in the official data)
// is a substring search of the case-folded response, which finds what the (?i) regexp finds
// (TestFoldedSearchIsTheRegexp); anything else stays a regexp.
type keyword struct {
	re     *regexp.Regexp
	folded string // set when the pattern is plain text
	plain  bool
}

func newKeyword(pattern string) (keyword, error) {
	re, err := pyPattern("(?i)", pattern)
	if err != nil {
		return keyword{}, err
	}
	if regexp.QuoteMeta(pattern) == pattern {
		return keyword{re: re, folded: foldString(pattern), plain: true}, nil
	}
	return keyword{re: re}, nil
}

func (k keyword) found(t *Text) bool {
	if k.plain {
		return strings.Contains(t.folded().s, k.folded)
	}
	return k.re.MatchString(t.s)
}

// count is len(re.findall(...)): non-overlapping, leftmost first.
func (k keyword) count(t *Text) int {
	if k.plain {
		return strings.Count(t.folded().s, k.folded)
	}
	return len(k.re.FindAllStringIndex(t.s, -1))
}

func buildKeywordExistence(a *args) (Instruction, error) {
	kws := a.strList("keywords")
	if a.err == nil && len(kws) == 0 {
		return nil, errRandomWords("keywords")
	}
	slices.Sort(kws)
	k := keywordExistence{}
	for _, w := range kws {
		kw, err := newKeyword(w)
		if err != nil {
			return nil, err
		}
		k.kws = append(k.kws, kw)
	}
	return k, nil
}

func (k keywordExistence) Follows(t *Text) bool {
	for _, kw := range k.kws {
		if !kw.found(t) {
			return false
		}
	}
	return true
}

// keywords:frequency — re.findall(keyword, response, IGNORECASE) against the relation.
type keywordFrequency struct {
	kw       keyword
	n        int
	relation string
}

func buildKeywordFrequency(a *args) (Instruction, error) {
	kw, _ := a.str("keyword")
	if a.err == nil && kw == "" {
		return nil, errRandomWords("keyword")
	}
	k := keywordFrequency{n: a.intOrRandom("frequency", 1, 3), relation: a.relation("relation")}
	var err error
	if k.kw, err = newKeyword(pystr.Strip(kw)); err != nil {
		return nil, err
	}
	return k, nil
}

func (k keywordFrequency) Follows(t *Text) bool {
	return compare(k.relation, k.kw.count(t), k.n)
}

// keywords:forbidden_words — no word matches r"\b"+word+r"\b" ignoring case. Python's \b is
// Unicode-aware, Go's is not, so for plain words the boundaries are checked here.
type forbiddenWords struct {
	res    []*regexp.Regexp
	folded []string // "" where the word is a pattern rather than plain text
}

func buildForbiddenWords(a *args) (Instruction, error) {
	words := a.strList("forbidden_words")
	if a.err == nil && len(words) == 0 {
		return nil, errRandomWords("forbidden_words")
	}
	slices.Sort(words)
	words = slices.Compact(words)
	f := forbiddenWords{}
	for _, w := range words {
		plain := regexp.QuoteMeta(w) == w
		pattern := w
		if !plain {
			pattern = `\b` + w + `\b`
		}
		re, err := pyPattern("(?i)", pattern)
		if err != nil {
			return nil, err
		}
		f.res = append(f.res, re)
		folded := ""
		if plain {
			folded = foldString(w)
		}
		f.folded = append(f.folded, folded)
	}
	return f, nil
}

func (f forbiddenWords) Follows(t *Text) bool {
	for i, re := range f.res {
		if f.folded[i] == "" {
			if re.MatchString(t.s) {
				return false
			}
			continue
		}
		if searchWordBounded(t, f.folded[i]) {
			return false
		}
	}
	return true
}

// searchWordBounded is re.search(r"\b"+word+r"\b", s, re.IGNORECASE) for a plain word: an
// occurrence of the word, ignoring case, with a Python word boundary on both sides, trying
// every start position as a backtracker does.
func searchWordBounded(t *Text, word string) bool {
	f := t.folded()
	for pos := 0; pos <= len(f.s); {
		i := strings.Index(f.s[pos:], word)
		if i < 0 {
			return false
		}
		start := pos + i
		if pyWordBoundary(t.s, f.offset(start)) && pyWordBoundary(t.s, f.offset(start+len(word))) {
			return true
		}
		_, size := utf8.DecodeRuneInString(f.s[start:])
		pos = start + max(size, 1)
	}
	return false
}

// pyWordBoundary is Python's \b at byte offset i: exactly one side is a \w character.
func pyWordBoundary(s string, i int) bool {
	before, after := false, false
	if i > 0 {
		r, _ := utf8.DecodeLastRuneInString(s[:i])
		before = pystr.IsWord(r)
	}
	if i < len(s) {
		r, _ := utf8.DecodeRuneInString(s[i:])
		after = pystr.IsWord(r)
	}
	return before != after
}

// keywords:letter_frequency — occurrences of one letter in response.lower(). The letter must
// be a single ASCII letter, otherwise (as in the 2023 checker that produced the official
// outputs) a random ASCII letter is used.
type letterFrequency struct {
	letter   rune
	n        int
	relation string
}

func buildLetterFrequency(a *args) (Instruction, error) {
	s, _ := a.str("letter")
	l := letterFrequency{}
	low := pystr.Lower(s)
	if utf8.RuneCountInString(s) != 1 || utf8.RuneCountInString(low) != 1 || low[0] < 'a' || low[0] > 'z' {
		l.letter = rune(asciiLetters[a.rnd.IntN(len(asciiLetters))])
	} else {
		l.letter = rune(low[0])
	}
	l.letter = []rune(pystr.Lower(string(l.letter)))[0]
	l.n = a.intOrRandom("let_frequency", 1, 10)
	l.relation = a.relation("let_relation")
	return l, nil
}

func (l letterFrequency) Follows(t *Text) bool {
	return compare(l.relation, t.letterCount(l.letter), l.n)
}

// language:response_language — langdetect's verdict equals the language; no detectable
// feature counts as followed.
type responseLanguage struct{ lang string }

// languageCodes is instructions_util.LANGUAGE_CODES (the codes drawn when none is given).
var languageCodes = []string{"en", "es", "pt", "ar", "hi", "fr", "ru", "de", "ja", "it", "bn", "uk",
	"th", "ur", "ta", "te", "bg", "ko", "pl", "he", "fa", "vi", "ne", "sw", "kn", "mr", "gu", "pa",
	"ml", "fi"}

func buildResponseLanguage(a *args) (Instruction, error) {
	s, ok := a.str("language")
	if !ok {
		s = languageCodes[a.rnd.IntN(len(languageCodes))]
	}
	return responseLanguage{lang: s}, nil
}

func (l responseLanguage) Follows(t *Text) bool {
	got, ok := t.language()
	return !ok || got == l.lang
}

// length_constraints:number_sentences — Punkt's sentence count against the relation.
type numberSentences struct {
	n        int
	relation string
}

func buildNumberSentences(a *args) (Instruction, error) {
	return numberSentences{n: a.intOrRandom("num_sentences", 1, 20), relation: a.relation("relation")}, nil
}

func (s numberSentences) Follows(t *Text) bool {
	return compare(s.relation, t.sentenceCount(), s.n)
}

// length_constraints:number_paragraphs — exactly n paragraphs between `***` dividers; an
// empty paragraph is allowed only first or last.
type numberParagraphs struct{ n int }

func buildNumberParagraphs(a *args) (Instruction, error) {
	return numberParagraphs{n: a.intOrRandom("num_paragraphs", 1, 5)}, nil
}

func (p numberParagraphs) Follows(t *Text) bool { return t.paragraphCount() == p.n }

// paragraphCount is the number of paragraphs between `***` dividers, -1 when one in the
// middle is empty.
func (t *Text) paragraphCount() int {
	if !t.need(fParagraphs) {
		return t.paragraphs
	}
	paragraphs := splitParagraphs(t.s)
	n := len(paragraphs)
	for i, para := range paragraphs {
		if pystr.Strip(para) == "" {
			if i == 0 || i == len(paragraphs)-1 {
				n--
			} else {
				n = -1
				break
			}
		}
	}
	t.paragraphs = n
	return n
}

// length_constraints:number_words — `\w+` runs against the relation.
type numberWords struct {
	n        int
	relation string
}

func buildNumberWords(a *args) (Instruction, error) {
	return numberWords{n: a.intOrRandom("num_words", 100, 500), relation: a.relation("relation")}, nil
}

func (w numberWords) Follows(t *Text) bool { return compare(w.relation, t.wordCount(), w.n) }

// length_constraints:nth_paragraph_first_word — n paragraphs separated by "\n\n", and the
// nth starts with the word.
type nthParagraphFirstWord struct {
	num, nth  int
	firstWord string
}

func buildNthParagraphFirstWord(a *args) (Instruction, error) {
	p := nthParagraphFirstWord{num: a.intOrRandom("num_paragraphs", 1, 5)}
	nth, ok := a.integer("nth_paragraph")
	if !ok || nth <= 0 || nth > p.num {
		nth = 1 + a.rnd.IntN(p.num+1)
	}
	p.nth = nth
	w, ok := a.str("first_word")
	if a.err == nil && !ok {
		return nil, errRandomWords("first_word")
	}
	p.firstWord = pystr.Lower(w)
	return p, nil
}

func (p nthParagraphFirstWord) Follows(t *Text) bool {
	if t.need(fNth) {
		t.nth = strings.Split(t.s, "\n\n")
		t.nthCount = len(t.nth)
		for _, para := range t.nth {
			if pystr.Strip(para) == "" {
				t.nthCount--
			}
		}
	}
	paragraphs, n := t.nth, t.nthCount
	if p.nth > n {
		return false
	}
	para := pystr.Strip(paragraphs[p.nth-1])
	if para == "" {
		return false
	}
	word := strings.TrimLeft(strings.TrimLeft(pystr.Fields(para)[0], "'"), `"`)
	var first strings.Builder
	for _, c := range word {
		if strings.ContainsRune(`.,?!'"`, c) {
			break
		}
		first.WriteString(pystr.Lower(string(c)))
	}
	return n == p.num && first.String() == p.firstWord
}

// detectable_content:number_placeholders — at least n `[...]` on one line each.
type placeholders struct{ n int }

var placeholderRe = regexp.MustCompile(`\[.*?\]`)

func buildPlaceholders(a *args) (Instruction, error) {
	return placeholders{n: a.intOrRandom("num_placeholders", 1, 4)}, nil
}

func (p placeholders) Follows(t *Text) bool {
	if t.need(fPlaceholders) {
		t.placeholders = len(placeholderRe.FindAllStringIndex(t.s, -1))
	}
	return t.placeholders >= p.n
}

// detectable_content:postscript — a line (of the lowercased response) holding the marker:
// re.search(r"\s*p\.\s?s\..*$" (P.S.), r"\s*p\.\s?p\.\s?s.*$" (P.P.S) or r"\s*" + marker +
// ".*$", MULTILINE). A plain marker is searched as hasPostscript's parts; one holding regexp
// syntax stays a regexp.
type postscript struct {
	parts []string
	re    *regexp.Regexp
}

func buildPostscript(a *args) (Instruction, error) {
	marker := a.strStrippedOrRandom("postscript_marker", postscriptMarkers)
	switch marker {
	case "P.P.S":
		return postscript{parts: []string{"p.", "p.", "s"}}, nil
	case "P.S.":
		return postscript{parts: []string{"p.", "s."}}, nil
	}
	lower := pystr.Lower(marker)
	if regexp.QuoteMeta(lower) == lower {
		return postscript{parts: []string{lower}}, nil
	}
	re, err := pyPattern("", lower)
	if err != nil {
		return nil, err
	}
	return postscript{re: sharedPattern(`(?m)` + pyS + `*` + re.String() + `.*$`)}, nil
}

func (p postscript) Follows(t *Text) bool {
	if p.re != nil {
		return t.patternCount(p.re, t.lowerText()) > 0
	}
	return hasPostscript(t.lowerText(), p.parts)
}

// detectable_format:number_bullet_lists — exactly n lines starting with `*` or `-` bullets
// (countBullets).
type bulletLists struct{ n int }

func buildBulletLists(a *args) (Instruction, error) {
	return bulletLists{n: a.intOrRandom("num_bullets", 1, 5)}, nil
}

func (b bulletLists) Follows(t *Text) bool {
	if t.need(fBullets) {
		t.bullets = countBullets(t.s)
	}
	return t.bullets == b.n
}

// detectable_format:constrained_response — contains one of the three answers.
type constrainedResponse struct{}

var constrainedOptions = []string{"My answer is yes.", "My answer is no.", "My answer is maybe."}

func buildConstrainedResponse(*args) (Instruction, error) { return constrainedResponse{}, nil }

func (constrainedResponse) Follows(t *Text) bool {
	r := t.Strip()
	for _, o := range constrainedOptions {
		if strings.Contains(r, o) {
			return true
		}
	}
	return false
}

// detectable_format:number_highlighted_sections — at least n non-blank *x* (and **x**, which
// count again) spans.
type highlights struct{ n int }

var (
	singleHighlight = regexp.MustCompile(`\*[^\n\*]*\*`)
	doubleHighlight = regexp.MustCompile(`\*\*[^\n\*]*\*\*`)
)

func buildHighlights(a *args) (Instruction, error) {
	return highlights{n: a.intOrRandom("num_highlights", 1, 4)}, nil
}

func (h highlights) Follows(t *Text) bool {
	if t.need(fHighlights) {
		t.highlights = countHighlights(t.s)
	}
	return t.highlights >= h.n
}

func countHighlights(r string) int {
	n := 0
	for _, m := range singleHighlight.FindAllString(r, -1) {
		if pystr.Strip(strings.Trim(m, "*")) != "" {
			n++
		}
	}
	for _, m := range doubleHighlight.FindAllString(r, -1) {
		if pystr.Strip(strings.TrimSuffix(strings.TrimPrefix(m, "**"), "**")) != "" {
			n++
		}
	}
	return n
}

// detectable_format:multiple_sections — at least n "<spliter> <digits>" markers.
type sections struct {
	re *regexp.Regexp
	n  int
}

func buildSections(a *args) (Instruction, error) {
	spliter := a.strStrippedOrRandom("section_spliter", sectionSpliters)
	n := a.intOrRandom("num_sections", 1, 5)
	re, err := pyPattern("", spliter)
	if err != nil {
		return nil, err
	}
	return sections{re: sharedPattern(pyS + `?` + re.String() + pyS + `?` + pyD + `+` + pyS + `?`), n: n}, nil
}

func (s sections) Follows(t *Text) bool { return t.patternCount(s.re, t.s) >= s.n }

// detectable_format:json_format — the response, less a ``` fence, is JSON for Python.
type jsonFormat struct{}

func buildJSONFormat(*args) (Instruction, error) { return jsonFormat{}, nil }

func (jsonFormat) Follows(t *Text) bool {
	if t.need(fJSON) {
		r := t.Strip()
		for _, p := range []string{"```json", "```Json", "```JSON", "```"} {
			r = strings.TrimPrefix(r, p)
		}
		r = pystr.Strip(strings.TrimSuffix(r, "```"))
		t.isJSON = pyJSONLoads(r)
	}
	return t.isJSON
}

// detectable_format:title — a non-blank <<title>> on one line.
type title struct{}

var titleRe = regexp.MustCompile(`<<[^\n]+>>`)

func buildTitle(*args) (Instruction, error) { return title{}, nil }

func (title) Follows(t *Text) bool {
	if t.need(fTitle) {
		for _, m := range titleRe.FindAllString(t.s, -1) {
			if pystr.Strip(strings.TrimRight(strings.TrimLeft(m, "<"), ">")) != "" {
				t.hasTitle = true
				break
			}
		}
	}
	return t.hasTitle
}

// combination:two_responses — two different non-blank responses around "******".
type twoResponses struct{}

func buildTwoResponses(*args) (Instruction, error) { return twoResponses{}, nil }

func (twoResponses) Follows(t *Text) bool {
	if t.need(fTwoResponses) {
		t.twoResponses = isTwoResponses(t.s)
	}
	return t.twoResponses
}

func isTwoResponses(r string) bool {
	var valid []string
	parts := strings.Split(r, "******")
	for i, p := range parts {
		if pystr.Strip(p) == "" {
			if i != 0 && i != len(parts)-1 {
				return false
			}
		} else {
			valid = append(valid, p)
		}
	}
	return len(valid) == 2 && pystr.Strip(valid[0]) != pystr.Strip(valid[1])
}

// combination:repeat_prompt — the response starts with the prompt, ignoring case.
type repeatPrompt struct{ prefix string }

func buildRepeatPrompt(a *args) (Instruction, error) {
	p, _ := a.str("prompt_to_repeat")
	if a.err == nil && p == "" {
		return nil, fmt.Errorf("prompt_to_repeat must be set")
	}
	return repeatPrompt{prefix: pystr.Lower(pystr.Strip(p))}, nil
}

func (p repeatPrompt) Follows(t *Text) bool { return strings.HasPrefix(t.lowerStripped(), p.prefix) }

// startend:end_checker — the response (less surrounding quotes) ends with the phrase,
// ignoring case.
type endChecker struct{ suffix string }

func buildEndChecker(a *args) (Instruction, error) {
	return endChecker{suffix: pystr.Lower(pystr.Strip(a.strStrippedOrRandom("end_phrase", starterEndOptions)))}, nil
}

func (e endChecker) Follows(t *Text) bool { return strings.HasSuffix(t.endLowered(), e.suffix) }

// change_case:capital_word_frequency — nltk.word_tokenize tokens that are isupper(), against
// the relation.
type capitalWordFrequency struct {
	n        int
	relation string
}

func buildCapitalWordFrequency(a *args) (Instruction, error) {
	// Unlike the other counts, a negative frequency is kept as given.
	n, ok := a.integer("capital_frequency")
	if !ok {
		n = 1 + a.rnd.IntN(20)
	}
	return capitalWordFrequency{n: n, relation: a.relation("capital_relation")}, nil
}

func (c capitalWordFrequency) Follows(t *Text) bool {
	return compare(c.relation, t.capitalWordCount(), c.n)
}

// change_case:english_capital — isupper() and detected as English.
type englishCapital struct{}

func buildEnglishCapital(*args) (Instruction, error) {
	return englishCapital{}, nil
}

func (englishCapital) Follows(t *Text) bool { return pystr.IsUpperString(t.s) && isEnglish(t) }

// change_case:english_lowercase — islower() and detected as English.
type englishLowercase struct{}

func buildEnglishLowercase(*args) (Instruction, error) {
	return englishLowercase{}, nil
}

func (englishLowercase) Follows(t *Text) bool { return pystr.IsLowerString(t.s) && isEnglish(t) }

// isEnglish: an undetectable language counts as followed, as in the official checker.
func isEnglish(t *Text) bool {
	lang, ok := t.language()
	return !ok || lang == "en"
}

// punctuation:no_comma — no ASCII comma.
type noComma struct{}

func buildNoComma(*args) (Instruction, error) { return noComma{}, nil }

func (noComma) Follows(t *Text) bool { return !strings.Contains(t.s, ",") }

// startend:quotation — wrapped in double quotes (at least two characters).
type quotation struct{}

func buildQuotation(*args) (Instruction, error) { return quotation{}, nil }

func (quotation) Follows(t *Text) bool {
	r := t.Strip()
	return utf8.RuneCountInString(r) > 1 && r[0] == '"' && r[len(r)-1] == '"'
}
