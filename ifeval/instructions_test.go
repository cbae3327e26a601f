package ifeval

import (
	"encoding/json"
	"slices"
	"strings"
	"testing"
)

type followCase struct {
	name     string
	id       string
	kwargs   string // JSON object
	response string
	want     bool
}

func kw(t testing.TB, s string) map[string]any {
	t.Helper()
	m := map[string]any{}
	if s != "" {
		if err := json.Unmarshal([]byte(s), &m); err != nil {
			t.Fatalf("kwargs %s: %v", s, err)
		}
	}
	return m
}

func runFollowCases(t *testing.T, cases []followCase) {
	t.Helper()
	for _, c := range cases {
		ins, err := Build(c.id, kw(t, c.kwargs), nil)
		if err != nil {
			t.Fatalf("%s: %s: %v", c.id, c.name, err)
		}
		if got := ins.Follows(NewText(c.response)); got != c.want {
			t.Errorf("%s: %s: Follows(%q) = %v, want %v", c.id, c.name, c.response, got, c.want)
		}
	}
}

// Each type's check_following, from the official code: the boundaries of each relation, and
// the places where Python's string semantics decide.
func TestInstructionsFollowTheOfficialChecks(t *testing.T) {
	runFollowCases(t, []followCase{
		{"keyword found ignoring case", "keywords:existence", `{"keywords":["Tea","moon"]}`, "MOON and tea", true},
		{"one keyword missing", "keywords:existence", `{"keywords":["tea","moon"]}`, "tea only", false},
		{"keyword inside a word counts (re.search)", "keywords:existence", `{"keywords":["cat"]}`, "concatenate", true},

		{"less than: one below", "keywords:frequency", `{"keyword":"x","frequency":3,"relation":"less than"}`, "x X", true},
		{"less than: equal fails", "keywords:frequency", `{"keyword":"x","frequency":3,"relation":"less than"}`, "x X x", false},
		{"at least: equal passes", "keywords:frequency", `{"keyword":"ab","frequency":2,"relation":"at least"}`, "AB ab", true},
		{"at least: one below fails", "keywords:frequency", `{"keyword":"ab","frequency":2,"relation":"at least"}`, "abc", false},
		{"occurrences do not overlap", "keywords:frequency", `{"keyword":"aa","frequency":2,"relation":"at least"}`, "aaa", false},
		{"keyword is stripped", "keywords:frequency", `{"keyword":" hi ","frequency":1,"relation":"at least"}`, "hi!", true},

		{"forbidden word present", "keywords:forbidden_words", `{"forbidden_words":["bad"]}`, "so BAD.", false},
		{"forbidden word only inside a word", "keywords:forbidden_words", `{"forbidden_words":["bad"]}`, "badge", true},
		{"Unicode word boundary (Python \\b)", "keywords:forbidden_words", `{"forbidden_words":["caf"]}`, "café", true},
		{"a later occurrence is bounded", "keywords:forbidden_words", `{"forbidden_words":["ab"]}`, "abab ab", false},

		{"letter less than: boundary", "keywords:letter_frequency", `{"letter":"a","let_frequency":2,"let_relation":"less than"}`, "Aa", false},
		{"letter less than: below", "keywords:letter_frequency", `{"letter":"a","let_frequency":2,"let_relation":"less than"}`, "A", true},
		{"letter at least counts lowercase", "keywords:letter_frequency", `{"letter":"Z","let_frequency":2,"let_relation":"at least"}`, "zZ", true},
		{"Kelvin sign lowercases to k", "keywords:letter_frequency", `{"letter":"k","let_frequency":1,"let_relation":"at least"}`, "\u212a", true},

		{"last paragraph may be empty", "length_constraints:number_paragraphs", `{"num_paragraphs":2}`, "a\n***\nb\n***\n", true},
		{"an empty paragraph in the middle fails", "length_constraints:number_paragraphs", `{"num_paragraphs":2}`, "a\n***\n***\nb", false},
		{"too many paragraphs", "length_constraints:number_paragraphs", `{"num_paragraphs":2}`, "a *** b *** c", false},

		{"words less than: boundary", "length_constraints:number_words", `{"num_words":3,"relation":"less than"}`, "one two-three", false},
		{"words at least: apostrophes split", "length_constraints:number_words", `{"num_words":3,"relation":"at least"}`, "don't go", true},
		{"combining marks split \\w runs", "length_constraints:number_words", `{"num_words":2,"relation":"at least"}`, "नमस्ते", true},

		{"nth paragraph first word", "length_constraints:nth_paragraph_first_word", `{"num_paragraphs":2,"nth_paragraph":2,"first_word":"Then"}`, "Intro.\n\n\"THEN, more.", true},
		{"nth paragraph wrong word", "length_constraints:nth_paragraph_first_word", `{"num_paragraphs":2,"nth_paragraph":2,"first_word":"then"}`, "Intro.\n\nThereafter.", false},
		{"paragraph count must match", "length_constraints:nth_paragraph_first_word", `{"num_paragraphs":3,"nth_paragraph":1,"first_word":"a"}`, "a\n\nb", false},
		{"empty paragraphs do not count", "length_constraints:nth_paragraph_first_word", `{"num_paragraphs":2,"nth_paragraph":1,"first_word":"a"}`, "a\n\n\n\nb", true},

		{"placeholders at least", "detectable_content:number_placeholders", `{"num_placeholders":2}`, "[a] and [b c]", true},
		{"placeholder cannot span lines", "detectable_content:number_placeholders", `{"num_placeholders":2}`, "[a] and [b\n]", false},

		{"P.S. with space", "detectable_content:postscript", `{"postscript_marker":"P.S."}`, "Hi\np. s. later", true},
		{"P.P.S needs its marker", "detectable_content:postscript", `{"postscript_marker":"P.P.S"}`, "Hi\nP.S. later", false},
		{"P.P.S found", "detectable_content:postscript", `{"postscript_marker":"P.P.S"}`, "Hi\nP.P.S later", true},
		{"other marker as regex", "detectable_content:postscript", `{"postscript_marker":"Note"}`, "NOTE: x", true},

		{"bullets exactly", "detectable_format:number_bullet_lists", `{"num_bullets":2}`, "* a\n- b\ntext", true},
		{"** line is not a bullet", "detectable_format:number_bullet_lists", `{"num_bullets":2}`, "* a\n**b**", false},
		{"one bullet too many", "detectable_format:number_bullet_lists", `{"num_bullets":1}`, "* a\n* b", false},

		{"constrained answer contained", "detectable_format:constrained_response", ``, "Well. My answer is maybe.", true},
		{"constrained answer without period", "detectable_format:constrained_response", ``, "My answer is yes", false},

		{"**a** counts once (as a double), *b* once", "detectable_format:number_highlighted_sections", `{"num_highlights":2}`, "**a** and *b*", true},
		{"**a** is not two highlights", "detectable_format:number_highlighted_sections", `{"num_highlights":3}`, "**a** and *b*", false},
		{"blank highlight does not count", "detectable_format:number_highlighted_sections", `{"num_highlights":1}`, "* * and **", false},

		{"sections at least", "detectable_format:multiple_sections", `{"section_spliter":"Section","num_sections":2}`, "Section 1\nx\nSection 2\ny", true},
		{"sections too few", "detectable_format:multiple_sections", `{"section_spliter":"SECTION","num_sections":2}`, "SECTION 1\nx\nSection 2", false},
		{"section digits are any Unicode digit", "detectable_format:multiple_sections", `{"section_spliter":"Part","num_sections":1}`, "Part ٣", true},

		{"json in a fence", "detectable_format:json_format", ``, "```json\n{\"a\": [1, 2.5e3]}\n```", true},
		{"Python accepts NaN", "detectable_format:json_format", ``, "[NaN, -Infinity]", true},
		{"trailing comma rejected", "detectable_format:json_format", ``, "{\"a\": 1,}", false},
		{"text around json rejected", "detectable_format:json_format", ``, "Here: {}", false},

		{"title", "detectable_format:title", ``, "<<My Title>>\ntext", true},
		{"blank title", "detectable_format:title", ``, "<< >>", false},

		{"two different responses", "combination:two_responses", ``, "one\n******\ntwo", true},
		{"two equal responses", "combination:two_responses", ``, "one\n******\n one ", false},
		{"three responses", "combination:two_responses", ``, "a******b******c", false},

		{"prompt repeated ignoring case", "combination:repeat_prompt", `{"prompt_to_repeat":"Write a poem."}`, "  WRITE A POEM. Roses...", true},
		{"prompt not first", "combination:repeat_prompt", `{"prompt_to_repeat":"Write a poem."}`, "Sure! Write a poem.", false},

		{"end phrase inside quotes", "startend:end_checker", `{"end_phrase":"Any other questions?"}`, "\"Text. any other questions?\"", true},
		{"words after end phrase", "startend:end_checker", `{"end_phrase":"Any other questions?"}`, "Any other questions? Bye", false},

		{"no comma", "punctuation:no_comma", ``, "a; b", true},
		{"comma", "punctuation:no_comma", ``, "a, b", false},
		{"fullwidth comma is not a comma", "punctuation:no_comma", ``, "a，b", true},

		{"quoted", "startend:quotation", ``, " \"hi\" ", true},
		{"single quote character", "startend:quotation", ``, "\"", false},

		{"sentences less than", "length_constraints:number_sentences", `{"num_sentences":2,"relation":"less than"}`, "One. Two.", false},
		{"sentences at least", "length_constraints:number_sentences", `{"num_sentences":2,"relation":"at least"}`, "One. Two.", true},
		{"capital words at least", "change_case:capital_word_frequency", `{"capital_frequency":2,"capital_relation":"at least"}`, "THE END of IT", true},
		{"capital words less than", "change_case:capital_word_frequency", `{"capital_frequency":2,"capital_relation":"less than"}`, "THE END of IT", false},
		{"lowercase english", "change_case:english_lowercase", ``, "this is a plain english sentence about the weather today", true},
		{"uppercase letter in lowercase check", "change_case:english_lowercase", ``, "This is a plain english sentence about the weather today", false},
		{"capital english", "change_case:english_capital", ``, "THIS IS A PLAIN ENGLISH SENTENCE ABOUT THE WEATHER TODAY", true},
		{"response language", "language:response_language", `{"language":"de"}`, "Das ist ein ganz normaler deutscher Satz über das Wetter heute.", true},
	})
}

