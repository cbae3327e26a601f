package punkt

import (
	"strings"
	"unicode/utf8"

	"github.com/autoif/autoif/internal/pystr"
)

// punktWords is PunktLanguageVars.word_tokenize: findall of
//
//	( MultiChar
//	| (?=WordStart)\S+?(?=\s|$|NonWord|MultiChar|,(?=$|\s|NonWord|MultiChar))
//	| \S )
//
// where MultiChar is (?:\-{2,}|\.{2,}|(?:\.\s){2,}\.), WordStart excludes ("`{[:;&#*@)}]-,
// and NonWord is _re_non_word_chars. Periods stay attached to the word before them; the
// sentence tokenizer decides what they mean.
func punktWords(line string) []string {
	var out []string
	for i := 0; i < len(line); {
		if n := multiCharAt(line, i); n > 0 {
			out = append(out, line[i:i+n])
			i += n
			continue
		}
		r, w := utf8.DecodeRuneInString(line[i:])
		if pystr.IsSpace(r) {
			i += w
			continue
		}
		if !isWordStartExcluded(r) {
			e := i + w
			for !wordEndsAt(line, e) {
				_, w2 := utf8.DecodeRuneInString(line[e:])
				e += w2
			}
			out = append(out, line[i:e])
			i = e
			continue
		}
		out = append(out, line[i:i+w])
		i += w
	}
	return out
}

// isWordStartExcluded is the complement of _re_word_start.
func isWordStartExcluded(r rune) bool {
	switch r {
	case '(', '"', '`', '{', '[', ':', ';', '&', '#', '*', '@', ')', '}', ']', '-', ',':
		return true
	}
	return false
}

// wordEndsAt is the lookahead that ends a word at e. It holds at the end of the line and
// before whitespace, so the lazy \S+? always stops.
func wordEndsAt(s string, e int) bool {
	if e >= len(s) {
		return true
	}
	r, w := utf8.DecodeRuneInString(s[e:])
	if pystr.IsSpace(r) || isNonWordChar(r) || multiCharAt(s, e) > 0 {
		return true
	}
	if r != ',' {
		return false
	}
	f := e + w
	if f >= len(s) {
		return true
	}
	r2, _ := utf8.DecodeRuneInString(s[f:])
	return pystr.IsSpace(r2) || isNonWordChar(r2) || multiCharAt(s, f) > 0
}

// multiCharAt is the length of a _re_multi_char_punct match at i, or 0:
// \-{2,} | \.{2,} | (?:\.\s){2,}\. in that order.
func multiCharAt(s string, i int) int {
	if i+1 >= len(s) {
		return 0
	}
	if s[i] == '-' && s[i+1] == '-' {
		return runLen(s, i, '-')
	}
	if s[i] != '.' {
		return 0
	}
	if s[i+1] == '.' {
		return runLen(s, i, '.')
	}
	// (?:\.\s){2,}\. : as many ". " pairs as there are, then a period; when the pairs run
	// out without one, the regex backs off a pair and uses its period.
	var ends []int // end offset after each pair
	j := i
	for j < len(s) && s[j] == '.' {
		r, w := utf8.DecodeRuneInString(s[j+1:])
		if j+1 >= len(s) || !pystr.IsSpace(r) {
			break
		}
		j += 1 + w
		ends = append(ends, j)
	}
	k := len(ends)
	if k >= 2 && j < len(s) && s[j] == '.' {
		return j + 1 - i
	}
	if k >= 3 {
		return ends[k-2] + 1 - i
	}
	return 0
}

func runLen(s string, i int, c byte) int {
	n := 0
	for i+n < len(s) && s[i+n] == c {
		n++
	}
	return n
}

// WordTokenize is nltk.word_tokenize(text) (language "english", preserve_line=False): Punkt
// sentences, then NLTKWordTokenizer.tokenize on each.
func WordTokenize(text string) []string {
	var out []string
	for _, s := range English().Sentences(text) {
		out = append(out, treebankWords(s)...)
	}
	return out
}

