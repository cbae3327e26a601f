package ifevaldata

import (
	"bytes"
	"compress/gzip"
	"os"
	"path/filepath"
	"testing"
)

func TestStrictVerdictsNamesAMissingFile(t *testing.T) {
	if _, err := StrictVerdicts(t.TempDir(), "language:response_language"); err == nil {
		t.Fatal("no error for a directory without the results")
	}
}

func write(t *testing.T, dir, name, body string) {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	data := []byte(body)
	if filepath.Ext(name) == ".gz" {
		var b bytes.Buffer
		z := gzip.NewWriter(&b)
		if _, err := z.Write(data); err != nil {
			t.Fatal(err)
		}
		if err := z.Close(); err != nil {
			t.Fatal(err)
		}
		data = b.Bytes()
	}
	if err := os.WriteFile(p, data, 0o644); err != nil {
		t.Fatal(err)
	}
}

// A result whose prompt is not in the input data is an error, not a silently lost verdict.
func TestStrictVerdictsRejectsUnmatchedResults(t *testing.T) {
	dir := t.TempDir()
	write(t, dir, "input_data.jsonl", `{"key": 1, "prompt": "p", "instruction_id_list": ["x:y"], "kwargs": [{"n": 2}]}`+"\n")
	write(t, dir, "official_gpt4/eval_results_strict_gpt4.jsonl",
		`{"prompt": "p", "response": "r", "instruction_id_list": ["x:y"], "follow_instruction_list": [true]}`+"\n")
	vs, err := StrictVerdicts(dir, "x:y")
	if err != nil || len(vs) != 1 || vs[0].Key != 1 || vs[0].Response != "r" || !vs[0].Followed || vs[0].Kwargs["n"] != 2.0 {
		t.Fatalf("got %+v, %v", vs, err)
	}
	write(t, dir, "official_gpt4/eval_results_strict_gpt4.jsonl",
		`{"prompt": "other", "response": "r", "instruction_id_list": ["x:y"], "follow_instruction_list": [true]}`+"\n")
	if _, err := StrictVerdicts(dir, "x:y"); err == nil {
		t.Fatal("no error for a result without input data")
	}
}

// The strict_results are read through gzip, matched against their own input data, and lose
// the "en:" prefix and the .gz suffix on the way.
func TestStrictVerdictsReadGzippedResults(t *testing.T) {
	dir := t.TempDir()
	write(t, dir, "input_data.jsonl", `{"key": 1, "prompt": "p", "instruction_id_list": ["x:y"], "kwargs": [{"n": 2}]}`+"\n")
	write(t, dir, "official_gpt4/eval_results_strict_gpt4.jsonl", "")
	write(t, dir, "strict_results/en_input_data_MIFEVAL_old2785.jsonl.gz", `{"key": 7, "prompt": "q", "instruction_id_list": ["en:x:y"], "kwargs": [{}]}`+"\n")
	write(t, dir, "strict_results/m.eval_results_strict.jsonl.gz",
		`{"prompt": "q", "response": "s", "instruction_id_list": ["en:x:y"], "follow_instruction_list": [false]}`+"\n")
	vs, err := StrictVerdicts(dir, "x:y")
	if err != nil || len(vs) != 1 || vs[0].Source != "m.eval_results_strict.jsonl" || vs[0].Key != 7 || vs[0].Response != "s" || vs[0].Followed {
		t.Fatalf("got %+v, %v", vs, err)
	}
}

// Every test of the module finds the bundled data, with all 17 models' results.
func TestDirHoldsTheBundledResults(t *testing.T) {
	dir, err := Dir()
	if err != nil {
		t.Fatal(err)
	}
	files, err := StrictResultFiles(dir)
	if err != nil || len(files) != 17 {
		t.Fatalf("%d strict_results files in %s (%v), want 17", len(files), dir, err)
	}
	if _, err := os.Stat(StrictInputFile(dir)); err != nil {
		t.Fatal(err)
	}
}
