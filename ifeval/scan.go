package ifeval

import (
	"strings"
	"unicode/utf8"

	"github.com/autoif/autoif/internal/pystr"
)

// Hand-written scanners for the official regular expressions whose semantics are simple. A
// regexp that starts with a character class gives Go's matcher no literal to skip ahead to,
// so it steps through the whole response at every position; these find the same matches in
// one pass. Each is fuzzed against the regexp it replaces (scan_test.go).

// splitParagraphs is re.split(r"\s?\*\*\*\s?", s). A match is "***" with at most one
// whitespace character before and after it. The leftmost match begins at the first "***"
// found, or one character earlier when that character is whitespace (and not part of the
// previous match): no match can begin further left, since each holds a "***" at most one
// character in.
func splitParagraphs(s string) []string {
	var out []string
	beg, pos := 0, 0
	for {
		i := strings.Index(s[pos:], "***")
		if i < 0 {
			break
		}
		start, end := pos+i, pos+i+3
		if r, w := utf8.DecodeLastRuneInString(s[pos:start]); w > 0 && pystr.IsSpace(r) {
			start -= w
		}
		if r, w := utf8.DecodeRuneInString(s[end:]); w > 0 && pystr.IsSpace(r) {
			end += w
		}
		out = append(out, s[beg:start])
		beg, pos = end, end
	}
	return append(out, s[beg:])
}

// countBullets is the number of matches of (?m)^\s*\*[^\*].*$ plus those of (?m)^\s*-.*$:
// lines that, after whitespace (which may span lines), start with '*' and another character
// than '*' (a newline included), or with '-'. A match runs to the end of its line, so the
// next one starts at a later line start; a line start whose whitespace run ends elsewhere
// than at a bullet gives nothing, and neither do the line starts inside that run.
func countBullets(s string) int {
	return countLineMatches(s, func(q int) int {
		if s[q] != '*' {
			return -1
		}
		r, w := utf8.DecodeRuneInString(s[q+1:])
		if w == 0 || r == '*' {
			return -1
		}
		return q + 1 + w
	}) + countLineMatches(s, func(q int) int {
		if s[q] != '-' {
			return -1
		}
		return q + 1
	})
}

// countLineMatches counts the non-overlapping matches of (?m)^\s*X.*$, where head(q) is the
// end of X matched at q (q < len(s)), or -1.
func countLineMatches(s string, head func(q int) int) int {
	n := 0
	for p := 0; p < len(s); {
		q := p
		for q < len(s) {
			r, w := utf8.DecodeRuneInString(s[q:])
			if !pystr.IsSpace(r) {
				break
			}
			q += w
		}
		if q < len(s) {
			if e := head(q); e >= 0 {
				n++
				end := len(s)
				if i := strings.IndexByte(s[e:], '\n'); i >= 0 {
					end = e + i
				}
				// The next match starts at a line start at or after end: end itself only when
				// it follows a newline (X took it and the line after is empty).
				if end > 0 && s[end-1] == '\n' {
					p = end
					continue
				}
				q = end
			}
		}
		i := strings.IndexByte(s[min(q, len(s)):], '\n')
		if i < 0 {
			break
		}
		p = q + i + 1
	}
	return n
}

// hasPostscript is re.search(r"\s*" + parts joined by r"\s?" + ".*$", s, re.MULTILINE) for
// literal parts that do not start with whitespace: the leading \s* and the trailing .*$ match
// anywhere, so this is a search for the parts, each separated from the last by at most one
// whitespace character.
func hasPostscript(s string, parts []string) bool {
	for pos := 0; ; {
		i := strings.Index(s[pos:], parts[0])
		if i < 0 {
			return false
		}
		at := pos + i
		if postscriptRest(s[at+len(parts[0]):], parts[1:]) {
			return true
		}
		_, w := utf8.DecodeRuneInString(s[at:])
		pos = at + max(w, 1)
	}
}

func postscriptRest(s string, parts []string) bool {
	for _, p := range parts {
		if r, w := utf8.DecodeRuneInString(s); w > 0 && pystr.IsSpace(r) {
			s = s[w:] // the part does not start with whitespace: \s? must take it
		}
		if !strings.HasPrefix(s, p) {
			return false
		}
		s = s[len(p):]
	}
	return true
}