// treebankWords is NLTKWordTokenizer.tokenize(text) with convert_parentheses=False: the
// improved Treebank regexes, applied in NLTK's order, each as re.sub does (leftmost,
// non-overlapping), then str.split().
func treebankWords(text string) []string {
	// Starting quotes.
	text = padRunes(text, func(r rune) bool { return r == '«' || r == '“' || r == '‘' || r == '„' })
	text = padBackticks(text)
	if strings.HasPrefix(text, `"`) {
		text = "``" + text[1:]
	}
	text = strings.ReplaceAll(text, "``", " `` ")
	text = resub(text, openingDoubleQuote)
	text = resub(text, quoteBeforeLetter)

	// Punctuation.
	text = finalPeriod(text, func(r rune) bool {
		return isCloser(r) || r == '»' || r == '”' || r == '’' || r == ' '
	}, true)
	text = resub(text, colonCommaBeforeNonDigit)
	text = colonCommaAtEnd(text)
	text = padPeriodRuns(text)
	text = padRunes(text, func(r rune) bool {
		return r == ';' || r == '@' || r == '#' || r == '$' || r == '%' || r == '&'
	})
	text = finalPeriod(text, isCloser, false)
	text = padRunes(text, func(r rune) bool { return r == '?' || r == '!' })
	text = resub(text, quoteBeforeSpace)
	text = padRunes(text, func(r rune) bool { return r == '*' })

	// Parentheses and brackets, double dashes.
	text = padRunes(text, func(r rune) bool {
		switch r {
		case ']', '[', '(', ')', '{', '}', '<', '>':
			return true
		}
		return false
	})
	text = strings.ReplaceAll(text, "--", " -- ")

	// Ending quotes.
	text = " " + text + " "
	text = padRunes(text, func(r rune) bool { return r == '»' || r == '”' || r == '’' })
	text = strings.ReplaceAll(text, "''", " '' ")
	text = strings.ReplaceAll(text, `"`, " '' ")
	text = resub(text, clitic1)
	text = resub(text, clitic2)

	// Contractions (CONTRACTIONS2, then CONTRACTIONS3).
	for _, c := range contractions2 {
		text = resub(text, c.match)
	}
	text = resub(text, contraction3("is"))
	text = resub(text, contraction3("was"))
	return pystr.Fields(text)
}

// isCloser is the class [\]\)}>"\'] of the final-period rule.
func isCloser(r rune) bool {
	switch r {
	case ']', ')', '}', '>', '"', '\'':
		return true
	}
	return false
}

// matcher tries a pattern at byte offset i of s; on a match it returns the end offset and
// the replacement text.
type matcher func(s string, i int) (end int, repl string, ok bool)

// resub is re.sub for a pattern that never matches the empty string: scan left to right,
// replace each match and continue after it.
func resub(s string, m matcher) string {
	var b strings.Builder
	last := 0
	for i := 0; i < len(s); {
		if end, repl, ok := m(s, i); ok {
			b.WriteString(s[last:i])
			b.WriteString(repl)
			i, last = end, end
			continue
		}
		_, w := utf8.DecodeRuneInString(s[i:])
		i += w
	}
	if last == 0 {
		return s
	}
	b.WriteString(s[last:])
	return b.String()
}

// padRunes surrounds each character in the set with spaces (re.sub(r"[set]", r" \g<0> ")).
func padRunes(s string, in func(rune) bool) string {
	if strings.IndexFunc(s, in) < 0 {
		return s
	}
	var b strings.Builder
	b.Grow(len(s) + 16)
	for i := 0; i < len(s); {
		r, w := utf8.DecodeRuneInString(s[i:])
		if in(r) {
			b.WriteByte(' ')
			b.WriteString(s[i : i+w])
			b.WriteByte(' ')
		} else {
			b.WriteString(s[i : i+w])
		}
		i += w
	}
	return b.String()
}

// padBackticks is the [`]+ half of the first starting-quote rule: a run of backticks is one
// match.
func padBackticks(s string) string {
	if !strings.Contains(s, "`") {
		return s
	}
	return resub(s, func(s string, i int) (int, string, bool) {
		if s[i] != '`' {
			return 0, "", false
		}
		n := runLen(s, i, '`')
		return i + n, " " + s[i:i+n] + " ", true
	})
}

// padPeriodRuns is re.sub(r"\.{2,}", r" \g<0> ").
func padPeriodRuns(s string) string {
	if !strings.Contains(s, "..") {
		return s
	}
	return resub(s, func(s string, i int) (int, string, bool) {
		if s[i] != '.' {
			return 0, "", false
		}
		n := runLen(s, i, '.')
		if n < 2 {
			return 0, "", false
		}
		return i + n, " " + s[i:i+n] + " ", true
	})
}