// Loose mode accepts the response once any of its variants follows: without the first line
// (a preamble), without the last (a sign-off), without both, and without '*'.
func TestLooseModeVariants(t *testing.T) {
	in := Input{Key: 1, Prompt: "p",
		InstructionIDList: []string{"startend:quotation", "punctuation:no_comma", "detectable_format:title"},
		Kwargs:            []map[string]any{{}, {}, {}}}
	p, err := Prepare(in)
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		response      string
		strict, loose []bool
	}{
		{"Sure, here it is:\n\"<<T>> text\"", []bool{false, false, true}, []bool{true, true, true}},
		{"\"<<T>>\"\nHope this helps, bye", []bool{false, false, true}, []bool{true, true, true}},
		{"Sure, ok:\n\"<<T>>\"\nBye, now", []bool{false, false, true}, []bool{true, true, true}},
		{"Hi\n\"<<T>>, a\"\nBye", []bool{false, false, true}, []bool{true, false, true}},
		{"**\"<<T>>\"**", []bool{false, true, true}, []bool{true, true, true}},
		{"one line, no title", []bool{false, false, false}, []bool{false, false, false}},
		{" \n ", []bool{false, false, false}, []bool{false, false, false}},
	}
	for _, c := range cases {
		for _, m := range []struct {
			mode Mode
			want []bool
		}{{Strict, c.strict}, {Loose, c.loose}} {
			got := p.Evaluate(c.response, m.mode)
			for i := range m.want {
				if got.FollowInstructionList[i] != m.want[i] {
					t.Errorf("%s %q: %s = %v, want %v", m.mode, c.response, in.InstructionIDList[i], got.FollowInstructionList[i], m.want[i])
				}
			}
			all := !slices.Contains(m.want, false)
			if got.FollowAllInstructions != all {
				t.Errorf("%s %q: follow_all = %v, want %v", m.mode, c.response, got.FollowAllInstructions, all)
			}
		}
	}
}

