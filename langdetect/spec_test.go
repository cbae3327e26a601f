package langdetect

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
)

// langdetect 1.0.9's answers with DetectorFactory.seed = 0, each showing one rule.
func TestSpecCases(t *testing.T) {
	for _, c := range []struct{ name, text, want string }{
		{"no letters: no features", "12345 !!! ???", ""},
		{"empty: no features", "", ""},
		{"a URL is removed before detection", "http://example.com/a/b/c", ""},
		{"an e-mail address is removed; what is left decides", "mail someone@example.com", "et"},
		{"words in capitals count only by their first letter", "THIS IS ALL CAPS ENGLISH TEXT", "en"},
		{"English", "This is English.", "en"},
		{"French", "Ceci est une phrase en français.", "fr"},
		{"kana normalise to one character per script", "これは日本語の文です。", "ja"},
		{"simplified Chinese", "这是一个中文句子。", "zh-cn"},
		{"precomposed Vietnamese", "Đây là một câu tiếng Việt.", "vi"},
		{"decomposed Vietnamese diacritics are composed first", "Đây là một câu tiếng Việt.", "vi"},
		{"Latin letters are dropped from mostly non-Latin text", "Hello мир мир мир мир", "ru"},
		{"two letters are enough for an answer", "ok", "sk"},
		{"only the first 10,000 characters count", strings.Repeat("a", 20000) + " Dies ist ein deutscher Satz.", "so"},
	} {
		t.Run(c.name, func(t *testing.T) {
			got, err := Detect(c.text)
			if c.want == "" {
				if !errors.Is(err, ErrNoFeatures) {
					t.Fatalf("Detect(%q) = %q, %v; want ErrNoFeatures", trunc(c.text), got, err)
				}
				return
			}
			if err != nil || got != c.want {
				t.Fatalf("Detect(%q) = %q, %v; want %q", trunc(c.text), got, err, c.want)
			}
		})
	}
}

func TestRemoveURLsAndMails(t *testing.T) {
	for _, c := range []struct{ in, want string }{
		{"see https://a.b/c?d=1#e now", "see   now"},
		{"http:// alone", "http:// alone"},
		{"x" + strings.Repeat("y", 10) + "@z", "x" + strings.Repeat("y", 10) + "@z"}, // one-character domain: no match
		{"me@ab", " "},                 // the domain's first part gives back a character
		{"a@b.c and d@e.f", "  and  "}, // the '.' may only follow the first domain character
		{strings.Repeat("l", 70) + "@host.org", strings.Repeat("l", 6) + " "}, // local part: at most 64
	} {
		got := removeMails(removeURLs(c.in))
		if got != c.want {
			t.Errorf("%q -> %q, want %q", c.in, got, c.want)
		}
	}
}

func TestLanguages(t *testing.T) {
	ls := Languages()
	if len(ls) != 55 || !slices.IsSorted(ls) || !slices.Contains(ls, "en") || !slices.Contains(ls, "zh-tw") {
		t.Fatalf("Languages() = %q", ls)
	}
}

// Whatever the input: no panic, the same answer twice, and a language of the profiles,
// "unknown" or ErrNoFeatures.
func FuzzDetect(f *testing.F) {
	for _, s := range []string{"", "hello world", "Đây", "これは", "a@b.cc http://x.y", "\xff\xfe", "ٯ ی ۃ", "ș ț Ḁ ỹ"} {
		f.Add(s)
	}
	langs := Languages()
	f.Fuzz(func(t *testing.T, text string) {
		got, err := Detect(text)
		again, err2 := Detect(text)
		if got != again || !errors.Is(err, err2) && err != err2 {
			t.Fatalf("two answers: %q, %v and %q, %v", got, err, again, err2)
		}
		if err != nil {
			if !errors.Is(err, ErrNoFeatures) {
				t.Fatalf("error %v", err)
			}
			return
		}
		if got != unknownLang && !slices.Contains(langs, got) {
			t.Fatalf("Detect(%q) = %q", text, got)
		}
	})
}

func BenchmarkDetect(b *testing.B) {
	gs := readGoldens(b, "testdata/goldens.jsonl.gz")
	var text string
	for _, g := range gs[60:] { // the longest response (past the hand-written cases)
		if len(g.Text) > len(text) {
			text = g.Text
		}
	}
	Detect("warm up")
	b.SetBytes(int64(len(text)))
	for b.Loop() {
		Detect(text)
	}
}

// The profiles are shared: concurrent callers get the answers a single caller gets.
func TestConcurrentUse(t *testing.T) {
	gs := readGoldens(t, "testdata/goldens.jsonl.gz")[:150]
	done := make(chan error, 4)
	for w := 0; w < 4; w++ {
		go func() {
			for _, g := range gs {
				if got := detectAsPython(g.Text); got != g.Lang {
					done <- fmt.Errorf("%q: %q, want %q", trunc(g.Text), got, g.Lang)
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