// openingDoubleQuote is ([ \(\[{<])(\"|\'{2}) -> \1 and two backticks: an opening double
// quote after a space or an opening bracket.
func openingDoubleQuote(s string, i int) (int, string, bool) {
	switch s[i] {
	case ' ', '(', '[', '{', '<':
	default:
		return 0, "", false
	}
	j := i + 1
	switch {
	case strings.HasPrefix(s[j:], `"`):
		return j + 1, s[i:j] + " `` ", true
	case strings.HasPrefix(s[j:], "''"):
		return j + 2, s[i:j] + " `` ", true
	}
	return 0, "", false
}

// foldEq is (?i) matching of one character against a lower-case ASCII letter, with the
// non-ASCII characters Python's re also folds onto it.
func foldEq(r rune, c byte) bool {
	if r == rune(c) || r == rune(c)-'a'+'A' {
		return true
	}
	switch c {
	case 'i':
		return r == 'İ' || r == 'ı'
	case 's':
		return r == 'ſ'
	case 'k':
		return r == 'K' // U+212A KELVIN SIGN
	}
	return false
}

// foldPrefix reports whether s starts with word under (?i) and returns the matched length.
func foldPrefix(s, word string) (int, bool) {
	n := 0
	for k := 0; k < len(word); k++ {
		if n >= len(s) {
			return 0, false
		}
		r, w := utf8.DecodeRuneInString(s[n:])
		if word[k] == '\'' {
			if r != '\'' {
				return 0, false
			}
		} else if !foldEq(r, word[k]) {
			return 0, false
		}
		n += w
	}
	return n, true
}

// isWordBefore, isWordAt and wordBoundary are re's Unicode \w and \b.
func isWordBefore(s string, i int) bool {
	if i <= 0 {
		return false
	}
	r, _ := utf8.DecodeLastRuneInString(s[:i])
	return pystr.IsWord(r)
}

func isWordAt(s string, i int) bool {
	if i >= len(s) {
		return false
	}
	r, _ := utf8.DecodeRuneInString(s[i:])
	return pystr.IsWord(r)
}

func wordBoundary(s string, i int) bool { return isWordBefore(s, i) != isWordAt(s, i) }

// quoteBeforeLetter is (?i)(\')(?!re|ve|ll|m|t|s|d|n)(\w)\b -> \1 \2: a quote before a
// one-letter word that is not a clitic.
func quoteBeforeLetter(s string, i int) (int, string, bool) {
	if s[i] != '\'' {
		return 0, "", false
	}
	j := i + 1
	for _, clitic := range []string{"re", "ve", "ll", "m", "t", "s", "d", "n"} {
		if _, ok := foldPrefix(s[j:], clitic); ok {
			return 0, "", false
		}
	}
	if j >= len(s) {
		return 0, "", false
	}
	r, w := utf8.DecodeRuneInString(s[j:])
	if !pystr.IsWord(r) || !wordBoundary(s, j+w) {
		return 0, "", false
	}
	return j + w, "' " + s[j:j+w], true
}

// finalPeriod is ([^\.])(\.)([closers]*)\s*$ -> \1 \2 \3 (spaced true, the first rule) or
// \1 \2\3 (the second): the period that ends the text, before closing quotes and brackets.
// Nothing but closers and whitespace may follow it, so only the last period can match.
func finalPeriod(s string, closer func(rune) bool, spaced bool) string {
	p := strings.LastIndexByte(s, '.')
	if p < 1 || s[p-1] == '.' {
		return s
	}
	q := p + 1
	for q < len(s) {
		r, w := utf8.DecodeRuneInString(s[q:])
		if !closer(r) {
			break
		}
		q += w
	}
	if skipSpace(s, q) != len(s) {
		return s
	}
	_, w := utf8.DecodeLastRuneInString(s[:p])
	if spaced {
		return s[:p-w] + s[p-w:p] + " . " + s[p+1:q] + " "
	}
	return s[:p-w] + s[p-w:p] + " ." + s[p+1:q] + " "
}

// colonCommaBeforeNonDigit is ([:,])([^\d]) -> " \1 \2".
func colonCommaBeforeNonDigit(s string, i int) (int, string, bool) {
	if (s[i] != ':' && s[i] != ',') || i+1 >= len(s) {
		return 0, "", false
	}
	r, w := utf8.DecodeRuneInString(s[i+1:])
	if pystr.IsDecimal(r) {
		return 0, "", false
	}
	return i + 1 + w, " " + s[i:i+1] + " " + s[i+1:i+1+w], true
}

