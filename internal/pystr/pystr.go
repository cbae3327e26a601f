// Package pystr gives Python 3's str character classes (str.isspace, re's \w and \d,
// str.isupper, str.islower, str.lower) to the Go ports of Python text code, where Go's own
// definitions differ: Go's regexp \s, \w and \b are ASCII-only, unicode.IsSpace leaves out
// U+001C..U+001F (Python treats them as separators), and Python's isupper/islower follow the
// derived Uppercase/Lowercase properties rather than the Lu/Ll categories.
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

// Lower is str.lower except for the final-sigma rule (Python writes a word-final capital
// sigma as 'ς', this writes 'σ'). Python's one unconditional full mapping that is not a single
// rune is kept: 'İ' becomes "i̇", so that it cannot turn into an ASCII 'i'.
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
	for _, r := range s {
		if r == 'İ' {
			b.WriteString("i\u0307")
			continue
		}
		b.WriteRune(unicode.ToLower(r))
	}
	return b.String()
}

// TrimRightSpace is str.rstrip() with no argument.
func TrimRightSpace(s string) string { return strings.TrimRightFunc(s, IsSpace) }

// Fields is str.split() with no argument.
func Fields(s string) []string { return strings.FieldsFunc(s, IsSpace) }
