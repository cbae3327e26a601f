package tokenizer

import (
	"sort"
	"unicode"
	"unicode/utf8"
)

// AddedToken is an entry of tokenizer.json's added_tokens: text that is cut
// out of the input before normalisation and BPE and mapped to one id.
type AddedToken struct {
	ID         int    `json:"id"`
	Content    string `json:"content"`
	SingleWord bool   `json:"single_word"`
	LStrip     bool   `json:"lstrip"`
	RStrip     bool   `json:"rstrip"`
	Normalized bool   `json:"normalized"`
	Special    bool   `json:"special"`
}

// addedMatcher finds added tokens with leftmost-longest semantics, as the
// Aho-Corasick automaton of Hugging Face's AddedVocabulary does.
type addedMatcher struct {
	isFirst [256]bool  // bytes some token starts with; lets split skip the rest fast
	byFirst [256][]int // first byte → indices into tokens, longest first
	tokens  []AddedToken
	pattern []string // what is searched for (the normalised content for normalized tokens)
}

func newAddedMatcher(tokens []AddedToken, pattern func(AddedToken) string) *addedMatcher {
	m := &addedMatcher{tokens: tokens}
	for i, t := range tokens {
		p := pattern(t)
		m.pattern = append(m.pattern, p)
		if p == "" {
			continue
		}
		m.byFirst[p[0]] = append(m.byFirst[p[0]], i)
		m.isFirst[p[0]] = true
	}
	for b := range m.byFirst {
		c := m.byFirst[b]
		sort.SliceStable(c, func(x, y int) bool { return len(m.pattern[c[x]]) > len(m.pattern[c[y]]) })
	}
	return m
}

func (m *addedMatcher) empty() bool { return m == nil || len(m.tokens) == 0 }

// split calls emit for each plain-text piece (id < 0) and each added token, in
// order, applying single_word, lstrip and rstrip like HF's find_matches.
func (m *addedMatcher) split(s string, emit func(piece string, id int)) {
	if m.empty() {
		emit(s, -1)
		return
	}
	done := 0 // everything before done has been emitted
	for i := 0; i < len(s); {
		if !m.isFirst[s[i]] {
			i++
			continue
		}
		k := m.longestAt(s, i)
		if k < 0 {
			i++
			continue
		}
		t := m.tokens[k]
		start, stop := i, i+len(m.pattern[k])
		i = stop // the automaton resumes after a match even when it is rejected
		if t.SingleWord && (endsWithWordChar(s[:start]) || startsWithWordChar(s[stop:])) {
			continue
		}
		if t.LStrip {
			start = max(leftmostTrailingSpace(s[:start]), done)
		}
		if t.RStrip {
			stop += leadingSpaceLen(s[stop:])
			i = stop
		}
		if done < start {
			emit(s[done:start], -1)
		}
		emit(s[start:stop], t.ID)
		done = stop
	}
	if done < len(s) {
		emit(s[done:], -1)
	}
}

func (m *addedMatcher) longestAt(s string, i int) int {
	for _, k := range m.byFirst[s[i]] {
		p := m.pattern[k]
		if len(s)-i >= len(p) && s[i:i+len(p)] == p {
			return k
		}
	}
	return -1
}

func isWordChar(r rune) bool { return r == '_' || unicode.IsLetter(r) || unicode.IsNumber(r) }

func endsWithWordChar(s string) bool {
	r, _ := utf8.DecodeLastRuneInString(s)
	return s != "" && isWordChar(r)
}

func startsWithWordChar(s string) bool {
	r, _ := utf8.DecodeRuneInString(s)
	return s != "" && isWordChar(r)
}

func isRustWhitespace(r rune) bool { return unicode.Is(unicode.White_Space, r) }

func leftmostTrailingSpace(s string) int {
	i := len(s)
	for i > 0 {
		r, n := utf8.DecodeLastRuneInString(s[:i])
		if !isRustWhitespace(r) {
			break
		}
		i -= n
	}
	return i
}

func leadingSpaceLen(s string) int {
	i := 0
	for i < len(s) {
		r, n := utf8.DecodeRuneInString(s[i:])
		if !isRustWhitespace(r) {
			break
		}
		i += n
	}
	return i
}
