package ifeval

import (
	"fmt"
	"math/rand/v2"
	"regexp"
	"slices"
	"strings"
	"unicode/utf8"

	"github.com/autoif/autoif/internal/pystr"
	"github.com/autoif/autoif/langdetect"
	"github.com/autoif/autoif/punkt"
)

// Instruction is one verifiable instruction built from its kwargs: the official
// Instruction after build_description, reduced to check_following.
type Instruction interface {
	// Follows reports whether the response follows the instruction.
	Follows(response string) bool
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

// keywords:existence — every keyword is found (as a regex, ignoring case).
type keywordExistence struct{ res []*regexp.Regexp }

func buildKeywordExistence(a *args) (Instruction, error) {
	kws := a.strList("keywords")
	if a.err == nil && len(kws) == 0 {
		return nil, errRandomWords("keywords")
	}
	slices.Sort(kws)
	k := keywordExistence{}
	for _, w := range kws {
		re, err := pyPattern("(?i)", w)
		if err != nil {
			return nil, err
		}
		k.res = append(k.res, re)
	}
	return k, nil
}

func (k keywordExistence) Follows(r string) bool {
	for _, re := range k.res {
		if !re.MatchString(r) {
			return false
		}
	}
	return true
}

// keywords:frequency — re.findall(keyword, response, IGNORECASE) against the relation.
type keywordFrequency struct {
	re       *regexp.Regexp
	n        int
	relation string
}

func buildKeywordFrequency(a *args) (Instruction, error) {
	kw, _ := a.str("keyword")
	if a.err == nil && kw == "" {
		return nil, errRandomWords("keyword")
	}
	k := keywordFrequency{n: a.intOrRandom("frequency", 1, 3), relation: a.relation("relation")}
	re, err := pyPattern("(?i)", pystr.Strip(kw))
	if err != nil {
		return nil, err
	}
	k.re = re
	return k, nil
}

func (k keywordFrequency) Follows(r string) bool {
	return compare(k.relation, len(k.re.FindAllStringIndex(r, -1)), k.n)
}

// keywords:forbidden_words — no word matches r"\b"+word+r"\b" ignoring case. Python's \b is
// Unicode-aware, Go's is not, so for plain words the boundaries are checked here.
type forbiddenWords struct {
	res   []*regexp.Regexp
	plain []bool
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
		f.plain = append(f.plain, plain)
	}
	return f, nil
}

func (f forbiddenWords) Follows(r string) bool {
	for i, re := range f.res {
		if !f.plain[i] {
			if re.MatchString(r) {
				return false
			}
			continue
		}
		if searchWordBounded(re, r) {
			return false
		}
	}
	return true
}

