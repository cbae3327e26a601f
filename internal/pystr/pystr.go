// Package pystr gives Python 3's str character classes (str.isspace, re's \w and \d,
// str.isupper, str.islower) and the str methods built on them (lower, strip, rstrip, split,
// isupper and islower of a whole string) to the Go ports of Python text code, such as the
// IFEval checkers, where Go's own definitions differ: Go's regexp \s, \w and \b are
// ASCII-only, unicode.IsSpace leaves out U+001C..U+001F (Python treats them as separators),
// and Python's isupper/islower follow the derived Uppercase/Lowercase properties rather than
// the Lu/Ll categories.
//
// Checked code point by code point against CPython 3.11 (Unicode 14.0): the only
// disagreements are characters first assigned in Unicode 15.0, which Go knows and Python 3.11
// does not (for example the CJK Extension H ideographs count as \w here).
package pystr

import (
	"strings"
	"unicode"
	"unicode/utf8"
)

// IsSpace is Python's str.isspace for one character (and re's \s for str patterns).
func IsSpace(r rune) bool {
	if r < utf8.RuneSelf {
		return r == ' ' || (r >= '\t' && r <= '\r') || (r >= 0x1c && r <= 0x1f)
	}
	return unicode.IsSpace(r)
}

// IsWord is re's \w for str patterns: str.isalnum or '_'.
func IsWord(r rune) bool {
	if r < utf8.RuneSelf {
		return r == '_' || (r >= '0' && r <= '9') || (r|0x20 >= 'a' && r|0x20 <= 'z')
	}
	return unicode.IsLetter(r) || unicode.IsNumber(r)
}

// IsDecimal is re's \d for str patterns (str.isdecimal, category Nd).
func IsDecimal(r rune) bool {
	if r < utf8.RuneSelf {
		return r >= '0' && r <= '9'
	}
	return unicode.Is(unicode.Nd, r)
}

// IsUpper is str.isupper for one character.
func IsUpper(r rune) bool {
	return unicode.IsUpper(r) || unicode.Is(unicode.Other_Uppercase, r)
}

// IsLower is str.islower for one character.
func IsLower(r rune) bool {
	return unicode.IsLower(r) || unicode.Is(unicode.Other_Lowercase, r)
}

// IsUpperString is str.isupper: at least one cased character, and none lower case or title
// case.
func IsUpperString(s string) bool { return allCased(s, IsUpper, IsLower) }

// IsLowerString is str.islower: at least one cased character, and none upper case or title
// case.
func IsLowerString(s string) bool { return allCased(s, IsLower, IsUpper) }

func allCased(s string, want, other func(rune) bool) bool {
	cased := false
	for _, r := range s {
		if other(r) || unicode.IsTitle(r) {
			return false
		}
		cased = cased || want(r)
	}
	return cased
}

// Lower is str.lower: Python's one unconditional full mapping that is not a single rune is
// kept ('İ' becomes "i̇", so that it cannot turn into an ASCII 'i'), and so is the final-sigma
// rule (a capital sigma that ends a word becomes 'ς').
func Lower(s string) string {
	ascii := true
	for i := 0; i < len(s); i++ {
		if c := s[i]; c >= utf8.RuneSelf || (c >= 'A' && c <= 'Z') {
			ascii = false
			break
		}
	}
	if ascii {
		return s
	}
	var b strings.Builder
	b.Grow(len(s))
	for i, r := range s {
		switch r {
		case 'İ':
			b.WriteString("i\u0307")
		case 'Σ':
			if finalSigma(s, i) {
				b.WriteRune('ς')
			} else {
				b.WriteRune('σ')
			}
		default:
			b.WriteRune(unicode.ToLower(r))
		}
	}
	return b.String()
}

// finalSigma is Unicode's Final_Sigma condition for the sigma at byte offset i: a cased
// letter before it and none after it, looking through case-ignorable characters.
func finalSigma(s string, i int) bool {
	before := strings.TrimRightFunc(s[:i], caseIgnorable)
	r, n := utf8.DecodeLastRuneInString(before)
	if n == 0 || !isCased(r) {
		return false
	}
	after := strings.TrimLeftFunc(s[i+len("Σ"):], caseIgnorable)
	r, n = utf8.DecodeRuneInString(after)
	return n == 0 || !isCased(r)
}

// isCased is Unicode's Cased property, as CPython's lower() uses it.
func isCased(r rune) bool { return IsLower(r) || IsUpper(r) || unicode.IsTitle(r) }

// caseIgnorable approximates Unicode's Case_Ignorable: marks, format characters, modifier
// letters and symbols, and the word-internal punctuation Unicode lists.
func caseIgnorable(r rune) bool {
	switch r {
	case '\'', '.', ':', '^', '`', 0xad, 0xb7, 0x2018, 0x2019, 0x2024, 0x2027:
		return true
	}
	return unicode.In(r, unicode.Mn, unicode.Me, unicode.Cf, unicode.Lm, unicode.Sk)
}

// Strip is str.strip() with no argument.
func Strip(s string) string { return strings.TrimFunc(s, IsSpace) }

// TrimRightSpace is str.rstrip() with no argument.
func TrimRightSpace(s string) string { return strings.TrimRightFunc(s, IsSpace) }

// Fields is str.split() with no argument.
func Fields(s string) []string { return strings.FieldsFunc(s, IsSpace) }

// SpaceClass is the body of a Go regexp character class that matches what re's \s matches in a
// str pattern (IsSpace), for the ports of Python regular expressions.
const SpaceClass = `\t\n\v\f\r \x1c-\x1f\x{85}\x{a0}\x{1680}\x{2000}-\x{200a}\x{2028}\x{2029}\x{202f}\x{205f}\x{3000}`
