package ifeval

import (
	"encoding/json"
	"testing"
)

// count_words counts \w+ runs with Python's Unicode \w.
func TestCountWords(t *testing.T) {
	for s, want := range map[string]int{"it's a dog_house": 4, "x²": 1, "١٢ ab": 2, "-- ..": 0, "नमस्ते": 2} {
		if got := countWords(s); got != want {
			t.Errorf("count_words(%q) = %d, want %d", s, got, want)
		}
	}
}

func TestPythonJSONLoads(t *testing.T) {
	for s, want := range map[string]bool{
		`{"a": 1}`:          true,
		" \n[1, -0.5e+3]\r": true,
		`NaN`:               true,
		`-Infinity`:         true,
		`"\u00e9"`:          true,
		`01`:                false,
		`1.`:                false,
		`1e`:                false,
		`-`:                 false,
		"\"a\tb\"":          false,
		`{'a': 1}`:          false,
		"\u00a0{}":          false,
		"":                  false,
		`[1] [2]`:           false,
		`"\x"`:              false,
	} {
		if got := pyJSONLoads(s); got != want {
			t.Errorf("json.loads(%q) ok = %v, want %v", s, got, want)
		}
	}
}

// Everything encoding/json accepts, Python's json.loads accepts too.
func FuzzPythonJSONLoads(f *testing.F) {
	for _, s := range []string{`{"a":[1,2,{"b":null}]}`, `NaN`, `1e5`, `"\ud800"`, `[`} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if json.Valid([]byte(s)) && !pyJSONLoads(s) {
			t.Errorf("encoding/json accepts %q, pyJSONLoads does not", s)
		}
	})
}

// Any response, through every instruction type of the official data, strict and loose:
// never a panic, and one verdict per instruction.
func FuzzEvaluateResponse(f *testing.F) {
	seen := map[string]bool{}
	var rows []*Prepared
	for _, in := range OfficialInputs() {
		for i, id := range in.InstructionIDList {
			if seen[id] {
				continue
			}
			seen[id] = true
			p, err := Prepare(Input{Key: in.Key, Prompt: in.Prompt, InstructionIDList: []string{id}, Kwargs: in.Kwargs[i : i+1]})
			if err == nil {
				rows = append(rows, p)
			}
		}
	}
	for _, s := range []string{"", "\n", "* a\n- b", "```json\n{}\n```", "<<t>>\n\n\"P.S. x\"", "Section 1 ****** SECTION 2 ***", "\xff\xfe", "İΣ\u212a"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, response string) {
		for _, p := range rows {
			for _, m := range []Mode{Strict, Loose} {
				if o := p.Evaluate(response, m); len(o.FollowInstructionList) != 1 {
					t.Fatalf("%d verdicts for one instruction", len(o.FollowInstructionList))
				}
			}
		}
	})
}
