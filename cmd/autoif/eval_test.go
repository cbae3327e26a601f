package main

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/autoif/autoif/ifeval"
)

const officialGPT4 = "../../ifeval/testdata/official_gpt4/"

func runAutoif(t *testing.T, args ...string) (string, error) {
	t.Helper()
	app := newApp()
	var out bytes.Buffer
	app.Writer, app.ErrWriter = &out, &out
	err := app.Run(append([]string{"autoif"}, args...))
	return out.String(), err
}

// officialLines maps each prompt of an official eval_results file to its line.
func officialLines(t *testing.T, path string) map[string]string {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	m := map[string]string{}
	for _, line := range strings.SplitAfter(string(data), "\n") {
		var o ifeval.Output
		if json.Unmarshal([]byte(line), &o) == nil {
			m[o.Prompt] = line
		}
	}
	return m
}

// On the official GPT-4 responses, `autoif eval ifeval` writes the official checker's files
// byte for byte (for the prompts whose instruction types this build can check), prints the
// official report for each, and ends with the four figures as one JSON line.
func TestEvalIFEvalWritesTheOfficialFiles(t *testing.T) {
	strictWant := officialLines(t, officialGPT4+"eval_results_strict_gpt4.jsonl")
	looseWant := officialLines(t, officialGPT4+"eval_results_loose_gpt4.jsonl")
	dir := t.TempDir()
	var inputs bytes.Buffer
	var prompts []string
	for _, in := range ifeval.OfficialInputs() {
		if strictWant[in.Prompt] == "" {
			continue
		}
		// Keys 1122 and 1129 count a random letter in the official checker.
		if in.Key == 1122 || in.Key == 1129 {
			continue
		}
		line, _ := json.Marshal(in)
		inputs.Write(append(line, '\n'))
		prompts = append(prompts, in.Prompt)
	}
	inputPath := filepath.Join(dir, "input.jsonl")
	if err := os.WriteFile(inputPath, inputs.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	outDir := filepath.Join(dir, "out")
	out, err := runAutoif(t, "eval", "ifeval", "--input-data", inputPath,
		"--responses", officialGPT4+"input_response_data_gpt4_20231107_145030.jsonl", "--output-dir", outDir)
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	for _, f := range []struct {
		name string
		want map[string]string
	}{{ifeval.StrictFile, strictWant}, {ifeval.LooseFile, looseWant}} {
		var want strings.Builder
		for _, p := range prompts {
			want.WriteString(f.want[p])
		}
		got, err := os.ReadFile(filepath.Join(outDir, f.name))
		if err != nil {
			t.Fatal(err)
		}
		if string(got) != want.String() {
			t.Errorf("%s differs from the official rows (%d prompts)", f.name, len(prompts))
		}
		if !strings.Contains(out, filepath.Join(outDir, f.name)+" Accuracy Scores:\nprompt-level: ") {
			t.Errorf("no report for %s in:\n%s", f.name, out)
		}
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	var h ifeval.Headline
	if err := json.Unmarshal([]byte(lines[len(lines)-1]), &h); err != nil || h.PromptStrict <= 0 || h.PromptLoose < h.PromptStrict || h.InstructionLoose < h.InstructionStrict {
		t.Errorf("last line %q: %+v, %v", lines[len(lines)-1], h, err)
	}
	t.Logf("%d prompts: %s", len(prompts), lines[len(lines)-1])
}

// Bad input gets one error line naming the file and line, and writes nothing.
func TestEvalIFEvalBadInput(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	input := write("input.jsonl", `{"key": 1, "prompt": "Say hi.", "instruction_id_list": ["punctuation:no_comma"], "kwargs": [{}]}`+"\n")
	good := write("good.jsonl", `{"prompt": "Say hi.", "response": "hi"}`+"\n")
	blocker := write("file", "")
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--input-data", input}, "--responses is required"},
		{[]string{"--input-data", input, "--responses", write("bad.jsonl", "{\"prompt\": \"Say hi.\", \"response\": \"hi\"}\n\n{oops\n")}, "bad.jsonl:3: "},
		{[]string{"--input-data", input, "--responses", write("noresp.jsonl", `{"prompt": "Say hi."}`+"\n")}, "noresp.jsonl:1: want a JSON object"},
		{[]string{"--input-data", input, "--responses", write("other.jsonl", `{"prompt": "Say bye.", "response": "bye"}`+"\n")}, "no response for 1 of 1 prompts (keys [1])"},
		{[]string{"--input-data", write("badin.jsonl", `{"key": 2, "prompt": "p", "instruction_id_list": ["keywords:frequency"], "kwargs": [{"keyword": "a", "frequency": 2, "relation": "at most"}]}`+"\n"), "--responses", good}, "badin.jsonl:1: keywords:frequency: relation must be"},
		{[]string{"--input-data", write("unknown.jsonl", `{"key": 3, "prompt": "p", "instruction_id_list": ["x:y"], "kwargs": [{}]}`+"\n"), "--responses", good}, `unknown.jsonl:1: unknown instruction id "x:y"`},
		{[]string{"--input-data", input, "--responses", good, "--output-dir", blocker}, "not a directory"},
	} {
		out, err := runAutoif(t, append([]string{"eval", "ifeval"}, c.args...)...)
		if err == nil || !strings.Contains(err.Error(), c.want) || strings.Contains(err.Error(), "\n") {
			t.Errorf("%v: error %v, want one line containing %q\n%s", c.args, err, c.want, out)
		}
	}
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), "eval_results") || strings.Contains(e.Name(), ".tmp") {
			t.Errorf("left %s behind", e.Name())
		}
	}
}

