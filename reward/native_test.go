package reward

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/autoif/autoif/ifeval"
)

func constraint(t *testing.T, id string, kwargs map[string]any) string {
	t.Helper()
	fn, err := ifeval.ConstraintFunction(id, kwargs)
	if err != nil {
		t.Fatal(err)
	}
	return fn
}

// A unit's score is the fraction of its constraints followed; Python functions in the same
// unit go to the sandbox and count the same way.
func TestNativeScorerMixesConstraintsAndPython(t *testing.T) {
	noComma := constraint(t, "punctuation:no_comma", nil)
	lower := constraint(t, "length_constraints:number_words", map[string]any{"num_words": float64(3), "relation": "less than"})
	python := "def evaluate(response):\n    return response.endswith('!')\n"
	s := WithNative(newTestPool(t, Options{}))
	res, err := s.Score(context.Background(), []string{noComma, python, lower}, []string{"hi there!", "a, b, c, d", "  "})
	if err != nil {
		t.Fatal(err)
	}
	want := []struct {
		passed, ran int
		score       float64
	}{{3, 3, 1}, {0, 3, 0}, {0, 3, 0}} // a blank response follows no constraint, not even "fewer than 3 words"
	for r, w := range want {
		got := res.Scores[r]
		if got.Passed != w.passed || got.Ran != w.ran || got.Score != w.score {
			t.Errorf("response %d: %+v, want passed %d of %d", r, got, w.passed, w.ran)
		}
	}
	if res.Evals[1][0].Outcome != Pass || res.Evals[0][1].Outcome != Fail {
		t.Errorf("evals not in function order: %+v", res.Evals)
	}
}

// Constraints alone need no sandbox; a malformed one is an error outcome, not a failed call.
func TestNativeScorerWithoutSandbox(t *testing.T) {
	s := WithNative(nil)
	res, err := s.Score(context.Background(), []string{constraint(t, "startend:quotation", nil), ifeval.ConstraintPrefix + "{oops"}, []string{`"quoted"`})
	if err != nil {
		t.Fatal(err)
	}
	if sc := res.Scores[0]; sc.Passed != 1 || sc.Ran != 1 || sc.Errors != 1 || res.Evals[1][0].Kind != KindCompile {
		t.Errorf("got %+v / %+v", sc, res.Evals)
	}
	if _, err := s.Score(context.Background(), []string{"def evaluate(r):\n    return True\n"}, []string{"x"}); err == nil || !strings.Contains(err.Error(), "no sandbox") {
		t.Errorf("Python function without a sandbox: %v", err)
	}
}

// Native scoring of the official IFEval constraints: evaluations per second on the GPT-4
// responses.
func BenchmarkNativeConstraints(b *testing.B) {
	var funcs [][]string
	var responses []string
	resp, err := ifeval.ReadResponseFile("../ifeval/testdata/official_gpt4/input_response_data_gpt4_20231107_145030.jsonl")
	if err != nil {
		b.Fatal(err)
	}
	for _, in := range ifeval.OfficialInputs() {
		var fs []string
		for i, id := range in.InstructionIDList {
			fn, err := ifeval.ConstraintFunction(id, in.Kwargs[i])
			if err != nil {
				b.Fatal(err)
			}
			fs = append(fs, fn)
		}
		funcs, responses = append(funcs, fs), append(responses, resp[in.Prompt])
	}
	s := WithNative(nil)
	evals := 0
	b.ResetTimer()
	for b.Loop() {
		for i := range funcs {
			if _, err := s.Score(context.Background(), funcs[i], responses[i:i+1]); err != nil {
				b.Fatal(err)
			}
			evals += len(funcs[i])
		}
	}
	b.ReportMetric(float64(evals)/b.Elapsed().Seconds(), "evals/s")
}

// The same constraints written as Python functions (ifeval.PythonFunction) and run in the
// sandbox give the native verdicts, on every official constraint that has a Python form and
// the official GPT-4 responses to all prompts.
func TestNativeVerdictsEqualPythonInTheSandbox(t *testing.T) {
	w, err := LoadIFEvalWorkload("../ifeval/testdata/official_gpt4/input_response_data_gpt4_20231107_145030.jsonl", 60)
	if err != nil {
		t.Fatal(err)
	}
	pool := newTestPool(t, Options{Deadline: 5 * time.Second})
	py, err := pool.Score(context.Background(), w.Python, w.Responses)
	if err != nil {
		t.Fatal(err)
	}
	native, err := WithNative(nil).Score(context.Background(), w.Native, w.Responses)
	if err != nil {
		t.Fatal(err)
	}
	differ := 0
	for f := range w.Native {
		for r := range w.Responses {
			if py.Evals[f][r].Outcome != native.Evals[f][r].Outcome {
				if differ++; differ <= 10 {
					t.Errorf("%s on response %d: Python %v (%s), native %v", ifeval.ConstraintID(w.Native[f]), r, py.Evals[f][r].Outcome, py.Evals[f][r].Message, native.Evals[f][r].Outcome)
				}
			}
		}
	}
	t.Logf("%d constraints × %d responses, %d differ", len(w.Native), len(w.Responses), differ)
}
