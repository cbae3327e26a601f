package ifeval

import "github.com/autoif/autoif/internal/pystr"

// The official checker is Python: its verdicts depend on what CPython's str methods and `re`
// call whitespace, word characters, digits and case. Those definitions live in
// internal/pystr; these are the regexp atoms built from them.
const (
	// pyS is re's `\s`, pyD re's `\d` (any Unicode decimal digit) in a str pattern.
	pyS = `[` + pystr.SpaceClass + `]`
	pyD = `\p{Nd}`
)

// countWords is instructions_util.count_words: the number of `\w+` runs (NLTK's
// RegexpTokenizer(r"\w+") is re.findall underneath). Combining marks are not \w in Python,
// so "नमस्ते" holds several runs.
func countWords(s string) int {
	n, in := 0, false
	for _, r := range s {
		w := pystr.IsWord(r)
		if w && !in {
			n++
		}
		in = w
	}
	return n
}
