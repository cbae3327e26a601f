package main

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/autoif/autoif/synth"
)

// `autoif synth functions` asks the server once per instruction, writes the completions the
// cross-validation reads and its line of the funnel; run again, it sends nothing.
func TestSynthFunctionsCommandWritesOutputAndFunnel(t *testing.T) {
	var requests atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		requests.Add(1)
		if r.Header.Get("Authorization") != "Bearer from-env" {
			t.Errorf("authorization %q", r.Header.Get("Authorization"))
		}
		var req struct {
			N int `json:"n"`
		}
		json.NewDecoder(r.Body).Decode(&req)
		var choices []any
		for range req.N {
			choices = append(choices, map[string]any{"message": map[string]any{"role": "assistant",
				"content": "```json\n{\"func\": \"def evaluate(response):\\n    return ',' not in response\", \"cases\": [{\"input\": \"a, b\", \"output\": false}]}\n```"}})
		}
		choices = append(choices, map[string]any{"message": map[string]any{"role": "assistant", "content": "I can't help with that."}})
		json.NewEncoder(w).Encode(map[string]any{"choices": choices, "usage": map[string]int{"prompt_tokens": 100, "completion_tokens": 40}})
	}))
	defer srv.Close()
	t.Setenv("AUTOIF_API_KEY", "from-env")
	dir := t.TempDir()
	in := filepath.Join(dir, "instructions.txt")
	os.WriteFile(in, []byte("Use no commas\nAnswer in lowercase\n"), 0o644)
	out := filepath.Join(dir, "functions.jsonl")
	for run := range 2 {
		log, err := runAutoif(t, "synth", "functions", "--in", in, "--out", out, "--endpoint", srv.URL+"/v1", "--model", "m", "--n", "2")
		if err != nil {
			t.Fatalf("run %d: %v\n%s", run, err, log)
		}
		if !strings.Contains(log, "functions") || !strings.Contains(log, "completion: no JSON object") {
			t.Errorf("no funnel table:\n%s", log)
		}
	}
	if n := requests.Load(); n != 2 {
		t.Errorf("%d requests for 2 instructions over two runs, want 2 (the rerun is answered from the cache)", n)
	}
	rows, err := synth.ReadJSONL[synth.FunctionsRow](out)
	if err != nil || len(rows) != 2 || len(rows[0].Completions) != 2 {
		t.Fatalf("rows %+v, %v", rows, err)
	}
	f, err := synth.LoadFunnel(filepath.Join(dir, "funnel.json"))
	if err != nil || f.Stage("functions") == nil || f.Stage("functions").Kept != 2 || f.Stage("functions").Details["completion: no JSON object"] != 2 {
		t.Errorf("funnel %+v, %v", f, err)
	}
}

// Bad input to synth is one error line, and nothing is written.
func TestSynthBadInput(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(dir, "bad.yaml")
	os.WriteFile(cfg, []byte("start: functions\ninput: x\nstop: nowhere\n"), 0o644)
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"synth", "all", "--config", cfg, "--out", filepath.Join(dir, "run")}, `stop: "nowhere" is not a stage`},
		{[]string{"synth", "functions", "--in", filepath.Join(dir, "missing.txt"), "--out", filepath.Join(dir, "f.jsonl"), "--endpoint", "http://127.0.0.1:1", "--model", "m"}, "--in:"},
		{[]string{"synth", "functions", "--in", cfg, "--out", filepath.Join(dir, "f.jsonl"), "--endpoint", "localhost:8000", "--model", "m"}, "want http:// or https://"},
	} {
		_, err := runAutoif(t, tc.args...)
		if err == nil || !strings.Contains(err.Error(), tc.want) || strings.Contains(err.Error(), "\n") {
			t.Errorf("%v: %v, want %q", tc.args, err, tc.want)
		}
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 1 {
		t.Errorf("files written: %v", entries)
	}
}
