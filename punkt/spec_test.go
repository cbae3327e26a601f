package punkt

import (
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"
	"unicode/utf8"
)

// Each case is NLTK 3.8's output (nltk.sent_tokenize / nltk.word_tokenize with the English
// pickle), with the rule of punkt.py or destructive.py it shows.
var specCases = []struct {
	name, text string
	sentences  []string
	words      []string
}{
	{
		name:      "abbreviation then a capitalised sentence starter",
		text:      "Dr. Watson arrived at 5 p.m. He was late.",
		sentences: []string{"Dr. Watson arrived at 5 p.m.", "He was late."},
		words:     []string{"Dr.", "Watson", "arrived", "at", "5", "p.m", ".", "He", "was", "late", "."},
	},
	{
		name:      "an abbreviation before a word seen mid-sentence in capitals is no break",
		text:      "The U.S. economy grew. The U.S. Army did not.",
		sentences: []string{"The U.S. economy grew.", "The U.S. Army did not."},
		words:     []string{"The", "U.S.", "economy", "grew", ".", "The", "U.S.", "Army", "did", "not", "."},
	},
	{
		name:      "an initial before a name is no break",
		text:      "It was J. Smith. And then some.",
		sentences: []string{"It was J. Smith.", "And then some."},
		words:     []string{"It", "was", "J.", "Smith", ".", "And", "then", "some", "."},
	},
	{
		name:      "an ellipsis before a word the heuristics cannot decide is no break",
		text:      "Wait... Then what?",
		sentences: []string{"Wait... Then what?"},
		words:     []string{"Wait", "...", "Then", "what", "?"},
	},
	{
		name:      "a number with a period before a capital is a break",
		text:      "I got 3. Then 4.",
		sentences: []string{"I got 3.", "Then 4."},
		words:     []string{"I", "got", "3", ".", "Then", "4", "."},
	},
	{
		name:      "numbered list items before lower case are no break",
		text:      "A list: 1. one 2. two",
		sentences: []string{"A list: 1. one 2. two"},
		words:     []string{"A", "list", ":", "1.", "one", "2.", "two"},
	},
	{
		name:      "repeated end marks collapse into one candidate break",
		text:      "Very bad acting!!! I promise.",
		sentences: []string{"Very bad acting!!!", "I promise."},
		words:     []string{"Very", "bad", "acting", "!", "!", "!", "I", "promise", "."},
	},
	{
		name:      "closing brackets and quotes move back into their sentence",
		text:      `(This is one.) This is two. He said "I cannot go." Then he left.`,
		sentences: []string{"(This is one.)", "This is two.", `He said "I cannot go."`, "Then he left."},
		words: []string{"(", "This", "is", "one", ".", ")", "This", "is", "two", ".", "He", "said", "``", "I",
			"can", "not", "go", ".", "''", "Then", "he", "left", "."},
	},
	{
		name:      "whitespace inside a sentence is kept; a blank line ends none by itself",
		text:      "Good muffins cost $3.88\nin New York.  Please buy me\ntwo of them.\n\nThanks.",
		sentences: []string{"Good muffins cost $3.88\nin New York.", "Please buy me\ntwo of them.", "Thanks."},
		words: []string{"Good", "muffins", "cost", "$", "3.88", "in", "New", "York", ".", "Please", "buy", "me",
			"two", "of", "them", ".", "Thanks", "."},
	},
	{
		name:      "dashes, and spaced periods that are an abbreviation type of the model",
		text:      "He left--quickly. ... . . . Done.",
		sentences: []string{"He left--quickly.", "... .", ".", ".", "Done."},
		words:     []string{"He", "left", "--", "quickly", ".", "...", ".", ".", ".", "Done", "."},
	},
	{
		name:      "clitics and MacIntyre contractions split",
		text:      "They're gonna say 'tis fine, I wanna go.",
		sentences: []string{"They're gonna say 'tis fine, I wanna go."},
		words:     []string{"They", "'re", "gon", "na", "say", "'t", "is", "fine", ",", "I", "wan", "na", "go", "."},
	},
	{
		name:      "a plain word's period breaks even before lower case; abbreviations match in any case",
		text:      "Mr. Smith. mr. smith.",
		sentences: []string{"Mr. Smith.", "mr. smith."},
		words:     []string{"Mr.", "Smith", ".", "mr.", "smith", "."},
	},
	{
		name:      "empty text",
		text:      "",
		sentences: nil,
		words:     nil,
	},
}

func TestSpecCases(t *testing.T) {
	for _, c := range specCases {
		t.Run(c.name, func(t *testing.T) {
			if got := English().Sentences(c.text); !reflect.DeepEqual(got, c.sentences) && len(got)+len(c.sentences) > 0 {
				t.Errorf("Sentences(%q)\n got %q\nwant %q", c.text, got, c.sentences)
			}
			if got := WordTokenize(c.text); !reflect.DeepEqual(got, c.words) && len(got)+len(c.words) > 0 {
				t.Errorf("WordTokenize(%q)\n got %q\nwant %q", c.text, got, c.words)
			}
		})
	}
}

