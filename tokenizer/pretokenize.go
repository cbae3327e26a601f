package tokenizer

import (
	"fmt"
	"unicode"
	"unicode/utf8"
)

// The Split patterns of the supported model families. Go's regexp has no
// look-ahead, so each is implemented as a hand-written scanner that returns
// exactly what a backtracking engine (Oniguruma in Hugging Face tokenizers)
// would match at a given position.
const (
	patternGPT2   = `'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+`
	patternLlama3 = `(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+`
	patternQwen2  = `(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+`
)

// matcher returns the end of the pattern's match starting exactly at i, or -1.
type matcher func(s string, i int) int

func matcherFor(pattern string) (matcher, error) {
	switch pattern {
	case patternGPT2:
		return matchGPT2, nil
	case patternLlama3:
		return func(s string, i int) int { return matchLlama3Style(s, i, 3) }, nil
	case patternQwen2:
		return func(s string, i int) int { return matchLlama3Style(s, i, 1) }, nil
	}
	return nil, fmt.Errorf("unrecognised Split regex %q (known: GPT-2, Llama-3, Qwen2 patterns)", pattern)
}

type charClass uint8

const (
	classOther charClass = iota
	classLetter
	classNumber
	classSpace
)

var asciiClass [utf8.RuneSelf]charClass

func init() {
	for r := rune(0); r < utf8.RuneSelf; r++ {
		asciiClass[r] = classOfSlow(r)
	}
}

// classOfSlow follows the regex definitions: \p{L} is general category L,
// \p{N} is category N, \s is the Unicode White_Space property.
func classOfSlow(r rune) charClass {
	switch {
	case unicode.IsLetter(r):
		return classLetter
	case unicode.IsNumber(r):
		return classNumber
	case unicode.Is(unicode.White_Space, r):
		return classSpace
	}
	return classOther
}

func classOf(r rune) charClass {
	if r < utf8.RuneSelf {
		return asciiClass[r]
	}
	if r == utf8.RuneError {
		return classOther
	}
	return classOfSlow(r)
}

// next decodes the rune at i; invalid bytes count as one "other" byte.
func next(s string, i int) (rune, int) {
	if c := s[i]; c < utf8.RuneSelf {
		return rune(c), 1
	}
	return utf8.DecodeRuneInString(s[i:])
}

// scanClass returns the end of the run of class c starting at i.
func scanClass(s string, i int, c charClass) int {
	for i < len(s) {
		r, n := next(s, i)
		if classOf(r) != c {
			break
		}
		i += n
	}
	return i
}

// scanCRLF implements [\r\n]*.
func scanCRLF(s string, i int) int {
	for i < len(s) && (s[i] == '\r' || s[i] == '\n') {
		i++
	}
	return i
}

var contractions = [...]string{"s", "t", "re", "ve", "m", "ll", "d"}

// matchContraction implements '(s|t|re|ve|m|ll|d), optionally under (?i:...),
// at i (which holds the apostrophe). Returns -1 if none matches.
func matchContraction(s string, i int, foldCase bool) int {
	if s[i] != '\'' {
		return -1
	}
	for _, c := range contractions {
		if e := matchLiteral(s, i+1, c, foldCase); e >= 0 {
			return e
		}
	}
	return -1
}

func matchLiteral(s string, i int, lit string, foldCase bool) int {
	for _, want := range lit {
		if i >= len(s) {
			return -1
		}
		r, n := next(s, i)
		if r != want && (!foldCase || !equalFold(r, want)) {
			return -1
		}
		i += n
	}
	return i
}

// equalFold reports whether r and want are in the same simple case-folding
// orbit, as (?i) matching does (so 'ſ' matches 's').
func equalFold(r, want rune) bool {
	for f := unicode.SimpleFold(want); f != want; f = unicode.SimpleFold(f) {
		if f == r {
			return true
		}
	}
	return false
}

