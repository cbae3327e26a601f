package ifeval

import (
	"os"
	"strings"
	"testing"
)

// open-instruct's RLVR rows read as IFEval inputs: the func_name form maps onto the IFEval
// instruction with the same check, the instruction_id form is taken as it is, and a
// response's score is the fraction of its row's constraints followed.
func TestRLVRRowsScoreAsIFEval(t *testing.T) {
	inputs, err := ReadInputFile("testdata/rlvr_ifeval.jsonl")
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		ids      string
		response string
		score    float64
	}{
		{"change_case:english_lowercase", "crimson leaves drift down\nthe quiet river carries them\nautumn says goodbye", 1},
		{"length_constraints:number_words", strings.Repeat("word ", 40), 1}, // "at most 40" is "less than 41"
		{"detectable_format:number_bullet_lists", "* apple\n* pear\n* plum\n* fig", 0},
		{"keywords:existence", "The Moon's GRAVITY pulls the sea.", 1},
		{"startend:end_checker", "Goodbye! any other questions?", 1},
		{"punctuation:no_comma+startend:quotation", `Hi there, the parcel is with me.`, 0},
	}
	if len(inputs) != len(cases) {
		t.Fatalf("%d rows, want %d", len(inputs), len(cases))
	}
	for i, c := range cases {
		in := inputs[i]
		if got := strings.Join(in.InstructionIDList, "+"); got != c.ids {
			t.Errorf("row %d: %s, want %s", i+1, got, c.ids)
		}
		if in.Key != i+1 {
			t.Errorf("row %d: key %d, want its line", i+1, in.Key)
		}
		p, err := Prepare(in)
		if err != nil {
			t.Fatal(err)
		}
		out := p.Evaluate(c.response, Strict)
		followed := 0
		for _, ok := range out.FollowInstructionList {
			if ok {
				followed++
			}
		}
		if got := float64(followed) / float64(len(out.FollowInstructionList)); got != c.score {
			t.Errorf("row %d (%s) on %q: score %v, want %v", i+1, c.ids, c.response, got, c.score)
		}
	}
	// The two-instruction row: one of two followed is half the reward.
	p, _ := Prepare(inputs[5])
	if out := p.Evaluate(`"Hi there. The parcel is with me`, Strict); !out.FollowInstructionList[0] || out.FollowInstructionList[1] {
		t.Errorf("no comma but no closing quote: %v", out.FollowInstructionList)
	}
}

// A row that cannot be scored as IFEval is one error naming its line and the reason.
func TestRLVRRowErrors(t *testing.T) {
	msg := `"messages": [{"role": "user", "content": "Hi."}]`
	for _, c := range []struct{ row, want string }{
		{`{` + msg + `, "ground_truth": "{\"func_name\": \"verify_haiku\", \"N\": null}"}`, `rows.jsonl:1: func_name "verify_haiku" is not one of open-instruct's 25 IFEval functions`},
		{`{` + msg + `, "ground_truth": "{\"func_name\": \"validate_word_constraint\", \"N\": 50, \"quantifier\": \"around\"}"}`, `quantifier "around" has no IFEval relation`},
		{`{` + msg + `, "ground_truth": "{\"func_name\": \"validate_lowercase\", \"N\": 3}"}`, `validate_lowercase takes no N`},
		{`{` + msg + `, "ground_truth": "{\"func_name\": \"verify_keywords\", \"keyword_list\": null}"}`, `keywords is required`},
		{`{` + msg + `, "ground_truth": "{\"answer\": 4}"}`, `neither func_name nor instruction_id`},
		{`{` + msg + `, "ground_truth": "4", "dataset": "gsm8k"}`, `dataset "gsm8k": only IFEval rows`},
		{`{"messages": [{"role": "system", "content": "Be brief."}], "ground_truth": "{\"func_name\": \"validate_title\"}"}`, `no user message`},
		{`{` + msg + `}`, `no ground_truth`},
	} {
		_, err := ReadInputs(strings.NewReader(c.row), "rows.jsonl")
		if err == nil || !strings.Contains(err.Error(), c.want) || !strings.HasPrefix(err.Error(), "rows.jsonl:1: ") || strings.Contains(err.Error(), "\n") {
			t.Errorf("%s:\n got %v\nwant rows.jsonl:1: ...%s", c.row, err, c.want)
		}
	}
}

// Any input line, IFEval or RLVR: rows or one error, never a panic.
func FuzzReadInputs(f *testing.F) {
	rows, err := os.ReadFile("testdata/rlvr_ifeval.jsonl")
	if err != nil {
		f.Fatal(err)
	}
	for _, line := range strings.Split(string(rows), "\n") {
		f.Add(line)
	}
	f.Add(`{"messages": [], "ground_truth": [["{\"instruction_id\": [\"startend:quotation\"], \"kwargs\": [null]}"]]}`)
	f.Add(`{"messages": [{"role": "user", "content": "x"}], "ground_truth": "[{\"instruction_id\": \"x\", \"kwargs\": 3}]"}`)
	f.Fuzz(func(t *testing.T, line string) {
		in, err := ReadInputs(strings.NewReader(line), "f.jsonl")
		if (err == nil) == (len(in) == 0) {
			t.Errorf("%d rows and error %v", len(in), err)
		}
		for _, row := range in {
			if _, err := Prepare(row); err != nil {
				t.Errorf("a row that reads does not prepare: %v", err)
			}
		}
	})
}
