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
	"github.com/autoif/autoif/synth/replay"
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

// `autoif synth all` end to end offline, from back-translation to export, against a server
// replaying real models' recorded completions (synth/testdata): the survivors of the
// flywheel's NLI filter get queries, verified responses and judge requests (never recorded,
// so refused and counted), and the export is written.
func TestSynthAllAgainstRecordedCompletions(t *testing.T) {
	h, err := replay.Load("../../synth/testdata")
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(h)
	defer srv.Close()
	dir := t.TempDir()
	// The rows the flywheel back-translated are the third element of its records.
	var rows []string
	data, err := os.ReadFile("../../synth/testdata/autoif-flywheel/4_backtranslate_prompt_results.jsonl")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(strings.TrimSpace(string(data)), "\n") {
		var rec []json.RawMessage
		if err := json.Unmarshal([]byte(line), &rec); err != nil {
			t.Fatal(err)
		}
		rows = append(rows, string(rec[2]))
	}
	os.WriteFile(filepath.Join(dir, "cv.jsonl"), []byte(strings.Join(rows, "\n")+"\n"), 0o644)
	os.WriteFile(filepath.Join(dir, "queries.txt"), []byte("imagine a puzzle game, played in a grid and it involves chess pieces\nexplain boyle's law to a 15 year old boy\n"), 0o644)
	cfg := `endpoints:
  teacher: {url: ` + srv.URL + `/v1, model: gpt-4o-mini, retries: 0}
start: backtranslate
input: cv.jsonl
queries: queries.txt
nli: {tei: ` + srv.URL + `}
stages:
  backtranslate: {endpoint: teacher, functions: -1, checks: -1, sampling: {temperature: 0.7, max_tokens: 1024}}
  responses: {endpoint: teacher, sampling: {n: 2, temperature: 0.7, max_tokens: 1024}}
  judge: {endpoint: teacher}
`
	os.WriteFile(filepath.Join(dir, "synth.yaml"), []byte(cfg), 0o644)
	out := filepath.Join(dir, "run")
	log, err := runAutoif(t, "synth", "all", "--config", filepath.Join(dir, "synth.yaml"), "--out", out, "--workers", "1")
	if err != nil {
		t.Fatalf("%v\n%s", err, log)
	}
	f, err := synth.LoadFunnel(filepath.Join(out, "funnel.json"))
	if err != nil || len(f.Stages) != 5 || f.Stage("backtranslate").Kept != 8 {
		t.Fatalf("funnel %+v, %v\n%s", f, err, log)
	}
	if rs := f.Stage("responses"); rs.In != 2*8*2 || rs.Client == nil || rs.Client.Requests == 0 {
		t.Errorf("responses %+v", rs)
	}
	for _, name := range []string{synth.SFTMessagesFile, synth.SFTAlpacaFile, synth.DPOAutoIFFile, synth.DPOTRLFile, synth.PromptsFile} {
		if _, err := os.Stat(filepath.Join(out, "export", name)); err != nil {
			t.Error(err)
		}
	}
	if !strings.Contains(log, "back-translation") && !strings.Contains(log, "backtranslate") {
		t.Errorf("no funnel table in the output:\n%s", log)
	}
}
