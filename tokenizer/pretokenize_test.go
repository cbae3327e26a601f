package tokenizer

import (
	"slices"
	"strconv"
	"strings"
	"testing"
)

func split(m matcher, s string) []string {
	var out []string
	splitIsolated(m, s, func(p string) { out = append(out, p) })
	return out
}

var (
	gpt2Matcher, _   = matcherFor(patternGPT2)
	llama3Matcher, _ = matcherFor(patternLlama3)
	qwen2Matcher, _  = matcherFor(patternQwen2)
)

func TestSplitPatternsBehaveLikeTheirRegexes(t *testing.T) {
	// Expected pieces derived by reading each regex; the same behaviours are
	// cross-checked against Python's regex module in the next test.
	tests := []struct {
		name, pattern, text string
		want                []string
	}{
		{"gpt2 keeps a leading space on words", patternGPT2, "Hello world", []string{"Hello", " world"}},
		{"gpt2 groups digits", patternGPT2, "in 2024", []string{"in", " 2024"}},
		{"qwen2 splits digits one by one", patternQwen2, "in 2024", []string{"in", " ", "2", "0", "2", "4"}},
		{"llama3 groups up to three digits", patternLlama3, "1234567", []string{"123", "456", "7"}},
		{"gpt2 contractions are case-sensitive", patternGPT2, "IT'S it's", []string{"IT", "'", "S", " it", "'s"}},
		{"qwen2 contractions ignore case", patternQwen2, "IT'S it's", []string{"IT", "'S", " it", "'s"}},
		{"qwen2 contraction matches the long s by case folding", patternQwen2, "it'ſ", []string{"it", "'ſ"}},
		{"whitespace run leaves its last space to the next word", patternGPT2, "a   b", []string{"a", "  ", " b"}},
		{"trailing whitespace is one piece", patternGPT2, "a   ", []string{"a", "   "}},
		{"a single space before a newline-led word stays alone", patternGPT2, " \nb", []string{" ", "\n", "b"}},
		{"qwen2 keeps newlines with preceding spaces", patternQwen2, "x  \n\n  y", []string{"x", "  \n\n", " ", " y"}},
		{"qwen2 attaches one non-letter to a word", patternQwen2, "(normal)\tword", []string{"(normal", ")", "\tword"}},
		{"qwen2 punctuation takes following newlines", patternQwen2, "a.\n\nb", []string{"a", ".\n\n", "b"}},
		{"qwen2 never glues a newline to a word", patternQwen2, "\nword", []string{"\n", "word"}},
		{"unicode spaces are whitespace", patternGPT2, "a\u3000\u3000b", []string{"a", "\u3000", "\u3000", "b"}},
		{"letters of every script", patternQwen2, " 日本語テキスト", []string{" 日本語テキスト"}},
		{"empty text has no pieces", patternQwen2, "", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, err := matcherFor(tt.pattern)
			if err != nil {
				t.Fatal(err)
			}
			if got := split(m, tt.text); !slices.Equal(got, tt.want) {
				t.Fatalf("split(%q) = %q, want %q", tt.text, got, tt.want)
			}
		})
	}
}

// testdata/vectors.json "splits": regex.findall with the published pattern
// strings over 400 random strings from an alphabet that hits every branch.
func TestSplitPatternsMatchPythonRegexOnRandomText(t *testing.T) {
	var file struct {
		Splits []struct {
			Text   string   `json:"text"`
			GPT2   []string `json:"gpt2"`
			Llama3 []string `json:"llama3"`
			Qwen2  []string `json:"qwen2"`
		} `json:"splits"`
	}
	readJSONFile(t, "testdata/vectors.json", &file)
	if len(file.Splits) < 400 {
		t.Fatalf("only %d split cases", len(file.Splits))
	}
	for _, c := range file.Splits {
		for _, p := range []struct {
			name string
			m    matcher
			want []string
		}{{"gpt2", gpt2Matcher, c.GPT2}, {"llama3", llama3Matcher, c.Llama3}, {"qwen2", qwen2Matcher, c.Qwen2}} {
			if got := split(p.m, c.Text); !slices.Equal(got, p.want) && !(len(got) == 0 && len(p.want) == 0) {
				t.Errorf("%s split(%q)\n got %q\nwant %q", p.name, c.Text, got, p.want)
			}
		}
	}
}

func TestUnrecognisedSplitPatternIsAnErrorNamingIt(t *testing.T) {
	const odd = `\w+|\s+`
	_, err := matcherFor(odd)
	if err == nil || !strings.Contains(err.Error(), strconv.Quote(odd)) {
		t.Fatalf("matcherFor(%q) error = %v, want one quoting the pattern", odd, err)
	}
}

func TestDigitsPreTokenizer(t *testing.T) {
	collect := func(s string, individual bool) []string {
		var out []string
		splitDigits(s, individual, func(p string) { out = append(out, p) })
		return out
	}
	if got, want := collect("ab123c4", true), []string{"ab", "1", "2", "3", "c", "4"}; !slices.Equal(got, want) {
		t.Errorf("individual digits: %q, want %q", got, want)
	}
	if got, want := collect("ab123c4", false), []string{"ab", "123", "c", "4"}; !slices.Equal(got, want) {
		t.Errorf("contiguous digits: %q, want %q", got, want)
	}
}

func TestInvalidUTF8IsSplitAndRoundTripsByteForByte(t *testing.T) {
	tok := reference(t, "gpt2")
	s := "ok \xff\xfe bytes \xe2\x82"
	got, err := tok.Decode(tok.Encode(s, false))
	if err != nil || got != s {
		t.Fatalf("Decode(Encode(%q)) = %q, %v", s, got, err)
	}
}
