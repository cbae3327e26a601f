package synth

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/autoif/autoif/endpoint"
	"github.com/autoif/autoif/reward/crossval"
)

func TestParseFunctionCompletionAsModelsWriteIt(t *testing.T) {
	for _, tc := range []struct {
		name, text string
		func_      string
		cases      int
		why        Reason
	}{
		{"fenced json", "Sure:\n```json\n{\"func\": \"def evaluate(response):\\n    return True\", \"cases\": [{\"input\": \"a\", \"output\": true}]}\n```", "def evaluate(response):\n    return True", 1, ""},
		{"unlabelled fence", "```\n{\"func\": \"def evaluate(r): return 1\", \"cases\": []}\n```", "def evaluate(r): return 1", 0, ""},
		{"bare object", "Here it is {\"func\": \"def evaluate(r): return 1\", \"cases\": [{\"input\": \"x\", \"output\": false}]} done", "def evaluate(r): return 1", 1, ""},
		{"invalid escape", "```json\n{\"func\": \"import re\\ndef evaluate(r):\\n    return re.search('\\d', r) is None\", \"cases\": []}\n```", "import re\ndef evaluate(r):\n    return re.search('\\d', r) is None", 0, ""},
		{"single quotes and True", "```json\n{\"func\": \"def evaluate(r): return r.startswith('#')\", \"cases\": [{\"input\": '# a', \"output\": True},]}\n```", "def evaluate(r): return r.startswith('#')", 1, ""},
		{"cut at max_tokens after a python fence", "```python\ndef evaluate(response):\n    return len(response) < 10", "def evaluate(response):\n    return len(response) < 10", 0, ""},
		{"no code", "I would check the length of the response.", "", 0, ReasonNoJSON},
		{"json without func", "```json\n{\"cases\": []}\n```", "", 0, ReasonNoFunc},
	} {
		fc, why := ParseFunctionCompletion(tc.text)
		if why != tc.why || fc.Func != tc.func_ || len(fc.Cases) != tc.cases {
			t.Errorf("%s: %q %d cases, %q", tc.name, fc.Func, len(fc.Cases), why)
		}
	}
}

func TestParseStringListScoreAndLabel(t *testing.T) {
	for text, want := range map[string][]string{
		`["Answer in lowercase.", "Use no capitals."]`:                {"Answer in lowercase.", "Use no capitals."},
		"```json\n[\"One\"]\n```":                                     {"One"},
		`Here: ['Don\'t use commas', "Write \"quoted\" text"] thanks`: {"Don't use commas", `Write "quoted" text`},
	} {
		if got, ok := ParseStringList(text); !ok || !slices.Equal(got, want) {
			t.Errorf("%q: %q %v", text, got, ok)
		}
	}
	if _, ok := ParseStringList("no list here"); ok {
		t.Error("a list in text without one")
	}
	for text, want := range map[string]float64{"analysis...\n\nScore: 8": 8, "**Score:** 9.": 9, "Score: 3\nOn reflection, Score: 7": 7} {
		if got, ok := ParseScore(text); !ok || got != want {
			t.Errorf("%q: %v %v", text, got, ok)
		}
	}
	for _, bad := range []string{"I rate it highly", "Score: 11"} {
		if s, ok := ParseScore(bad); ok {
			t.Errorf("%q: scored %v", bad, s)
		}
	}
	if l, ok := ParseNLILabel("The hypothesis is not a contradiction of the premise; both ask for lowercase.\nEntailment"); !ok || l != "entailment" {
		t.Errorf("label %q", l)
	}
}

func TestPromptFillAndUserPrompt(t *testing.T) {
	// A value holding a placeholder stays as written; unknown braces stay.
	got := fill("[I] {instruction} [Q] {query} `Score: {score}`", "instruction", "say {query}", "query", "why?")
	if got != "[I] say {query} [Q] why? `Score: {score}`" {
		t.Errorf("fill: %q", got)
	}
	for _, tc := range [][3]string{
		{"use no commas", "what is go?", "What is go? Use no commas."},
		{"Answer in one line.", "tell me a joke", "Tell me a joke. Answer in one line."},
	} {
		if got := UserPrompt(tc[0], tc[1]); got != tc[2] {
			t.Errorf("UserPrompt(%q, %q) = %q", tc[0], tc[1], got)
		}
	}
}

// Stage 1 keeps the seeds and each new instruction once, however the model repeats them.
func TestInstructionsStageDeduplicates(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		completion := "Here are some instructions:\n- Answer in exactly three sentences\n- Use no words containing the letter 'E'.\n" +
			"- answer in exactly three  sentences.\n1. End your response with a question\nThanks!"
		json.NewEncoder(w).Encode(map[string]any{"choices": []any{
			map[string]any{"message": map[string]any{"content": completion}},
			map[string]any{"message": map[string]any{"content": "- Wrap the whole answer in double quotes"}},
		}})
	}))
	defer srv.Close()
	c, err := endpoint.NewClient(endpoint.ClientOptions{URL: srv.URL, Model: "m"})
	if err != nil {
		t.Fatal(err)
	}
	rows, rep := Instructions(context.Background(), c, []string{"Use no words containing the letter 'E'", "Answer with a haiku"}, InstructionsOptions{Sampling: Sampling{N: 2}})
	var got []string
	for _, r := range rows {
		got = append(got, r.Instruction)
	}
	want := []string{"Use no words containing the letter 'E'", "Answer with a haiku", "Answer in exactly three sentences", "End your response with a question", "Wrap the whole answer in double quotes"}
	if !slices.Equal(got, want) {
		t.Errorf("instructions %q", got)
	}
	if rep.In != 7 || rep.Kept != 5 || rep.Dropped[ReasonSeed] != 1 || rep.Dropped[ReasonDuplicate] != 1 {
		t.Errorf("report %+v", rep)
	}
}