func TestNewRejectsBadParameters(t *testing.T) {
	for _, in := range []string{``, `{`, `[]`, `{"abbrev_types": []}`} {
		if _, err := New([]byte(in)); err == nil {
			t.Errorf("New(%q) accepted", in)
		}
	}
}

// A 2,000-word response takes well under 10 ms (the best of five runs, so that other jobs on
// the machine do not decide the outcome).
func TestTwoThousandWordsInUnderTenMilliseconds(t *testing.T) {
	para := "Dr. Smith arrived at 5 p.m. on Jan. 5, 2023; he said: \"It's fine...\" (Really?) " +
		"The U.S. team won 3-2. Then they left -- quickly! Prices rose 4.5% in Q3. "
	var b strings.Builder
	for len(strings.Fields(b.String())) < 2000 {
		b.WriteString(para)
	}
	text := b.String()
	best := time.Hour
	for i := 0; i < 5; i++ {
		start := time.Now()
		n := len(English().Sentences(text))
		words := len(WordTokenize(text))
		if d := time.Since(start); d < best {
			best = d
		}
		if n < 100 || words < 2000 {
			t.Fatalf("%d sentences, %d words", n, words)
		}
	}
	if best > 10*time.Millisecond {
		t.Errorf("Sentences + WordTokenize on 2,000 words took %v", best)
	}
	t.Logf("Sentences + WordTokenize on %d words: %v", len(strings.Fields(text)), best)
}

func BenchmarkSentences2000Words(b *testing.B) {
	gs := readGoldens(b, "testdata/goldens.jsonl.gz")
	var text string
	for _, g := range gs { // the longest golden response
		if len(g.Text) > len(text) {
			text = g.Text
		}
	}
	b.SetBytes(int64(len(text)))
	b.ReportMetric(float64(len(strings.Fields(text))), "words")
	for b.Loop() {
		English().Sentences(text)
	}
}

func BenchmarkWordTokenize(b *testing.B) {
	gs := readGoldens(b, "testdata/goldens.jsonl.gz")
	var text string
	for _, g := range gs {
		if len(g.Text) > len(text) {
			text = g.Text
		}
	}
	b.SetBytes(int64(len(text)))
	for b.Loop() {
		WordTokenize(text)
	}
}

// Whatever the input: no panic, the same answer twice, sentences that are non-empty,
// in-order, non-overlapping substrings of the input, and tokens without whitespace.
func FuzzSentences(f *testing.F) {
	for _, c := range specCases {
		f.Add(c.text)
	}
	for _, s := range []string{"\"(a.)\" b. ''", "x. . . . y", "- -- --- .. ...", "'ſ 'K İnc. ΟΔΟΣ.", "\x1f.\u2028. \xff."} {
		f.Add(s)
	}
	tok := English()
	f.Fuzz(func(t *testing.T, text string) {
		sents := tok.Sentences(text)
		if again := tok.Sentences(text); !reflect.DeepEqual(sents, again) {
			t.Fatalf("two answers: %q and %q", sents, again)
		}
		pos := 0
		for _, s := range sents {
			if s == "" {
				t.Fatalf("empty sentence in %q", sents)
			}
			i := strings.Index(text[pos:], s)
			if i < 0 {
				t.Fatalf("sentence %q is not in the rest of the input %q", s, text[pos:])
			}
			pos += i + len(s)
		}
		words := WordTokenize(text)
		if again := WordTokenize(text); !reflect.DeepEqual(words, again) {
			t.Fatalf("two answers: %q and %q", words, again)
		}
		for _, w := range words {
			if w == "" || strings.ContainsAny(w, " \t\n\r") {
				t.Fatalf("token %q", w)
			}
			if utf8.ValidString(text) && !utf8.ValidString(w) {
				t.Fatalf("token %q splits a character", w)
			}
		}
	})
}

// The English model is shared: concurrent callers get the answers a single caller gets.
func TestConcurrentUse(t *testing.T) {
	gs := readGoldens(t, "testdata/goldens.jsonl.gz")[:200]
	done := make(chan error, 4)
	for w := 0; w < 4; w++ {
		go func() {
			for _, g := range gs {
				if got := WordTokenize(g.Text); len(got) != len(g.Words) {
					done <- fmt.Errorf("%q: %d tokens, want %d", g.Text, len(got), len(g.Words))
					return
				}
			}
			done <- nil
		}()
	}
	for w := 0; w < 4; w++ {
		if err := <-done; err != nil {
			t.Error(err)
		}
	}
}