// matchWhitespace implements the shared tail \s+(?!\S)|\s+ at a whitespace rune.
func matchWhitespace(s string, i int) int {
	end, lastStart := i, i
	for end < len(s) {
		r, n := next(s, end)
		if classOf(r) != classSpace {
			break
		}
		lastStart = end
		end += n
	}
	// Greedy \s+ then the look-ahead: at end of text it succeeds; otherwise
	// backtrack one rune so the last space stays with the following word.
	if end == len(s) || lastStart == i {
		return end
	}
	return lastStart
}

// matchGPT2 implements patternGPT2.
func matchGPT2(s string, i int) int {
	if e := matchContraction(s, i, false); e >= 0 {
		return e
	}
	r, n := next(s, i)
	if r == ' ' && i+n < len(s) {
		r2, _ := next(s, i+n)
		if c2 := classOf(r2); c2 != classSpace {
			return scanClass(s, i+n, c2)
		}
	}
	if c := classOf(r); c != classSpace {
		return scanClass(s, i, c)
	}
	return matchWhitespace(s, i)
}

// matchLlama3Style implements patternLlama3 (maxDigits 3) and patternQwen2
// (maxDigits 1), which differ only in \p{N}{1,3} versus \p{N}.
func matchLlama3Style(s string, i int, maxDigits int) int {
	if e := matchContraction(s, i, true); e >= 0 {
		return e
	}
	r, n := next(s, i)
	c := classOf(r)
	// [^\r\n\p{L}\p{N}]?\p{L}+
	if c == classLetter {
		return scanClass(s, i, classLetter)
	}
	if c != classNumber && r != '\r' && r != '\n' && i+n < len(s) {
		if r2, _ := next(s, i+n); classOf(r2) == classLetter {
			return scanClass(s, i+n, classLetter)
		}
	}
	// \p{N}{1,maxDigits}
	if c == classNumber {
		j := i + n
		for k := 1; k < maxDigits && j < len(s); k++ {
			r2, n2 := next(s, j)
			if classOf(r2) != classNumber {
				break
			}
			j += n2
		}
		return j
	}
	// ` ?[^\s\p{L}\p{N}]+[\r\n]*`
	if r == ' ' && i+n < len(s) {
		if r2, _ := next(s, i+n); classOf(r2) == classOther {
			return scanCRLF(s, scanClass(s, i+n, classOther))
		}
	}
	if c == classOther {
		return scanCRLF(s, scanClass(s, i, classOther))
	}
	// \s*[\r\n]+ : the longest whitespace run that ends with its last \r or \n.
	lastNL := -1
	for j := i; j < len(s); {
		r2, n2 := next(s, j)
		if classOf(r2) != classSpace {
			break
		}
		if r2 == '\r' || r2 == '\n' {
			lastNL = j
		}
		j += n2
	}
	if lastNL >= 0 {
		return lastNL + 1
	}
	return matchWhitespace(s, i)
}

// splitIsolated applies a pattern the way Hugging Face's Split pre-tokenizer
// with behavior "Isolated" does: every match is a piece, and so is every gap
// between matches.
func splitIsolated(m matcher, s string, emit func(string)) {
	gap, i := 0, 0
	for i < len(s) {
		if e := m(s, i); e > i {
			if gap < i {
				emit(s[gap:i])
			}
			emit(s[i:e])
			i, gap = e, e
			continue
		}
		_, n := next(s, i)
		i += n
	}
	if gap < len(s) {
		emit(s[gap:])
	}
}

// splitDigits is the Digits pre-tokenizer: runs of \p{N} (or each one, with
// individual_digits) become their own pieces.
func splitDigits(s string, individual bool, emit func(string)) {
	start := 0
	for i := 0; i < len(s); {
		r, n := next(s, i)
		if classOf(r) != classNumber {
			i += n
			continue
		}
		if start < i {
			emit(s[start:i])
		}
		j := i + n
		if !individual {
			j = scanClass(s, i, classNumber)
		}
		emit(s[i:j])
		i, start = j, j
	}
	if start < len(s) {
		emit(s[start:])
	}
}
