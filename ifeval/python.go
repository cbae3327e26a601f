package ifeval

import (
	"strings"
	"unicode"
)

// The official checker is Python: its verdicts depend on what CPython's str methods and `re`
// call whitespace, word characters, digits and case. Go's strings/unicode/regexp differ at
// the edges (Go's regexp \s, \w, \d and \b are ASCII-only; strings.TrimSpace misses
// U+001C..U+001F; ToLower has no final sigma), so every such notion lives here, once.

// pyIsSpace is str.isspace: Unicode White_Space plus the four ASCII information separators,
// which CPython counts as whitespace (bidirectional class B or S).
func pyIsSpace(r rune) bool {
	return unicode.IsSpace(r) || (r >= 0x1c && r <= 0x1f)
}

// pySpaceClass is the body of a regexp character class matching what Python's `\s` matches in
// a str pattern (= str.isspace).
const pySpaceClass = `\t\n\v\f\r \x1c-\x1f\x{85}\x{a0}\x{1680}\x{2000}-\x{200a}\x{2028}\x{2029}\x{202f}\x{205f}\x{3000}`

// pyS is Python's `\s` as a Go regexp atom; pyD is Python's `\d` (any Unicode decimal digit).
const (
	pyS = `[` + pySpaceClass + `]`
	pyD = `\p{Nd}`
)

// pyIsWord is Python's `\w` in a str pattern: str.isalnum() or '_'. Unlike most engines,
// combining marks (Mn, Mc) are not word characters, so "नमस्ते" holds several \w+ runs.
func pyIsWord(r rune) bool {
	return r == '_' || unicode.IsLetter(r) || unicode.IsNumber(r)
}

// pyStrip is str.strip() with no argument.
func pyStrip(s string) string { return strings.TrimFunc(s, pyIsSpace) }

// pySplit is str.split() with no argument: runs of whitespace separate, none are kept.
func pySplit(s string) []string { return strings.FieldsFunc(s, pyIsSpace) }

// pyCased reports a cased character (Lowercase, Uppercase or Lt), pyCaseIgnorable one that
// Unicode's Final_Sigma rule looks through; both as CPython's str.lower() uses them.
func pyCased(r rune) bool {
	return pyIsLowerRune(r) || pyIsUpperRune(r) || unicode.IsTitle(r)
}

func pyCaseIgnorable(r rune) bool {
	switch r {
	case '\'', '.', ':', '^', '`', 0xad, 0xb7, 0x2019, 0x2018, 0x2024, 0x2027:
		return true
	}
	return unicode.In(r, unicode.Mn, unicode.Me, unicode.Cf, unicode.Lm, unicode.Sk)
}

// pyLower is str.lower(): full case mapping, so 'İ' becomes "i̇" (two code points) and a
// capital sigma at the end of a word becomes the final form 'ς'.
func pyLower(s string) string {
	if !strings.ContainsFunc(s, func(r rune) bool { return r >= 0x80 || ('A' <= r && r <= 'Z') }) {
		return s
	}
	rs := []rune(s)
	var b strings.Builder
	b.Grow(len(s))
	for i, r := range rs {
		switch {
		case r == 0x130:
			b.WriteString("i\u0307")
		case r == 0x3a3:
			if finalSigma(rs, i) {
				b.WriteRune(0x3c2)
			} else {
				b.WriteRune(0x3c3)
			}
		default:
			b.WriteRune(unicode.ToLower(r))
		}
	}
	return b.String()
}

// finalSigma is Unicode's Final_Sigma condition at rs[i]: a cased letter before it and none
// after it, looking through case-ignorable characters.
func finalSigma(rs []rune, i int) bool {
	j := i - 1
	for j >= 0 && pyCaseIgnorable(rs[j]) {
		j--
	}
	if j < 0 || !pyCased(rs[j]) {
		return false
	}
	k := i + 1
	for k < len(rs) && pyCaseIgnorable(rs[k]) {
		k++
	}
	return k >= len(rs) || !pyCased(rs[k])
}

func pyIsUpperRune(r rune) bool {
	return unicode.IsUpper(r) || unicode.Is(unicode.Other_Uppercase, r)
}

func pyIsLowerRune(r rune) bool {
	return unicode.IsLower(r) || unicode.Is(unicode.Other_Lowercase, r)
}

// pyIsUpper is str.isupper(): at least one cased character and no lowercase or titlecase one.
func pyIsUpper(s string) bool {
	cased := false
	for _, r := range s {
		if pyIsLowerRune(r) || unicode.IsTitle(r) {
			return false
		}
		if pyIsUpperRune(r) {
			cased = true
		}
	}
	return cased
}

// pyIsLower is str.islower(): at least one cased character and no uppercase or titlecase one.
func pyIsLower(s string) bool {
	cased := false
	for _, r := range s {
		if pyIsUpperRune(r) || unicode.IsTitle(r) {
			return false
		}
		if pyIsLowerRune(r) {
			cased = true
		}
	}
	return cased
}

// countWords is instructions_util.count_words: the number of `\w+` runs (NLTK's
// RegexpTokenizer(r"\w+") is re.findall underneath).
func countWords(s string) int {
	n, in := 0, false
	for _, r := range s {
		w := pyIsWord(r)
		if w && !in {
			n++
		}
		in = w
	}
	return n
}
