package orchestrator

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// autoifData holds AutoIF reference repository sample files (one copy in the repository, reward/rewardbench/data/autoif/PROVENANCE.md).
const autoifData = "../reward/rewardbench/data/autoif"

func writeFile(t *testing.T, name, body string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(path, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestPrepareRejectsBadConfigsWithOneClearLine(t *testing.T) {
	okRow := `{"instruction": "Answer in capitals", "query": "What is Go?", "eval_func": [["def evaluate(response):\n    return response.isupper()", 1.0]]}` + "\n"
	cases := []struct {
		name   string
		modify func(t *testing.T, c *Config)
		want   string // "" means valid
	}{
		{"defaults with the bundled testbed", func(*testing.T, *Config) {}, ""},
		{"tinyif held-out split", func(_ *testing.T, c *Config) { c.Prompts = []string{"tinyif:heldout"} }, ""},
		{"AutoIF rows with instruction, query and functions", func(t *testing.T, c *Config) {
			c.Prompts = []string{writeFile(t, "q.jsonl", okRow)}
		}, ""},
		{"k below 2", func(_ *testing.T, c *Config) { c.K = 1 }, "k 1: at least 2"},
		{"negative max lag", func(_ *testing.T, c *Config) { c.MaxLag = -1 }, "max-lag -1"},
		{"unknown mode", func(_ *testing.T, c *Config) { c.Mode = "lockstep" }, `mode "lockstep"`},
		{"no prompts in flight", func(_ *testing.T, c *Config) { c.MaxInFlight = 0 }, "max-in-flight 0"},
		{"negative budget", func(_ *testing.T, c *Config) { c.MaxPairs = -5 }, "budgets"},
		{"no run directory", func(_ *testing.T, c *Config) { c.RunDir = "" }, "run directory"},
		{"missing prompt file", func(_ *testing.T, c *Config) { c.Prompts = []string{"/nonexistent/prompts.jsonl"} }, "/nonexistent/prompts.jsonl"},
		{"unknown tinyif split", func(_ *testing.T, c *Config) { c.Prompts = []string{"tinyif:dev"} }, `split "dev"`},
		{"instruction whose functions all fall below the accuracy floor", func(t *testing.T, c *Config) {
			c.MinFuncAccuracy = 0.8
			c.Prompts = []string{writeFile(t, "q.jsonl", `{"prompt": "Be brief. Hi?", "eval_func": [["def evaluate(response):\n    return len(response) < 9", 0.6]]}`+"\n")}
		}, "q.jsonl:1: instruction \"Be brief. Hi?\" has no verified function (1 dropped)"},
		{"instruction with no functions in any file", func(t *testing.T, c *Config) {
			c.Prompts = []string{writeFile(t, "q.jsonl", okRow+`{"instruction": "Rhyme", "query": "Why?"}`+"\n")}
		}, `q.jsonl:2: instruction "Rhyme" has no verified function`},
		{"function that defines no evaluate", func(t *testing.T, c *Config) {
			c.Prompts = []string{writeFile(t, "q.jsonl", `{"instruction": "X", "query": "Y", "eval_func": ["def check(r):\n    return True"]}`+"\n")}
		}, "has no verified function"},
		{"row of another format", func(t *testing.T, c *Config) {
			c.Prompts = []string{writeFile(t, "q.jsonl", `{"text": "hello"}`+"\n")}
		}, "q.jsonl:1: row has no prompt"},
		{"not JSON", func(t *testing.T, c *Config) {
			c.Prompts = []string{writeFile(t, "q.jsonl", okRow+"{oops\n")}
		}, "q.jsonl:2: not a JSON object"},
		{"empty prompt file", func(t *testing.T, c *Config) { c.Prompts = []string{writeFile(t, "q.jsonl", "\n")} }, "no prompt units"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := DefaultConfig()
			c.RunDir = t.TempDir()
			tc.modify(t, &c)
			set, err := Prepare(c)
			if tc.want == "" {
				if err != nil {
					t.Fatalf("got %v, want a valid config", err)
				}
				if len(set.Units) == 0 {
					t.Fatal("no prompt units")
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want an error containing %q", err, tc.want)
			}
			if strings.Contains(err.Error(), "\n") {
				t.Fatalf("error spans lines: %q", err)
			}
		})
	}
}

func TestAutoIFReferenceFilesLoad(t *testing.T) {
	cases := []struct {
		name    string
		files   []string
		units   int
		instrs  int
		wantErr string
	}{
		// 21 prompts of one instruction, each row carrying its verified function.
		{"dpo_query_w_funcs", []string{"dpo_query_w_funcs.jsonl"}, 21, 1, ""},
		// Query-augmentation prompts with their instruction's functions.
		{"query_rft", []string{"query_rft.jsonl"}, 20, 2, ""},
		// The queries' instructions are not among back_trans's: nothing verifies them.
		{"queries without their instructions' functions", []string{"back_trans.jsonl", "query_score_filter.jsonl"}, 0, 0, "has no verified function in any given file"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var paths []string
			for _, f := range tc.files {
				paths = append(paths, filepath.Join(autoifData, f))
			}
			set, err := LoadPrompts(paths, 0)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("got %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if len(set.Units) != tc.units || set.Instructions() != tc.instrs {
				t.Fatalf("%d units of %d instructions, want %d of %d", len(set.Units), set.Instructions(), tc.units, tc.instrs)
			}
			for _, u := range set.Units {
				if u.Prompt == "" || len(u.Functions) == 0 || !strings.Contains(u.Functions[0], "def evaluate(") {
					t.Fatalf("unit %+v lacks a prompt or a function", u)
				}
			}
		})
	}
}

func TestInstructionFilesJoinQueryFilesByInstructionText(t *testing.T) {
	instr := writeFile(t, "instr.jsonl", `{"instruction": "Answer in capitals", "eval_func": [["def evaluate(response):\n    return response.isupper()", 1.0], ["def evaluate(response):\n    return response == response.upper()", 0.9]], "cases": []}`+"\n")
	queries := writeFile(t, "queries.jsonl", `{"instruction": "Answer in capitals", "query": "What is Go?"}`+"\n"+`{"instruction": "Answer in capitals", "query": "Why?"}`+"\n")
	set, err := LoadPrompts([]string{instr, queries}, 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(set.Units) != 2 || set.Instructions() != 1 {
		t.Fatalf("%d units of %d instructions, want 2 of 1", len(set.Units), set.Instructions())
	}
	u := set.Units[0]
	if u.Prompt != "Answer in capitals What is Go?" || len(u.Functions) != 2 || u.Query != "What is Go?" {
		t.Fatalf("unit %+v", u)
	}
}
