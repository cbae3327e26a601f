package ifevaldata

import (
	"os"
	"path/filepath"
	"testing"
)

func TestStrictVerdictsNamesAMissingFile(t *testing.T) {
	if _, err := StrictVerdicts(t.TempDir(), "language:response_language"); err == nil {
		t.Fatal("no error for a directory without the results")
	}
}

// A result whose prompt is not in the input data is an error, not a silently lost verdict.
func TestStrictVerdictsRejectsUnmatchedResults(t *testing.T) {
	dir := t.TempDir()
	write := func(name, body string) {
		p := filepath.Join(dir, "ifeval", name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("input_data.jsonl", `{"key": 1, "prompt": "p", "instruction_id_list": ["x:y"], "kwargs": [{"n": 2}]}`+"\n")
	write("official_gpt4/eval_results_strict_gpt4.jsonl",
		`{"prompt": "p", "response": "r", "instruction_id_list": ["x:y"], "follow_instruction_list": [true]}`+"\n")
	vs, err := StrictVerdicts(dir, "x:y")
	if err != nil || len(vs) != 1 || vs[0].Key != 1 || vs[0].Response != "r" || !vs[0].Followed || vs[0].Kwargs["n"] != 2.0 {
		t.Fatalf("got %+v, %v", vs, err)
	}
	write("official_gpt4/eval_results_strict_gpt4.jsonl",
		`{"prompt": "other", "response": "r", "instruction_id_list": ["x:y"], "follow_instruction_list": [true]}`+"\n")
	if _, err := StrictVerdicts(dir, "x:y"); err == nil {
		t.Fatal("no error for a result without input data")
	}
}