func formatBools(b []bool) string {
	s, _ := json.Marshal(b)
	return string(s)
}

// Build binds kwargs as Python binds build_description(**kwargs).
func TestBuildRejectsWhatPythonRejects(t *testing.T) {
	for _, c := range []struct{ id, kwargs, want string }{
		{"keywords:frequency", `{"keyword":"a","frequency":1,"relation":"at most"}`, `relation must be "less than" or "at least"`},
		{"punctuation:no_comma", `{"num_words":3}`, "unexpected kwargs num_words"},
		{"length_constraints:number_words", `{"num_words":"ten","relation":"at least"}`, "num_words must be an integer"},
		{"length_constraints:number_words", `{"num_words":2.5,"relation":"at least"}`, "num_words must be an integer"},
		{"keywords:existence", `{"keywords":[]}`, "keywords is required"},
		{"combination:repeat_prompt", `{}`, "prompt_to_repeat must be set"},
		{"no:such_type", `{}`, "unknown instruction id"},
	} {
		_, err := Build(c.id, kw(t, c.kwargs), nil)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s %s: error %v, want one containing %q", c.id, c.kwargs, err, c.want)
		}
	}
}

// None (JSON null) and absent arguments draw as the official code does; a row's draw is
// seeded by its prompt, so preparing it twice gives the same verdicts.
func TestAbsentArgumentsDrawDeterministically(t *testing.T) {
	in := Input{Key: 7, Prompt: "Count the letters.",
		InstructionIDList: []string{"keywords:letter_frequency", "length_constraints:number_words", "en:punctuation:no_comma"},
		Kwargs:            []map[string]any{{"letter": "#", "let_frequency": nil, "let_relation": nil}, {}, {}}}
	responses := []string{"abc", strings.Repeat("the quick brown fox jumps ", 40), "zzzzzzzzzzzzzz"}
	first, err := Prepare(in)
	if err != nil {
		t.Fatal(err)
	}
	second, err := Prepare(in)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range responses {
		a, b := first.Evaluate(r, Strict), second.Evaluate(r, Strict)
		if formatBools(a.FollowInstructionList) != formatBools(b.FollowInstructionList) {
			t.Errorf("%q: %v then %v", r, a.FollowInstructionList, b.FollowInstructionList)
		}
	}
}

// An empty or blank response follows nothing, in both modes.
func TestBlankResponseFollowsNothing(t *testing.T) {
	p, err := Prepare(Input{Prompt: "p", InstructionIDList: []string{"punctuation:no_comma"}, Kwargs: []map[string]any{{}}})
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range []string{"", " \n\t", "\x1c"} {
		for _, m := range []Mode{Strict, Loose} {
			if o := p.Evaluate(r, m); o.FollowAllInstructions || o.FollowInstructionList[0] {
				t.Errorf("%s %q: followed", m, r)
			}
		}
	}
}
