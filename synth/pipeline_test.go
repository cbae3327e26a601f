package synth

import (
	"encoding/json"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// record reads the third element of each flywheel record: the row the call was made for.
func recordRows[T any](t *testing.T, file string) []T {
	t.Helper()
	var out []T
	for _, raw := range readLines(t, "testdata/autoif-flywheel/"+file) {
		var rec []json.RawMessage
		var row T
		if json.Unmarshal(raw, &rec) != nil || len(rec) < 3 || json.Unmarshal(rec[2], &row) != nil {
			t.Fatalf("%s: not a [request, response, row] record", file)
		}
		out = append(out, row)
	}
	return out
}

func table(f *Funnel) string {
	var b strings.Builder
	f.Table(&b)
	return b.String()
}

// The functions stage sends the reference's prompt verbatim (every request is answered from
// the recorded completions of the AutoIF sample) and parses every completion the reference
// parses to the same function and cases, and the three the reference cannot parse (invalid
// escapes in JSON strings) too. Cross-validation then keeps the instructions reward/crossval
// keeps on the recorded file, with the recovered completions' functions and cases added.
func TestReplayAutoIFFunctionsAndCrossval(t *testing.T) {
	srv := newReplay(t)
	recorded, err := ReadJSONL[FunctionsRow]("testdata/autoif/eval_func_rft.jsonl")
	if err != nil {
		t.Fatal(err)
	}
	var instr []InstructionRow
	for _, r := range recorded {
		instr = append(instr, InstructionRow{r.Instruction})
	}
	in := writeRows(t, filepath.Join(t.TempDir(), "instructions.jsonl"), instr)
	out, f := runConfig(t, srv, `
endpoints:
  teacher: {url: REPLAY/v1, model: recorded}
start: functions
input: `+in+`
stop: crossval
stages:
  functions: {endpoint: teacher, sampling: {n: 8, temperature: 0.7}}
`)
	if srv.Unknown() != 0 || len(srv.Answered()) != len(recorded) {
		t.Fatalf("%d prompts unknown to the recording, %d answered of %d", srv.Unknown(), len(srv.Answered()), len(recorded))
	}
	got, err := ReadJSONL[FunctionsRow](filepath.Join(out, StageFiles["functions"]))
	if err != nil {
		t.Fatal(err)
	}
	jsonBlock := regexp.MustCompile("(?s)```json(.*?)```")
	strict, tolerant := 0, 0
	for i, r := range recorded {
		if got[i].Instruction != r.Instruction || len(got[i].Completions) != len(r.Completions) {
			t.Fatalf("instruction %d: %d completions kept of %d", i, len(got[i].Completions), len(r.Completions))
		}
		for k, c := range r.Completions {
			var ours FunctionCompletion
			if err := json.Unmarshal([]byte(jsonBlock.FindStringSubmatch(got[i].Completions[k])[1]), &ours); err != nil {
				t.Fatal(err)
			}
			tolerant++
			// The reference: the first ```json block, json.loads'd.
			var ref FunctionCompletion
			m := jsonBlock.FindStringSubmatch(c)
			if m == nil || json.Unmarshal([]byte(strings.TrimSpace(m[1])), &ref) != nil {
				continue
			}
			strict++
			if ours.Func != strings.TrimSpace(ref.Func) || len(ours.Cases) != len(ref.Cases) {
				t.Errorf("%s completion %d: parsed differently from the reference", clip(r.Instruction, 30), k)
			}
			for j := range ref.Cases {
				var a, b any
				json.Unmarshal(ours.Cases[j], &a)
				json.Unmarshal(ref.Cases[j], &b)
				if !jsonEqual(a, b) {
					t.Errorf("%s completion %d case %d: %s, reference %s", clip(r.Instruction, 30), k, j, ours.Cases[j], ref.Cases[j])
				}
			}
		}
	}
	if strict != 37 || tolerant != 40 {
		t.Errorf("parsed %d completions by the reference's rule (want 37) and %d tolerantly (want 40)", strict, tolerant)
	}
	survivors, err := ReadJSONL[BackTransRow](filepath.Join(out, StageFiles["crossval"]))
	if err != nil {
		t.Fatal(err)
	}
	// reward/crossval's TestCrossValidationOnRealData pins 3/14, 5/13 and 7/15 functions/cases
	// on the 37 strictly parsed completions; the 3 recovered ones add a function and cases.
	want := []struct {
		prefix       string
		funcs, cases int
	}{{"Use only words from a specified page", 4, 20}, {"Use words that can be mirrored vertically", 6, 14}, {"Answer with words that each contain at least two", 7, 15}}
	if len(survivors) != len(want) {
		t.Fatalf("%d survivors, want %d\n%s", len(survivors), len(want), table(f))
	}
	for i, w := range want {
		s := survivors[i]
		if !strings.HasPrefix(s.Instruction, w.prefix) || len(s.Functions) != w.funcs || len(s.Cases) != w.cases {
			t.Errorf("survivor %d: %q with %d functions, %d cases; want %q..., %d, %d", i, clip(s.Instruction, 40), len(s.Functions), len(s.Cases), w.prefix, w.funcs, w.cases)
		}
	}
	if cv := f.Stage("crossval"); cv.Dropped["instruction: no function survives"] != 1 || cv.Dropped["instruction: too few functions survive"] != 1 {
		t.Errorf("crossval drops %v", cv.Dropped)
	}
}

func jsonEqual(a, b any) bool {
	x, _ := json.Marshal(a)
	y, _ := json.Marshal(b)
	return string(x) == string(y)
}

// On gpt-4o-mini's recorded completions (the flywheel re-implementation), the functions stage
// recovers completions written with single-quoted JSON strings, and cross-validation with the
// flywheel's thresholds (any function and case, the reference's order of checks) keeps the
// same instructions as the flywheel's 3_cross_validation.jsonl with the same distinct functions.
func TestReplayFlywheelFunctionsAndCrossval(t *testing.T) {
	srv := newReplay(t)
	instr := recordRows[InstructionRow](t, "2_eval_func_rft_prompts_results.jsonl")
	in := writeRows(t, filepath.Join(t.TempDir(), "instructions.jsonl"), instr)
	out, f := runConfig(t, srv, `
endpoints:
  teacher: {url: REPLAY/v1, model: gpt-4o-mini}
start: functions
input: `+in+`
stop: crossval
stages:
  functions: {endpoint: teacher, sampling: {n: 5, temperature: 0.2, max_tokens: 1024}}
  crossval: {min_functions: 1, min_cases: 1, reference_thresholds: true}
`)
	if srv.Unknown() != 0 {
		t.Fatalf("%d prompts unknown to the recording", srv.Unknown())
	}
	if fs := f.Stage("functions"); fs.Kept != 10 || fs.Outputs["completions"] != 50 {
		t.Errorf("functions: kept %d instructions, %d completions; want all 10 and 50\n%s", fs.Kept, fs.Outputs["completions"], table(f))
	}
	ours, err := ReadJSONL[BackTransRow](filepath.Join(out, StageFiles["crossval"]))
	if err != nil {
		t.Fatal(err)
	}
	ref, err := ReadJSONL[BackTransRow]("testdata/autoif-flywheel/3_cross_validation.jsonl")
	if err != nil {
		t.Fatal(err)
	}
	byInstr := map[string]BackTransRow{}
	for _, r := range ours {
		byInstr[r.Instruction] = r
	}
	asked := map[string]bool{}
	for _, r := range instr {
		asked[r.Instruction] = true
	}
	compared := 0
	for _, r := range ref {
		if !asked[r.Instruction] {
			continue // the flywheel's sample of stage 3 holds one instruction its stage-2 sample lacks
		}
		compared++
		o, ok := byInstr[r.Instruction]
		if !ok {
			t.Errorf("%q: kept by the flywheel, dropped here", r.Instruction)
			continue
		}
		if a, b := distinctFuncs(o), distinctFuncs(r); !slices.Equal(a, b) {
			t.Errorf("%q: functions %q, flywheel %q", clip(r.Instruction, 40), a, b)
		}
	}
	if compared != 9 || len(ours) != 10 {
		t.Errorf("compared %d instructions (want 9); %d survive here (want 10)\n%s", compared, len(ours), table(f))
	}
}

func distinctFuncs(r BackTransRow) []string {
	var out []string
	for _, f := range r.Functions {
		if !slices.Contains(out, f.Source) {
			out = append(out, f.Source)
		}
	}
	slices.Sort(out)
	return out
}

// Back-translation builds the reference's prompt byte for byte (Python's str() of the
// functions: every recorded prompt is answered), reads the model's list, and the NLI filter
// (a TEI-style classifier replaying the flywheel's verdicts) keeps exactly the flywheel's
// survivors; the two instructions the flywheel dropped have no recorded verdict and are
// counted as such.
func TestReplayFlywheelBackTranslation(t *testing.T) {
	srv := newReplay(t)
	rows := recordRows[BackTransRow](t, "4_backtranslate_prompt_results.jsonl")
	in := writeRows(t, filepath.Join(t.TempDir(), "cv.jsonl"), rows)
	out, f := runConfig(t, srv, `
endpoints:
  teacher: {url: REPLAY/v1, model: gpt-4o-mini}
start: backtranslate
input: `+in+`
stop: backtranslate
nli: {tei: REPLAY}
stages:
  backtranslate: {endpoint: teacher, functions: -1, checks: -1, sampling: {temperature: 0.7, max_tokens: 1024}}
`)
	if srv.Unknown() != 0 || len(srv.Answered()) != 10 {
		t.Fatalf("%d prompts unknown to the recording, %d answered", srv.Unknown(), len(srv.Answered()))
	}
	ours, err := ReadJSONL[BackTransRow](filepath.Join(out, StageFiles["backtranslate"]))
	if err != nil {
		t.Fatal(err)
	}
	ref, err := ReadJSONL[BackTransRow]("testdata/autoif-flywheel/5_back_trans_fliter.jsonl")
	if err != nil {
		t.Fatal(err)
	}
	refBy := map[string]BackTransRow{}
	for _, r := range ref {
		refBy[r.Instruction] = r
	}
	for _, o := range ours {
		r, ok := refBy[o.Instruction]
		if !ok {
			t.Errorf("%q kept here, not by the flywheel", o.Instruction)
			continue
		}
		if !slices.Equal(o.BackInstruction, r.BackInstruction) || !slices.Equal(o.NLIScores, r.NLIScores) {
			t.Errorf("%q: back %q nli %q; flywheel %q %q", clip(o.Instruction, 40), o.BackInstruction, o.NLIScores, r.BackInstruction, r.NLIScores)
		}
	}
	bt := f.Stage("backtranslate")
	if len(ours) != 8 || bt.Dropped[ReasonNLIFailed] != 2 {
		t.Errorf("%d survivors (want 8)\n%s", len(ours), table(f))
	}
}

// The judge sends the reference's prompt verbatim, reads its "Score: N" lines, and keeps
// exactly the rows the reference's filter (mean score above 8) kept: query_score_filter.jsonl.
func TestReplayAutoIFJudge(t *testing.T) {
	srv := newReplay(t)
	out, f := runConfig(t, srv, `
endpoints:
  judge: {url: REPLAY/v1, model: recorded}
start: judge
input: TESTDATA/autoif/query_rft_score.jsonl
stop: judge
stages:
  judge: {endpoint: judge, sampling: {n: 1}}
`)
	if srv.Unknown() != 0 || len(srv.Answered()) != 20 {
		t.Fatalf("%d prompts unknown to the recording, %d answered", srv.Unknown(), len(srv.Answered()))
	}
	kept, err := ReadJSONL[JudgedRow](filepath.Join(out, StageFiles["judge"]))
	if err != nil {
		t.Fatal(err)
	}
	ref, err := ReadJSONL[JudgedRow]("testdata/autoif/query_score_filter.jsonl")
	if err != nil {
		t.Fatal(err)
	}
	key := func(r JudgedRow) string { return r.Instruction + "\x00" + r.Query + "\x00" + r.Response }
	var a, b []string
	for _, r := range kept {
		a = append(a, key(r))
	}
	for _, r := range ref {
		b = append(b, key(r))
	}
	slices.Sort(a)
	slices.Sort(b)
	if !slices.Equal(a, b) {
		t.Errorf("kept %d rows, the reference %d\n%s", len(a), len(b), table(f))
	}
	all, _ := ReadJSONL[JudgedRow](filepath.Join(out, JudgeScoresFile))
	recorded, _ := ReadJSONL[JudgedRow]("testdata/autoif/query_rft_score.jsonl")
	want := map[string]float64{}
	for _, r := range recorded {
		s, _ := ParseScore(r.Gen[0])
		want[key(r)] = s
	}
	for _, r := range all {
		if r.Score != want[key(r)] {
			t.Errorf("%q: score %v, recorded %v", clip(r.Response, 40), r.Score, want[key(r)])
		}
	}
	if len(all) != 20 || f.Stage("judge").Dropped[ReasonLowScore] != 4 {
		t.Errorf("%d scored\n%s", len(all), table(f))
	}
}

// flywheelJudgePrompt is the flywheel's judge template: the reference's with one more
// sentence asking whether the query is a clear instruction.
var flywheelJudgePrompt = strings.Replace(DefaultPrompts().Judge, "You need to judge whether the response answers the query.",
	"You need to judge whether the response answers the query. Also, you need to judge whether the query is a clear instruction.", 1)

// With the flywheel's judge template (set in the config), the judge's requests are its
// recorded ones, and of its 10 recorded judgements the stage keeps exactly the 3 responses the
// flywheel's filter kept (8_query_score_filter.jsonl).
func TestReplayFlywheelJudge(t *testing.T) {
	srv := newReplay(t)
	type row struct {
		Instruction string `json:"instruction"`
		Query       string `json:"query"`
		Response    string `json:"response"`
	}
	rows := recordRows[row](t, "7_query_need_quality_score_prompt_results.jsonl")
	in := writeRows(t, filepath.Join(t.TempDir(), "responses.jsonl"), rows)
	out, f := runConfig(t, srv, `
endpoints:
  judge: {url: REPLAY/v1, model: gpt-4o-mini}
start: judge
input: `+in+`
stop: judge
prompts:
  judge: |-
    `+strings.ReplaceAll(flywheelJudgePrompt, "\n", "\n    ")+`
stages:
  judge: {endpoint: judge, sampling: {n: 1, temperature: 0.7, max_tokens: 1024}}
`)
	if srv.Unknown() != 0 || len(srv.Answered()) != 10 {
		t.Fatalf("%d prompts unknown to the recording, %d answered", srv.Unknown(), len(srv.Answered()))
	}
	kept, err := ReadJSONL[JudgedRow](filepath.Join(out, StageFiles["judge"]))
	if err != nil {
		t.Fatal(err)
	}
	ref, err := ReadJSONL[JudgedRow]("testdata/autoif-flywheel/8_query_score_filter.jsonl")
	if err != nil {
		t.Fatal(err)
	}
	inRef := map[string]bool{}
	for _, r := range ref {
		inRef[r.Instruction+"\x00"+r.Query+"\x00"+r.Response] = true
	}
	inRec := 0
	for _, r := range rows {
		if inRef[r.Instruction+"\x00"+r.Query+"\x00"+r.Response] {
			inRec++
		}
	}
	for _, k := range kept {
		if !inRef[k.Instruction+"\x00"+k.Query+"\x00"+k.Response] {
			t.Errorf("kept %q (score %v), the flywheel did not", clip(k.Instruction, 40), k.Score)
		}
	}
	if len(kept) != 3 || inRec != 3 {
		t.Errorf("kept %d, the flywheel kept %d of these rows\n%s", len(kept), inRec, table(f))
	}
}