// colonCommaAtEnd is ([:,])$ -> " \1 ", where Python's $ also matches before a final "\n".
func colonCommaAtEnd(s string) string {
	n := len(s)
	if n >= 1 && (s[n-1] == ':' || s[n-1] == ',') {
		return s[:n-1] + " " + s[n-1:] + " "
	}
	if n >= 2 && s[n-1] == '\n' && (s[n-2] == ':' || s[n-2] == ',') {
		return s[:n-2] + " " + s[n-2:n-1] + " " + "\n"
	}
	return s
}

// quoteBeforeSpace is ([^'])' -> "\1 ' ".
func quoteBeforeSpace(s string, i int) (int, string, bool) {
	if s[i] == '\'' {
		return 0, "", false
	}
	_, w := utf8.DecodeRuneInString(s[i:])
	j := i + w
	if strings.HasPrefix(s[j:], "' ") {
		return j + 2, s[i:j] + " ' ", true
	}
	return 0, "", false
}

// clitic1 is ([^' ])('[sS]|'[mM]|'[dD]|') -> "\1 \2 ".
func clitic1(s string, i int) (int, string, bool) {
	if s[i] == '\'' || s[i] == ' ' {
		return 0, "", false
	}
	_, w := utf8.DecodeRuneInString(s[i:])
	j := i + w
	if !strings.HasPrefix(s[j:], "'") {
		return 0, "", false
	}
	if j+2 < len(s) && strings.IndexByte("sSmMdD", s[j+1]) >= 0 && s[j+2] == ' ' {
		return j + 3, s[i:j] + " " + s[j:j+2] + " ", true
	}
	if j+1 < len(s) && s[j+1] == ' ' {
		return j + 2, s[i:j] + " ' ", true
	}
	return 0, "", false
}

// clitic2 is ([^' ])('ll|'LL|'re|'RE|'ve|'VE|n't|N'T) -> "\1 \2 ".
func clitic2(s string, i int) (int, string, bool) {
	if s[i] == '\'' || s[i] == ' ' {
		return 0, "", false
	}
	_, w := utf8.DecodeRuneInString(s[i:])
	j := i + w
	if j+3 >= len(s) || s[j+3] != ' ' {
		return 0, "", false
	}
	switch s[j : j+3] {
	case "'ll", "'LL", "'re", "'RE", "'ve", "'VE", "n't", "N'T":
		return j + 4, s[i:j] + " " + s[j:j+3] + " ", true
	}
	return 0, "", false
}

// contraction is one CONTRACTIONS2 pattern, (?i)\b(first)(second)\b -> " \1 \2 "; the last
// one (wanna) ends with (?=\s) instead of \b.
type contraction struct {
	first, second string
	beforeSpace   bool
}

func (c contraction) match(s string, i int) (int, string, bool) {
	// Every pattern starts with an ASCII letter that nothing else folds onto: reject most
	// positions before the boundary test.
	if s[i]|0x20 != c.first[0] || !wordBoundary(s, i) {
		return 0, "", false
	}
	n1, ok := foldPrefix(s[i:], c.first)
	if !ok {
		return 0, "", false
	}
	n2, ok := foldPrefix(s[i+n1:], c.second)
	if !ok {
		return 0, "", false
	}
	end := i + n1 + n2
	if c.beforeSpace {
		if end >= len(s) {
			return 0, "", false
		}
		r, _ := utf8.DecodeRuneInString(s[end:])
		if !pystr.IsSpace(r) {
			return 0, "", false
		}
	} else if !wordBoundary(s, end) {
		return 0, "", false
	}
	return end, " " + s[i:i+n1] + " " + s[i+n1:end] + " ", true
}

var contractions2 = []contraction{
	{"can", "not", false},
	{"d", "'ye", false},
	{"gim", "me", false},
	{"gon", "na", false},
	{"got", "ta", false},
	{"lem", "me", false},
	{"more", "'n", false},
	{"wan", "na", true},
}

// contraction3 is (?i) ('t)(word)\b -> " \1 \2 " for 'tis and 'twas.
func contraction3(word string) matcher {
	return func(s string, i int) (int, string, bool) {
		if s[i] != ' ' {
			return 0, "", false
		}
		n1, ok := foldPrefix(s[i+1:], "'t")
		if !ok {
			return 0, "", false
		}
		a := i + 1
		n2, ok := foldPrefix(s[a+n1:], word)
		if !ok || !wordBoundary(s, a+n1+n2) {
			return 0, "", false
		}
		end := a + n1 + n2
		return end, " " + s[a:a+n1] + " " + s[a+n1:end] + " ", true
	}
}
