package synth

import (
	"encoding/json"
	"regexp"
	"strings"
	"testing"
)

// Any completion parses without a panic, and what parses is written back as one ```json
// block the cross-validation reads to the same function.
func FuzzParseFunctionCompletion(f *testing.F) {
	rows, err := ReadJSONL[FunctionsRow]("testdata/autoif/eval_func_rft.jsonl")
	if err != nil {
		f.Fatal(err)
	}
	for _, r := range rows {
		for _, c := range r.Completions {
			f.Add(c)
		}
	}
	f.Add("```json\n{'func': 'def evaluate(r): return True', 'cases': [],}\n```")
	f.Add("```json\n{\"func\": \"def evaluate(r):\\n    return r.startswith('```')\", \"cases\": []}\n```")
	f.Add("```python\ndef evaluate(r):\n    return '\\d' in r")
	block := regexp.MustCompile("(?s)```json(.*?)```")
	f.Fuzz(func(t *testing.T, text string) {
		fc, why := ParseFunctionCompletion(text)
		ParseStringList(text)
		ParseScore(text)
		ParseNLILabel(text)
		ParseInstructionLines(text)
		if why != "" {
			return
		}
		m := block.FindStringSubmatch(fc.Canonical())
		var back FunctionCompletion
		if m == nil || json.Unmarshal([]byte(strings.TrimSpace(m[1])), &back) != nil || back.Func != fc.Func {
			t.Fatalf("canonical form %q does not read back", fc.Canonical())
		}
	})
}
