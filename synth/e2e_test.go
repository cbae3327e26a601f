package synth

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/autoif/autoif/orchestrator"
	"github.com/autoif/autoif/tokenizer"
	"github.com/autoif/autoif/trainer"
)

// recordPrompts reads the prompt of each flywheel record.
func recordPrompts(t *testing.T, file string) []string {
	t.Helper()
	var out []string
	for _, raw := range readLines(t, "testdata/autoif-flywheel/"+file) {
		var rec []struct {
			Messages []struct{ Content string } `json:"messages"`
		}
		if json.Unmarshal(raw, &rec) != nil || len(rec) < 1 || len(rec[0].Messages) == 0 {
			t.Fatalf("%s: not a [request, ...] record", file)
		}
		out = append(out, rec[0].Messages[len(rec[0].Messages)-1].Content)
	}
	return out
}

// `synth all` from back-translation to export on the flywheel's recordings: back-translation
// keeps the flywheel's survivors, queries pair them with the recorded user queries, responses
// are sampled (the pairs the flywheel sampled are answered, the others get 404s and are
// counted) and verified in the sandbox, the judge's prompts were never recorded and every
// request fails and is counted, and export still writes the DPO pairs and the prompt set. The
// export of judged rows (the AutoIF sample's) loads in `autoif run --prompts` and
// `autoif train sft|dpo` unchanged.
func TestSynthAllEndToEnd(t *testing.T) {
	srv := newReplay(t)
	dir := t.TempDir()
	in := writeRows(t, filepath.Join(dir, "cv.jsonl"), recordRows[BackTransRow](t, "4_backtranslate_prompt_results.jsonl"))
	var queries []map[string]string
	for _, p := range recordPrompts(t, "6_instruction_filtered_query_prompt_results.jsonl") {
		queries = append(queries, map[string]string{"query": strings.TrimSpace(p[strings.Index(p, "[Query]")+len("[Query]"):])})
	}
	qfile := writeRows(t, filepath.Join(dir, "queries.jsonl"), queries)
	out, f := runConfig(t, srv, `
endpoints:
  teacher: {url: REPLAY/v1, model: gpt-4o-mini, retries: 0}
start: backtranslate
input: `+in+`
queries: `+qfile+`
nli: {tei: REPLAY}
stages:
  backtranslate: {endpoint: teacher, functions: -1, checks: -1, sampling: {temperature: 0.7, max_tokens: 1024}}
  queries: {per_instruction: 16}
  responses: {endpoint: teacher, sampling: {n: 2, temperature: 0.7, max_tokens: 1024}}
  judge: {endpoint: teacher}
`)
	t.Log("\n" + table(f))
	for _, s := range []string{"backtranslate", "queries", "responses", "judge", "export"} {
		if f.Stage(s) == nil {
			t.Fatalf("no funnel line for %s", s)
		}
	}
	saved, err := LoadFunnel(filepath.Join(out, "funnel.json"))
	if err != nil || len(saved.Stages) != 5 {
		t.Fatalf("funnel.json: %v, %+v", err, saved)
	}
	if bt := f.Stage("backtranslate"); bt.Kept != 8 {
		t.Errorf("back-translation kept %d, want the flywheel's 8", bt.Kept)
	}
	// The flywheel sampled responses for 10 (instruction, query) pairs, 6 of them for
	// instructions that survive back-translation here; each of our 8 survivors is paired
	// with all 10 queries.
	rs := f.Stage("responses")
	answered := 0
	for p := range srv.Answered() {
		if strings.HasPrefix(p, "Please answer the query") {
			answered++
		}
	}
	if answered == 0 || rs.Dropped[ReasonRequestFailed] != 2*(80-answered) || rs.In != 160 {
		t.Errorf("responses: %d pairs answered; funnel %+v", answered, rs)
	}
	if j := f.Stage("judge"); j.In != rs.Kept || j.Dropped[ReasonRequestFailed] != j.In {
		t.Errorf("judge: in %d (responses kept %d), %v", j.In, rs.Kept, j.Dropped)
	}
	respRows, err := ReadJSONL[ResponsesRow](filepath.Join(out, StageFiles["responses"]))
	if err != nil || len(respRows) != answered {
		t.Fatalf("%d response rows (%v), want %d", len(respRows), err, answered)
	}

	// Export the AutoIF sample's judged rows with these responses and load every file.
	judgedOut, _ := runConfig(t, srv, `
endpoints:
  judge: {url: REPLAY/v1, model: recorded}
start: judge
input: TESTDATA/autoif/query_rft_score.jsonl
stop: judge
stages:
  judge: {endpoint: judge}
`)
	judged, err := ReadJSONL[JudgedRow](filepath.Join(judgedOut, StageFiles["judge"]))
	if err != nil {
		t.Fatal(err)
	}
	exp := filepath.Join(dir, "export")
	rep, err := Export(judged, respRows, exp, ExportOptions{Seed: 1})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("export: %v", rep.Outputs)
	tok, err := tokenizer.Load("../tokenizer/testdata/bytelevel")
	if err != nil {
		t.Fatal(err)
	}
	topt := trainer.TextOptions{Tokenizer: tok, Chat: true}
	for _, name := range []string{SFTMessagesFile, SFTAlpacaFile} {
		ex, err := trainer.LoadSFT(filepath.Join(exp, name), topt)
		if err != nil || len(ex) != rep.Outputs[name] || len(ex) != 16 {
			t.Errorf("train sft %s: %d examples (%v), exported %d, want 16", name, len(ex), err, rep.Outputs[name])
		}
	}
	for _, name := range []string{DPOAutoIFFile, DPOTRLFile} {
		pairs, err := trainer.LoadPairs(filepath.Join(exp, name), topt)
		if err != nil || len(pairs) != rep.Outputs[name] {
			t.Errorf("train dpo %s: %d pairs (%v), exported %d", name, len(pairs), err, rep.Outputs[name])
		}
	}
	set, err := orchestrator.LoadPrompts([]string{filepath.Join(exp, PromptsFile)}, 0)
	if err != nil || len(set.Units) != rep.Outputs[PromptsFile] || len(set.Units) != answered {
		t.Errorf("run --prompts: %v units (%v), exported %d, want %d", set, err, rep.Outputs[PromptsFile], answered)
	}
	if data, _ := os.ReadFile(filepath.Join(exp, SFTAlpacaFile)); !json.Valid(data) {
		t.Errorf("%s is not one JSON document", SFTAlpacaFile)
	}
}