// A bad config is one error line naming what is wrong, before anything runs.
func TestConfigErrors(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct{ yaml, want string }{
		{"input: x\nstages: {functions: {endpoint: t}}\nendpoints: {t: {url: http://h, model: m}}\nstart: function\n", `start: "function" is not a stage`},
		{"input: x\nstart: functions\nstop: functions\nstages: {functions: {endpoint: nope}}\n", `stages.functions.endpoint: "nope" is not in endpoints`},
		{"input: x\nstart: functions\nstop: functions\nbogus: 1\n", "field bogus not found"},
		{"start: functions\n", "input: required"},
		{"input: x\nstart: backtranslate\nendpoints: {t: {url: http://h, model: m}}\nstages: {backtranslate: {endpoint: t}, responses: {endpoint: t}, judge: {endpoint: t}}\n", "queries: a user queries file is required"},
		{"input: x\nstart: judge\nendpoints: {t: {url: http://h, model: m}}\nstages: {judge: {endpoint: t, min_score: 11}}\n", "min_score must be in [0, 10]"},
		{"input: x\nstart: functions\nstop: functions\nendpoints: {t: {url: http://h, model: m}}\nstages: {functions: {endpoint: t}}\nprompts: {functions: \"no placeholder\"}\n", "prompt functions: no {instruction} placeholder"},
	} {
		p := filepath.Join(dir, "c.yaml")
		os.WriteFile(p, []byte(tc.yaml), 0o644)
		_, err := LoadConfig(p)
		if err == nil || !strings.Contains(err.Error(), tc.want) || strings.Contains(err.Error(), "\n") {
			t.Errorf("%q: %v, want %q", tc.yaml, err, tc.want)
		}
	}
}

// The example configs load as shipped.
func TestExampleConfigsLoad(t *testing.T) {
	for _, name := range []string{"strong-to-weak.yaml", "self-alignment.yaml"} {
		c, err := LoadConfig(filepath.Join("examples", name))
		if err != nil {
			t.Errorf("%s: %v", name, err)
			continue
		}
		if seeds, err := ReadInstructions(c.Input); err != nil || len(seeds) != 36 {
			t.Errorf("%s: %d seeds, %v", name, len(seeds), err)
		}
	}
}

// With NLI through an LLM prompt, an instruction one of whose back-translations the model
// calls a contradiction is dropped; one it cannot judge is dropped and counted apart.
func TestBackTranslateWithLLMNLI(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var req struct {
			Messages []struct{ Content string } `json:"messages"`
		}
		json.NewDecoder(r.Body).Decode(&req)
		p := req.Messages[0].Content
		var answer string
		switch {
		case strings.Contains(p, "[Hypothesis] Use capitals only"):
			answer = "The premise asks for lowercase, the hypothesis for capitals.\nContradiction"
		case strings.Contains(p, "[Hypothesis] Shout"):
			answer = "I am not sure."
		case strings.Contains(p, "[Hypothesis]"):
			answer = "Both ask for lowercase.\n**entailment**"
		case strings.Contains(p, "islower"):
			answer = "```json\n[\"Answer in lowercase\", \"Use capitals only\"]\n```"
		case strings.Contains(p, "isupper"):
			answer = `["Shout"]`
		default:
			answer = `["Write in lowercase letters", "No capital letters"]`
		}
		json.NewEncoder(w).Encode(map[string]any{"choices": []any{map[string]any{"message": map[string]any{"content": answer}}}})
	}))
	defer srv.Close()
	c, err := endpoint.NewClient(endpoint.ClientOptions{URL: srv.URL, Model: "m"})
	if err != nil {
		t.Fatal(err)
	}
	rows := []BackTransRow{
		{Instruction: "Answer in lowercase letters", Functions: []crossval.Func{{Source: "def evaluate(r):\n    return r.islower()", Accuracy: 1}}},
		{Instruction: "Answer in all capitals", Functions: []crossval.Func{{Source: "def evaluate(r):\n    return r.isupper()", Accuracy: 1}}},
		{Instruction: "Use no capital letters", Functions: []crossval.Func{{Source: "def evaluate(r):\n    return r == r.lower()", Accuracy: 1}}},
	}
	out, rep := BackTranslate(context.Background(), c, LLMNLI{LLM: c}, rows, BackTranslateOptions{})
	if len(out) != 1 || out[0].Instruction != "Use no capital letters" || !slices.Equal(out[0].NLIScores, []string{"entailment", "entailment"}) {
		t.Errorf("survivors %+v", out)
	}
	if rep.Dropped[ReasonContradicts] != 1 || rep.Dropped[ReasonNLIFailed] != 1 {
		t.Errorf("dropped %v", rep.Dropped)
	}
}
