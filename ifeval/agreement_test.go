package ifeval

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/autoif/autoif/internal/ifevaldata"
)

func readOfficial(t *testing.T, path string) []Output {
	t.Helper()
	f, err := ifevaldata.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []Output
	err = eachLine(f, func(n int, line []byte) error {
		var o Output
		if err := json.Unmarshal(line, &o); err != nil {
			return fmt.Errorf("%s:%d: %v", path, n, err)
		}
		out = append(out, o)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// disagreement is one instruction whose verdict differs from the official one.
type disagreement struct {
	key      int
	id       string
	official bool
}

// agreement re-checks every official row's response and compares instruction by instruction.
func agreement(t *testing.T, inputs []Input, official []Output, mode Mode) (agree, total int, diffs []disagreement) {
	t.Helper()
	byPrompt := map[string]Input{}
	for _, in := range inputs {
		byPrompt[in.Prompt] = in
	}
	for _, o := range official {
		in, ok := byPrompt[o.Prompt]
		if !ok {
			t.Fatalf("official row's prompt %.60q not in the inputs", o.Prompt)
		}
		for i, id := range in.InstructionIDList {
			single := Input{Key: in.Key, Prompt: in.Prompt, InstructionIDList: []string{id}, Kwargs: []map[string]any{in.Kwargs[i]}}
			p, err := Prepare(single)
			if err != nil {
				t.Fatal(err)
			}
			got := p.Evaluate(o.Response, mode).FollowInstructionList[0]
			total++
			if got == o.FollowInstructionList[i] {
				agree++
			} else {
				diffs = append(diffs, disagreement{in.Key, id, o.FollowInstructionList[i]})
			}
		}
	}
	return
}

// knownDifferences lists every verdict that may differ from the official outputs, by
// "file/key/instruction id" (file "*": any file), with its reason. Any other difference fails.
var knownDifferences = map[string]string{
	// The letters '#' and '!' are not ASCII letters, so the official checker counts a random
	// letter (random.choice(string.ascii_letters), drawn anew for strict and for loose) and
	// this one counts another (drawn once per row, seeded by the prompt).
	"*/1122/keywords:letter_frequency": "random letter ('#' is not a-z)",
	"*/1129/keywords:letter_frequency": "random letter ('!' is not a-z)",

	// The official checker leaves langdetect's DetectorFactory.seed unset, so each run draws
	// its n-grams from a new seed; the port uses seed 0. On these responses Python's own
	// langdetect 1.0.9 answers differently by seed (scripts/ifeval_langdetect_seeds.py, seeds
	// 0..39): the official verdict is one of the possible ones.
	"CohereForAI__aya-23-8B.eval_results_strict.jsonl/2596/language:response_language":                 "langdetect by seed: bg 32, mk 8 (Bulgarian text)",
	"Qwen__Qwen2.5-3B-Instruct-GPTQ-Int4.eval_results_strict.jsonl/3150/change_case:english_lowercase": "langdetect by seed: en 36, cy 4 ('cycleenginecycles')",
	"Qwen__Qwen2.5-3B-Instruct-GPTQ-Int4.eval_results_strict.jsonl/3424/change_case:english_capital":   "langdetect by seed: de 31, en 9 (capitalised word list)",
	"Qwen__Qwen2.5-7B-Instruct-GPTQ-Int4.eval_results_strict.jsonl/3456/change_case:english_capital":   "langdetect by seed: en 20, de 19, so 1 (list of names)",
	"claude-3-haiku-20240307.eval_results_strict.jsonl/1645/change_case:english_capital":               "langdetect by seed: so 27, en 13 (five capitalised words)",
	"claude-3-haiku-20240307.eval_results_strict.jsonl/3456/change_case:english_capital":               "langdetect by seed: so 35, en 5 (list of names)",
	"claude-3-opus-20240229.eval_results_strict.jsonl/3456/change_case:english_capital":                "langdetect by seed: so 20, en 18, de 2 (list of names)",
}

func knownDifference(file string, d disagreement) (string, bool) {
	id := strings.TrimPrefix(d.id, "en:")
	for _, k := range []string{fmt.Sprintf("%s/%d/%s", file, d.key, id), fmt.Sprintf("*/%d/%s", d.key, id)} {
		if reason, ok := knownDifferences[k]; ok {
			return reason, true
		}
	}
	return "", false
}

// nlpTypes are the instruction types that depend on the NLTK and langdetect ports.
var nlpTypes = map[string]bool{
	"language:response_language":          true,
	"length_constraints:number_sentences": true,
	"change_case:capital_word_frequency":  true,
	"change_case:english_capital":         true,
	"change_case:english_lowercase":       true,
}

// tally adds up agreement over several official files.
type tally struct {
	agree, total int
	seen         map[string]bool // knownDifferences entries that occurred
}

// checkAgreement compares one official file instruction by instruction: every difference
// must be listed in knownDifferences, and only a random-letter one may touch a type that
// uses neither NLTK nor langdetect.
func (ta *tally) checkAgreement(t *testing.T, inputs []Input, path string, mode Mode) {
	t.Helper()
	agree, total, diffs := agreement(t, inputs, readOfficial(t, path), mode)
	file := strings.TrimSuffix(filepath.Base(path), ".gz")
	for _, d := range diffs {
		id := strings.TrimPrefix(d.id, "en:")
		reason, ok := knownDifference(file, d)
		switch {
		case !ok:
			t.Errorf("%s key %d %s: got %v, official %v (not a known difference)", file, d.key, d.id, !d.official, d.official)
		case !nlpTypes[id] && !strings.HasPrefix(reason, "random letter"):
			t.Errorf("%s key %d %s: a type without NLTK/langdetect must agree exactly", file, d.key, d.id)
		default:
			t.Logf("%s key %d %s: official %v, here %v: %s", file, d.key, d.id, d.official, !d.official, reason)
		}
		if ta.seen == nil {
			ta.seen = map[string]bool{}
		}
		ta.seen[fmt.Sprintf("%s/%d/%s", file, d.key, id)] = true
	}
	ta.agree, ta.total = ta.agree+agree, ta.total+total
	t.Logf("%s (%s): %d/%d instructions agree", file, mode, agree, total)
}

// done checks the overall bar (>= 99.8 %) and that every file-specific known difference
// still occurs, so the list cannot go stale.
func (ta *tally) done(t *testing.T, files []string) {
	t.Helper()
	rate := float64(ta.agree) / float64(ta.total)
	t.Logf("overall: %d/%d = %.5f", ta.agree, ta.total, rate)
	if rate < 0.998 {
		t.Errorf("overall agreement %d/%d = %.4f, want >= 0.998", ta.agree, ta.total, rate)
	}
	for k := range knownDifferences {
		file, _, _ := strings.Cut(k, "/")
		if file == "*" || !slices.Contains(files, file) {
			continue
		}
		if !ta.seen[k] {
			t.Errorf("known difference %s no longer occurs: remove it", k)
		}
	}
}

func TestAgreesWithOfficialGPT4Outputs(t *testing.T) {
	inputs := OfficialInputs()
	var ta tally
	ta.checkAgreement(t, inputs, "testdata/official_gpt4/eval_results_strict_gpt4.jsonl", Strict)
	ta.checkAgreement(t, inputs, "testdata/official_gpt4/eval_results_loose_gpt4.jsonl", Loose)
	ta.done(t, []string{"eval_results_strict_gpt4.jsonl", "eval_results_loose_gpt4.jsonl"})
}

// The 17 models' strict outputs (M-IFEval's English run, checked against the older key-2785
// prompt) are bundled gzipped: testdata/PROVENANCE.md.
func TestAgreesWith17ModelsStrictOutputs(t *testing.T) {
	dir, err := ifevaldata.Dir()
	if err != nil {
		t.Fatal(err)
	}
	f, err := ifevaldata.Open(ifevaldata.StrictInputFile(dir))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	inputs, err := ReadInputs(f, ifevaldata.StrictInputFile(dir))
	if err != nil {
		t.Fatal(err)
	}
	files, err := ifevaldata.StrictResultFiles(dir)
	if err != nil || len(files) != 17 {
		t.Fatalf("want the 17 models' strict outputs in %s, found %d (%v)", dir, len(files), err)
	}
	var ta tally
	var names []string
	for _, f := range files {
		ta.checkAgreement(t, inputs, f, Strict)
		names = append(names, strings.TrimSuffix(filepath.Base(f), ".gz"))
	}
	ta.done(t, names)
}

// The official files are json.dumps output: re-encoding their rows must give the same bytes.
func TestOutputsEncodeAsTheOfficialFiles(t *testing.T) {
	for _, name := range []string{"eval_results_strict_gpt4.jsonl", "eval_results_loose_gpt4.jsonl"} {
		path := filepath.Join("testdata/official_gpt4", name)
		want, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		var got []byte
		for _, o := range readOfficial(t, path) {
			got = o.AppendJSONL(got)
		}
		if string(got) != string(want) {
			t.Errorf("%s: re-encoded rows differ from the file", name)
		}
	}
}

// The four headline figures for the official GPT-4 responses equal the official ones to 0.1
// percentage point once the two verdicts the official checker draws at random (keys 1122 and
// 1129, a random letter) are taken from the official outputs; the raw figures differ from
// the official ones by no more than those verdicts can move them.
func TestGPT4HeadlineFigures(t *testing.T) {
	responses, err := ReadResponseFile("testdata/official_gpt4/input_response_data_gpt4_20231107_145030.jsonl")
	if err != nil {
		t.Fatal(err)
	}
	official := Result{
		Strict: readOfficial(t, "testdata/official_gpt4/eval_results_strict_gpt4.jsonl"),
		Loose:  readOfficial(t, "testdata/official_gpt4/eval_results_loose_gpt4.jsonl"),
	}
	// The official outputs leave out key 2785 (its prompt changed after the run).
	inOfficial := map[string]bool{}
	for _, o := range official.Strict {
		inOfficial[o.Prompt] = true
	}
	var inputs []Input
	for _, in := range OfficialInputs() {
		if inOfficial[in.Prompt] {
			inputs = append(inputs, in)
		}
	}
	res, err := EvaluateAll(inputs, responses)
	if err != nil {
		t.Fatal(err)
	}
	raw := res.Headline()
	random := 0
	for m, outs := range [][]Output{res.Strict, res.Loose} {
		ref := [][]Output{official.Strict, official.Loose}[m]
		for i := range outs {
			o := &outs[i]
			if ref[i].Prompt != o.Prompt {
				t.Fatalf("row %d: official prompt %.40q, here %.40q", i, ref[i].Prompt, o.Prompt)
			}
			key := inputs[i].Key
			o.FollowAllInstructions = true
			for j, id := range o.InstructionIDList {
				if _, ok := knownDifferences[fmt.Sprintf("*/%d/%s", key, id)]; ok && o.FollowInstructionList[j] != ref[i].FollowInstructionList[j] {
					o.FollowInstructionList[j] = ref[i].FollowInstructionList[j]
					random++
				}
				o.FollowAllInstructions = o.FollowAllInstructions && o.FollowInstructionList[j]
			}
		}
	}
	got, want := res.Headline(), official.Headline()
	t.Logf("raw %+v\nwith the official random-letter verdicts (%d changed) %+v\nofficial %+v", raw, random, got, want)
	n := float64(len(inputs))
	for _, c := range []struct {
		name           string
		raw, got, want float64
		slack          float64
	}{
		{"prompt_strict", raw.PromptStrict, got.PromptStrict, want.PromptStrict, 1 / n},
		{"instruction_strict", raw.InstructionStrict, got.InstructionStrict, want.InstructionStrict, 1 / float64(NewReport(res.Strict).Instruction.Total)},
		{"prompt_loose", raw.PromptLoose, got.PromptLoose, want.PromptLoose, 1 / n},
		{"instruction_loose", raw.InstructionLoose, got.InstructionLoose, want.InstructionLoose, 1 / float64(NewReport(res.Loose).Instruction.Total)},
	} {
		if d := 100 * (c.got - c.want); d > 0.1 || d < -0.1 {
			t.Errorf("%s = %.2f %%, official %.2f %%", c.name, 100*c.got, 100*c.want)
		}
		if d := c.raw - c.want; d > 2*c.slack+1e-12 || d < -2*c.slack-1e-12 {
			t.Errorf("%s: raw %.4f is further from the official %.4f than two random verdicts explain", c.name, c.raw, c.want)
		}
	}
}

// WriteResponses writes the official responses file's format: re-writing the GPT-4 responses
// gives the same bytes.
func TestResponsesEncodeAsTheOfficialFile(t *testing.T) {
	path := "testdata/official_gpt4/input_response_data_gpt4_20231107_145030.jsonl"
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var prompts, responses []string
	for _, line := range strings.SplitAfter(string(want), "\n") {
		var row struct{ Prompt, Response string }
		if json.Unmarshal([]byte(line), &row) == nil {
			prompts, responses = append(prompts, row.Prompt), append(responses, row.Response)
		}
	}
	out := filepath.Join(t.TempDir(), "responses.jsonl")
	if err := WriteResponses(out, prompts, responses); err != nil {
		t.Fatal(err)
	}
	if got, _ := os.ReadFile(out); string(got) != string(want) {
		t.Errorf("re-written responses (%d rows) differ from %s", len(prompts), path)
	}
}