// searchWordBounded is re.search(r"\b"+word+r"\b", s): the leftmost match of re with a
// Python word boundary on both sides, trying every start position as a backtracker does.
func searchWordBounded(re *regexp.Regexp, s string) bool {
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
		if size == 0 {
			size = 1
		}
		pos = start + size
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

func (l letterFrequency) Follows(r string) bool {
	n := 0
	for _, c := range pystr.Lower(r) {
		if c == l.letter {
			n++
		}
	}
	return compare(l.relation, n, l.n)
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

func (l responseLanguage) Follows(r string) bool {
	got, err := langdetect.Detect(r)
	return err != nil || got == l.lang
}

// length_constraints:number_sentences — Punkt's sentence count against the relation.
type numberSentences struct {
	n        int
	relation string
}

func buildNumberSentences(a *args) (Instruction, error) {
	return numberSentences{n: a.intOrRandom("num_sentences", 1, 20), relation: a.relation("relation")}, nil
}

func (s numberSentences) Follows(r string) bool {
	return compare(s.relation, len(punkt.English().Sentences(r)), s.n)
}

// length_constraints:number_paragraphs — exactly n paragraphs between `***` dividers; an
// empty paragraph is allowed only first or last.
type numberParagraphs struct{ n int }

var paragraphDivider = regexp.MustCompile(pyS + `?\*\*\*` + pyS + `?`)

func buildNumberParagraphs(a *args) (Instruction, error) {
	return numberParagraphs{n: a.intOrRandom("num_paragraphs", 1, 5)}, nil
}

func (p numberParagraphs) Follows(r string) bool {
	paragraphs := paragraphDivider.Split(r, -1)
	n := len(paragraphs)
	for i, para := range paragraphs {
		if pystr.Strip(para) == "" {
			if i == 0 || i == len(paragraphs)-1 {
				n--
			} else {
				return false
			}
		}
	}
	return n == p.n
}

// length_constraints:number_words — `\w+` runs against the relation.
type numberWords struct {
	n        int
	relation string
}

func buildNumberWords(a *args) (Instruction, error) {
	return numberWords{n: a.intOrRandom("num_words", 100, 500), relation: a.relation("relation")}, nil
}

func (w numberWords) Follows(r string) bool { return compare(w.relation, countWords(r), w.n) }

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

func (p nthParagraphFirstWord) Follows(r string) bool {
	paragraphs := strings.Split(r, "\n\n")
	n := len(paragraphs)
	for _, para := range paragraphs {
		if pystr.Strip(para) == "" {
			n--
		}
	}
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

func (p placeholders) Follows(r string) bool {
	return len(placeholderRe.FindAllStringIndex(r, -1)) >= p.n
}

// detectable_content:postscript — a line (of the lowercased response) holding the marker.
type postscript struct{ re *regexp.Regexp }

func buildPostscript(a *args) (Instruction, error) {
	marker := a.strStrippedOrRandom("postscript_marker", postscriptMarkers)
	var pattern string
	switch marker {
	case "P.P.S":
		pattern = pyS + `*p\.` + pyS + `?p\.` + pyS + `?s.*$`
	case "P.S.":
		pattern = pyS + `*p\.` + pyS + `?s\..*$`
	default:
		re, err := pyPattern("", pystr.Lower(marker))
		if err != nil {
			return nil, err
		}
		pattern = pyS + `*` + re.String() + `.*$`
	}
	return postscript{re: regexp.MustCompile(`(?m)` + pattern)}, nil
}

func (p postscript) Follows(r string) bool { return p.re.MatchString(pystr.Lower(r)) }

// detectable_format:number_bullet_lists — exactly n lines starting with `*` or `-` bullets.
type bulletLists struct{ n int }

var (
	starBullet = regexp.MustCompile(`(?m)^` + pyS + `*\*[^\*].*$`)
	dashBullet = regexp.MustCompile(`(?m)^` + pyS + `*-.*$`)
)

func buildBulletLists(a *args) (Instruction, error) {
	return bulletLists{n: a.intOrRandom("num_bullets", 1, 5)}, nil
}

func (b bulletLists) Follows(r string) bool {
	n := len(starBullet.FindAllStringIndex(r, -1)) + len(dashBullet.FindAllStringIndex(r, -1))
	return n == b.n
}

// detectable_format:constrained_response — contains one of the three answers.
type constrainedResponse struct{}

var constrainedOptions = []string{"My answer is yes.", "My answer is no.", "My answer is maybe."}

func buildConstrainedResponse(*args) (Instruction, error) { return constrainedResponse{}, nil }

func (constrainedResponse) Follows(r string) bool {
	r = pystr.Strip(r)
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

func (h highlights) Follows(r string) bool {
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
	return n >= h.n
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
	return sections{re: regexp.MustCompile(pyS + `?` + re.String() + pyS + `?` + pyD + `+` + pyS + `?`), n: n}, nil
}

func (s sections) Follows(r string) bool {
	return len(s.re.FindAllStringIndex(r, -1)) >= s.n
}

// detectable_format:json_format — the response, less a ``` fence, is JSON for Python.
type jsonFormat struct{}

func buildJSONFormat(*args) (Instruction, error) { return jsonFormat{}, nil }

func (jsonFormat) Follows(r string) bool {
	r = pystr.Strip(r)
	for _, p := range []string{"```json", "```Json", "```JSON", "```"} {
		r = strings.TrimPrefix(r, p)
	}
	r = pystr.Strip(strings.TrimSuffix(r, "```"))
	return pyJSONLoads(r)
}

// detectable_format:title — a non-blank <<title>> on one line.
type title struct{}

var titleRe = regexp.MustCompile(`<<[^\n]+>>`)

func buildTitle(*args) (Instruction, error) { return title{}, nil }

func (title) Follows(r string) bool {
	for _, m := range titleRe.FindAllString(r, -1) {
		if pystr.Strip(strings.TrimRight(strings.TrimLeft(m, "<"), ">")) != "" {
			return true
		}
	}
	return false
}

// combination:two_responses — two different non-blank responses around "******".
type twoResponses struct{}

func buildTwoResponses(*args) (Instruction, error) { return twoResponses{}, nil }

func (twoResponses) Follows(r string) bool {
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

func (p repeatPrompt) Follows(r string) bool {
	return strings.HasPrefix(pystr.Lower(pystr.Strip(r)), p.prefix)
}

// startend:end_checker — the response (less surrounding quotes) ends with the phrase,
// ignoring case.
type endChecker struct{ suffix string }

func buildEndChecker(a *args) (Instruction, error) {
	return endChecker{suffix: pystr.Lower(pystr.Strip(a.strStrippedOrRandom("end_phrase", starterEndOptions)))}, nil
}

func (e endChecker) Follows(r string) bool {
	return strings.HasSuffix(pystr.Lower(strings.Trim(pystr.Strip(r), `"`)), e.suffix)
}

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

func (c capitalWordFrequency) Follows(r string) bool {
	n := 0
	for _, w := range punkt.WordTokenize(r) {
		if pystr.IsUpperString(w) {
			n++
		}
	}
	return compare(c.relation, n, c.n)
}

// change_case:english_capital — isupper() and detected as English.
type englishCapital struct{}

func buildEnglishCapital(*args) (Instruction, error) {
	return englishCapital{}, nil
}

func (englishCapital) Follows(r string) bool { return pystr.IsUpperString(r) && isEnglish(r) }

// change_case:english_lowercase — islower() and detected as English.
type englishLowercase struct{}

func buildEnglishLowercase(*args) (Instruction, error) {
	return englishLowercase{}, nil
}

func (englishLowercase) Follows(r string) bool { return pystr.IsLowerString(r) && isEnglish(r) }

// isEnglish: an undetectable language counts as followed, as in the official checker.
func isEnglish(r string) bool {
	lang, err := langdetect.Detect(r)
	return err != nil || lang == "en"
}

// punctuation:no_comma — no ASCII comma.
type noComma struct{}

func buildNoComma(*args) (Instruction, error) { return noComma{}, nil }

func (noComma) Follows(r string) bool { return !strings.Contains(r, ",") }

// startend:quotation — wrapped in double quotes (at least two characters).
type quotation struct{}

func buildQuotation(*args) (Instruction, error) { return quotation{}, nil }

func (quotation) Follows(r string) bool {
	r = pystr.Strip(r)
	return utf8.RuneCountInString(r) > 1 && r[0] == '"' && r[len(r)-1] == '"'
}
