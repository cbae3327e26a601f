package crossval

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/autoif/autoif/reward"
)

func newPool(t *testing.T) *reward.Pool {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	p, err := reward.NewPool(ctx, reward.Options{Workers: 2, Deadline: 5 * time.Second})
	if err != nil {
		t.Fatalf("start reward pool (python3 is required): %v", err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}

func readTestInputs(t *testing.T) []Input {
	t.Helper()
	f, err := os.Open("testdata/eval_func_rft.jsonl")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	ins, err := ReadInputs(f)
	if err != nil {
		t.Fatal(err)
	}
	if len(ins) != 5 {
		t.Fatalf("read %d instructions, want 5", len(ins))
	}
	return ins
}

type survivor struct {
	prefix     string
	funcs      int
	cases      int
	accuracies []float64
}

// The survivors were computed independently (an in-process re-implementation of the
// reference script with this package's two fixes: one globals dict per function and
// normalised "True"/"False" strings) and agree with these numbers; see CROSSVAL.md.
func TestCrossValidationOnRealData(t *testing.T) {
	p := newPool(t)
	ins := readTestInputs(t)
	cases := []struct {
		name string
		opts Options
		want []survivor
		// reasons each dropped instruction is dropped for, by instruction prefix
		dropped map[string]Reason
	}{
		{
			name: "AutoIF thresholds on the survivors",
			opts: Options{},
			want: []survivor{
				{"Use only words from a specified page", 3, 14, []float64{1, 1, 1}},
				{"Use words that can be mirrored vertically", 5, 13, []float64{1, 1, 1, 11.0 / 13, 1}},
				{"Answer with words that each contain at least two", 7, 15, []float64{1, 1, 1, 1, 1, 1, 1}},
			},
			dropped: map[string]Reason{
				"Respond with a series of mathematical equations": TooFewFunctionsCV,
				"Write your answer as a series of rhetorical":     NoFunctionSurvives,
			},
		},
		{
			name: "reference script thresholds before cross-validation only",
			opts: Options{ReferenceThresholds: true},
			want: []survivor{
				{"Respond with a series of mathematical equations", 2, 19, []float64{16.0 / 19, 16.0 / 19}},
				{"Use only words from a specified page", 3, 14, []float64{1, 1, 1}},
				{"Use words that can be mirrored vertically", 5, 13, []float64{1, 1, 1, 11.0 / 13, 1}},
				{"Answer with words that each contain at least two", 7, 15, []float64{1, 1, 1, 1, 1, 1, 1}},
			},
			dropped: map[string]Reason{
				"Write your answer as a series of rhetorical": NoFunctionSurvives,
			},
		},
	}
	for _, tc := range cases {
		t.Run(strings.ReplaceAll(tc.name, " ", "_"), func(t *testing.T) {
			outs, rep, err := Run(context.Background(), p, ins, tc.opts)
			if err != nil {
				t.Fatal(err)
			}
			if len(outs) != len(tc.want) {
				t.Fatalf("%d survivors, want %d: %+v", len(outs), len(tc.want), rep.PerInstr)
			}
			for i, w := range tc.want {
				o := outs[i]
				if !strings.HasPrefix(o.Instruction, w.prefix) {
					t.Errorf("survivor %d is %q, want %q...", i, o.Instruction, w.prefix)
				}
				if len(o.Functions) != w.funcs || len(o.Cases) != w.cases {
					t.Errorf("%s: %d functions, %d cases; want %d, %d", w.prefix, len(o.Functions), len(o.Cases), w.funcs, w.cases)
				}
				for k, f := range o.Functions {
					if k < len(w.accuracies) && abs(f.Accuracy-w.accuracies[k]) > 1e-9 {
						t.Errorf("%s: function %d accuracy %v, want %v", w.prefix, k, f.Accuracy, w.accuracies[k])
					}
				}
			}
			for _, ir := range rep.PerInstr {
				for prefix, reason := range tc.dropped {
					if strings.HasPrefix(ir.Instruction, prefix) && (ir.Kept || ir.Reason != reason) {
						t.Errorf("%s: kept=%v reason %q, want dropped for %q", prefix, ir.Kept, ir.Reason, reason)
					}
				}
			}
			// Invalid JSON in 3 completions; 5 completions wrote their 15 outputs as strings.
			if rep.Dropped[BadJSON] != 3 {
				t.Errorf("%d invalid-JSON completions, want 3 (report %+v)", rep.Dropped[BadJSON], rep.Dropped)
			}
			normalised := 0
			for _, ir := range rep.PerInstr {
				normalised += ir.Normalised
			}
			if normalised != 15 {
				t.Errorf("%d expected outputs normalised from strings, want 15", normalised)
			}
			var buf bytes.Buffer
			if err := WriteOutputs(&buf, outs); err != nil {
				t.Fatal(err)
			}
			back, err := ReadOutputs(&buf)
			if err != nil {
				t.Fatal(err)
			}
			if len(back) != len(outs) || back[0].Functions[0] != outs[0].Functions[0] || back[0].Cases[0] != outs[0].Cases[0] {
				t.Errorf("output does not round-trip")
			}
		})
	}
}

func abs(x float64) float64 {
	if x < 0 {
		return -x
	}
	return x
}

func TestNormaliseExpected(t *testing.T) {
	cases := []struct {
		raw    string
		want   bool
		wantOK bool
	}{
		{`true`, true, true}, {`false`, false, true},
		{`"true"`, true, true}, {`"True"`, true, true}, {`" FALSE "`, false, true}, {`"false"`, false, true},
		{`1`, true, true}, {`0`, false, true},
		{`"yes"`, false, false}, {`null`, false, false}, {`2`, false, false}, {`[true]`, false, false},
	}
	for _, tc := range cases {
		got, ok := normaliseExpected(json.RawMessage(tc.raw))
		if got != tc.want || ok != tc.wantOK {
			t.Errorf("%s: got %v %v, want %v %v", tc.raw, got, ok, tc.want, tc.wantOK)
		}
	}
}

func TestParseCompletion(t *testing.T) {
	cases := []struct {
		name, text string
		reason     Reason
		cases      int
	}{
		{"json block with func and cases", "```json\n{\"func\": \"def evaluate(r):\\n    return True\", \"cases\": [{\"input\": \"a\", \"output\": true}]}\n```", "", 1},
		{"first block wins", "```json\n{\"func\": \"def evaluate(r): return 1\", \"cases\": []}\n``` then ```json\n{}\n```", "", 0},
		{"no block", "{\"func\": \"def evaluate(r): return 1\"}", NoJSONBlock, 0},
		{"invalid json", "```json\n{\"func\": \"a\\q\"}\n```", BadJSON, 0},
		{"func missing", "```json\n{\"cases\": []}\n```", NoFunc, 0},
		{"func not a string", "```json\n{\"func\": 3}\n```", NoFunc, 0},
	}
	for _, tc := range cases {
		t.Run(strings.ReplaceAll(tc.name, " ", "_"), func(t *testing.T) {
			c := parseCompletion(tc.text)
			if c.reason != tc.reason || len(c.cases) != tc.cases {
				t.Errorf("got reason %q, %d cases; want %q, %d", c.reason, len(c.cases), tc.reason, tc.cases)
			}
		})
	}
}

// Small synthetic instructions exercise each drop rule through the real sandbox.
func TestDropRules(t *testing.T) {
	p := newPool(t)
	block := func(fn string, cases ...string) string {
		b, _ := json.Marshal(map[string]any{"func": fn, "cases": json.RawMessage("[" + strings.Join(cases, ",") + "]")})
		return "```json\n" + string(b) + "\n```"
	}
	c := func(in string, out string) string { return `{"input":` + mustJSON(in) + `,"output":` + out + `}` }
	short := "def evaluate(response):\n    return len(response) < 5\n"
	short2 := "def evaluate(response):\n    n = len(response)\n    return n < 5\n"
	short3 := "def helper(s):\n    return len(s)\ndef evaluate(response):\n    return helper(response) <= 4\n"
	wrong := "def evaluate(response):\n    return response.startswith('q')\n"
	broken := "def evaluate(response)\n    return True\n"
	var manyCases []string
	for i := range 12 {
		in := strings.Repeat("x", i)
		exp := "false"
		if i < 5 {
			exp = `"True"`
		}
		manyCases = append(manyCases, c(in, exp))
	}
	in := Input{Instruction: "be short", Completions: []string{
		block(short, manyCases[:4]...),
		block(short2, manyCases[4:8]...),
		block(short3, manyCases[8:]...),
		block(short, c("dup", "true")),         // duplicate function
		block(wrong, c("abcdefgh", "true")),    // low accuracy; its case is unconfirmed
		block(broken, c("never used", "true")), // does not compile: its case goes too
		"no json here",
	}}
	outs, rep, err := Run(context.Background(), p, []Input{in}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if len(outs) != 1 || len(outs[0].Functions) != 3 || len(outs[0].Cases) != 13 || rep.PerInstr[0].Normalised != 5 {
		t.Fatalf("survivors %+v, report %+v", outs, rep.PerInstr)
	}
	want := map[Reason]int{DuplicateFunc: 1, LowAccuracy: 1, Unconfirmed: 1, NotCompiling: 1, CaseFromBadFunc: 1, NoJSONBlock: 1}
	for r, n := range want {
		if rep.Dropped[r] != n {
			t.Errorf("%s: %d, want %d (report %+v)", r, rep.Dropped[r], n, rep.Dropped)
		}
	}
	// 14 distinct cases go in and 13 survive: the case threshold can bite before or after.
	for _, th := range []struct {
		min  int
		want Reason
	}{{14, TooFewCasesCV}, {15, TooFewCases}} {
		_, rep, err = Run(context.Background(), p, []Input{in}, Options{MinCases: th.min})
		if err != nil {
			t.Fatal(err)
		}
		if rep.Kept != 0 || rep.PerInstr[0].Reason != th.want {
			t.Errorf("with %d cases required: %+v, want dropped for %q", th.min, rep.PerInstr[0], th.want)
		}
	}
}

func mustJSON(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}

// Cross-validation counts a function's results as the pool's return policy says: functions
// that answer with the strings 'True'/'False' confirm nothing under AutoIF's rule (the
// reference compares the string with the expected bool, and int() refuses it) and survive
// under lenient.
func TestReturnPolicyDecidesWhatSurvives(t *testing.T) {
	block := func(fn string, cases ...string) string {
		b, _ := json.Marshal(map[string]any{"func": fn, "cases": json.RawMessage("[" + strings.Join(cases, ",") + "]")})
		return "```json\n" + string(b) + "\n```"
	}
	var cases []string
	for i := range 12 {
		cases = append(cases, `{"input":`+mustJSON(strings.Repeat("x", i))+`,"output":`+strconv.FormatBool(i < 5)+`}`)
	}
	in := Input{Instruction: "be short", Completions: []string{
		block("def evaluate(response):\n    return 'True' if len(response) < 5 else 'False'\n", cases[:4]...),
		block("def evaluate(response):\n    return str(len(response) <= 4)\n", cases[4:8]...),
		block("def evaluate(response):\n    n = len(response)\n    return 'true' if n < 5 else 'false'\n", cases[8:]...),
	}}
	for policy, kept := range map[reward.Returns]int{reward.ReturnsAutoIF: 0, reward.ReturnsStrict: 0, reward.ReturnsLenient: 1} {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		p, err := reward.NewPool(ctx, reward.Options{Workers: 1, Returns: policy})
		cancel()
		if err != nil {
			t.Fatal(err)
		}
		outs, rep, err := Run(context.Background(), p, []Input{in}, Options{})
		p.Close()
		if err != nil {
			t.Fatal(err)
		}
		if len(outs) != kept || rep.Kept != kept {
			t.Errorf("--returns %s: %d instructions kept (%+v), want %d", policy, len(outs), rep.PerInstr, kept)
		}
		if kept == 1 && len(outs[0].Functions) != 3 {
			t.Errorf("--returns %s: %d functions survive, want all 3", policy, len(outs[0].Functions))
		}
	}
}