// --model samples one response per prompt through the chat template, greedily, writes them
// as the official responses file and evaluates that file; it never overwrites one.
func TestEvalIFEvalSamplesAModel(t *testing.T) {
	dir := t.TempDir()
	policy := filepath.Join(dir, "policy")
	if _, err := runAutoif(t, "model", "init", "--layers", "1", "--hidden", "64", "--heads", "2",
		"--intermediate", "128", "--max-positions", "512", "--seed", "3", "--out", policy); err != nil {
		t.Fatal(err)
	}
	input := filepath.Join(dir, "input.jsonl")
	rows := `{"key": 1, "prompt": "Say hi.", "instruction_id_list": ["punctuation:no_comma"], "kwargs": [{}]}` + "\n" +
		`{"key": 2, "prompt": "Write a title.", "instruction_id_list": ["detectable_format:title", "length_constraints:number_words"], "kwargs": [{}, {"num_words": 3, "relation": "less than"}]}` + "\n"
	if err := os.WriteFile(input, []byte(rows), 0o644); err != nil {
		t.Fatal(err)
	}
	outDir := filepath.Join(dir, "out")
	args := []string{"eval", "ifeval", "--model", policy, "--input-data", input, "--output-dir", outDir, "--max-new-tokens", "3"}
	out, err := runAutoif(t, args...)
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	responses, err := ifeval.ReadResponseFile(filepath.Join(outDir, "input_response_data.jsonl"))
	if err != nil || len(responses) != 2 || responses["Say hi."] == "" && responses["Write a title."] == "" {
		t.Fatalf("responses %q, %v", responses, err)
	}
	for _, name := range []string{ifeval.StrictFile, ifeval.LooseFile} {
		if _, err := os.Stat(filepath.Join(outDir, name)); err != nil {
			t.Error(err)
		}
	}
	// Greedy: the same responses again.
	again := filepath.Join(dir, "again.jsonl")
	if out, err := runAutoif(t, append(args, "--responses", again)...); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	second, err := ifeval.ReadResponseFile(again)
	if err != nil || second["Say hi."] != responses["Say hi."] || second["Write a title."] != responses["Write a title."] {
		t.Errorf("greedy responses changed: %q then %q (%v)", responses, second, err)
	}
	if _, err := runAutoif(t, append(args, "--responses", again)...); err == nil || !strings.Contains(err.Error(), "already exists") {
		t.Errorf("overwrote %s: %v", again, err)
	}
}

// --endpoint sends each prompt to an OpenAI-compatible server, writes the answers as the
// responses file and evaluates them.
func TestEvalIFEvalSamplesAnEndpoint(t *testing.T) {
	// The server repeats each prompt, in upper case: it follows repeat_prompt (which ignores
	// case) and not english_lowercase.
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var req struct {
			Model    string `json:"model"`
			Messages []struct{ Content string }
		}
		if err := json.NewDecoder(r.Body).Decode(&req); err != nil || req.Model != "served" || len(req.Messages) != 1 {
			http.Error(w, "bad request", http.StatusBadRequest)
			return
		}
		json.NewEncoder(w).Encode(map[string]any{"choices": []any{map[string]any{"message": map[string]any{"content": strings.ToUpper(req.Messages[0].Content) + " DONE."}}}})
	}))
	defer srv.Close()
	dir := t.TempDir()
	input := filepath.Join(dir, "input.jsonl")
	row := `{"key": 1, "prompt": "Repeat this request, then answer.", "instruction_id_list": ["combination:repeat_prompt", "change_case:english_lowercase"], "kwargs": [{"prompt_to_repeat": "Repeat this request, then answer."}, {}]}` + "\n"
	if err := os.WriteFile(input, []byte(row), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := runAutoif(t, "eval", "ifeval", "--endpoint", srv.URL+"/v1", "--endpoint-model", "served", "--input-data", input, "--output-dir", dir)
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	responses, err := ifeval.ReadResponseFile(filepath.Join(dir, "input_response_data.jsonl"))
	if err != nil || responses["Repeat this request, then answer."] != "REPEAT THIS REQUEST, THEN ANSWER. DONE." {
		t.Fatalf("responses %q, %v", responses, err)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if last := lines[len(lines)-1]; last != `{"prompt_strict":0,"instruction_strict":0.5,"prompt_loose":0,"instruction_loose":0.5}` {
		t.Errorf("figures %s", last)
	}
	if _, err := runAutoif(t, "eval", "ifeval", "--endpoint", srv.URL+"/v1", "--input-data", input, "--output-dir", t.TempDir()); err == nil || !strings.Contains(err.Error(), "--endpoint-model") {
		t.Errorf("no model name: %v", err)
	}
}
