package reward

import (
	"bufio"
	"compress/gzip"
	"context"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestReturnPolicies(t *testing.T) {
	// One row per evaluate result: the outcome under strict, autoif and lenient.
	const P, F, E, S = Pass, Fail, Error, Skipped
	cases := []struct {
		ret                     string
		strict, autoif, lenient Outcome
	}{
		{"True", P, P, P},
		{"False", F, F, F},
		{"1", P, P, P},
		{"0", F, F, F},
		{"2", E, S, E},
		{"-1", E, S, E},
		{"None", E, S, E},
		{"'True'", E, S, P},
		{"' false\\n'", E, S, F},
		{"'yes'", E, S, E},
		{"'1'", E, P, P},
		{"1.0", E, P, P},
		{"0.5", E, F, E}, // int(0.5) is 0: the reference counts it as a fail
		{"[True]", E, S, E},
		{"type('B', (int,), {})(1)", E, P, E}, // int subclasses are not ints, but int() takes them
		{"type('X', (), {'__int__': lambda s: 1/0})()", E, S, E},
		{"10**5000", E, S, E}, // too large for str(): the message names the type alone
	}
	pools := map[Returns]*Pool{}
	for _, r := range ReturnPolicies {
		pools[r] = newTestPool(t, Options{Workers: 1, Returns: r})
	}
	for _, tc := range cases {
		t.Run(tc.ret, func(t *testing.T) {
			src := "def evaluate(response):\n    return " + tc.ret + "\n"
			for r, want := range map[Returns]Outcome{ReturnsStrict: tc.strict, ReturnsAutoIF: tc.autoif, ReturnsLenient: tc.lenient} {
				got, err := pools[r].Evaluate(context.Background(), src, []string{"x"})
				if err != nil {
					t.Fatal(err)
				}
				wantKind := KindNone
				if want == Error || want == Skipped {
					wantKind = KindBadReturn
				}
				if got[0].Outcome != want || got[0].Kind != wantKind {
					t.Errorf("--returns %s: got %+v, want %v %q", r, got[0], want, wantKind)
				}
				if want == Skipped && got[0].Message == "" {
					t.Errorf("--returns %s: a skipped result must say what evaluate returned", r)
				}
			}
		})
	}
}

func TestParseReturns(t *testing.T) {
	for in, want := range map[string]Returns{"": ReturnsAutoIF, "autoif": ReturnsAutoIF, "strict": ReturnsStrict, "lenient": ReturnsLenient} {
		if got, err := ParseReturns(in); err != nil || got != want {
			t.Errorf("ParseReturns(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	if _, err := ParseReturns("AutoIF"); err == nil {
		t.Error("ParseReturns accepted a name that is not a policy")
	}
}

// autoifRow is one instruction of AutoIF's sample data: its functions and responses.
type autoifRow struct {
	Source string   `json:"source"`
	Line   int      `json:"line"`
	Funcs  [][2]any `json:"eval_func"`
	Resps  []string `json:"gpt-answer"`
}

func readAutoIFRows(t *testing.T, path string) []autoifRow {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var r io.Reader = f
	if strings.HasSuffix(path, ".gz") {
		z, err := gzip.NewReader(f)
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		r = z
	}
	var rows []autoifRow
	sc := bufio.NewScanner(r)
	sc.Buffer(nil, 1<<24)
	for sc.Scan() {
		if len(sc.Bytes()) == 0 {
			continue
		}
		var row autoifRow
		if err := json.Unmarshal(sc.Bytes(), &row); err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		if row.Source == "" {
			row.Source = strings.TrimSuffix(filepath.Base(path), ".gz")
			row.Line = len(rows) + 1
		}
		rows = append(rows, row)
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return rows
}

// referenceRule wraps a function in AutoIF's rule as its scoring script
// (code/7_query_vertification.py) applies it, written out in Python: an exception makes the
// result None, and a result that is not None counts as int(result) unless int() refuses it.
// The wrapper returns True or False for a counted 1 or 0, None for what does not count, and
// the int itself for any other count.
func referenceRule(src string) string {
	return src + `
_autoif_reference_evaluate = evaluate
def evaluate(response):
    try:
        res = _autoif_reference_evaluate(response)
    except Exception:
        res = None
    if res is None:
        return None
    try:
        v = int(res)
    except:
        return None
    return {0: False, 1: True}.get(v, v)
`
}

// checkAgainstReference scores rows under every policy and under the reference rule, and
// requires autoif to count exactly what the reference counts, response by response, and the
// other policies to agree with it wherever they give a verdict at all.
func checkAgainstReference(t *testing.T, rows []autoifRow) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	// The reference script's alarm is 5 s; none of these functions comes near it.
	deadline := 5 * time.Second
	pools := map[Returns]*Pool{}
	for _, r := range ReturnPolicies {
		pools[r] = newTestPool(t, Options{Workers: 2, Returns: r, Deadline: deadline})
	}
	type counts struct{ pass, fail, notCounted, errors, skipped int }
	total := map[string]*counts{"reference": {}, "strict": {}, "autoif": {}, "lenient": {}}
	for _, row := range rows {
		// The sample's responses are prose, on which its prime-list function raises; on a list
		// of numbers it answers, with the strings 'true' and 'false'.
		row.Resps = append(slices.Clip(row.Resps), "2, 3, 5, 7", "4, 6, 8")
		funcs := make([]string, len(row.Funcs))
		ref := make([]string, len(row.Funcs))
		for i, f := range row.Funcs {
			funcs[i], _ = f[0].(string)
			ref[i] = referenceRule(funcs[i])
		}
		want, err := pools[ReturnsStrict].Score(ctx, ref, row.Resps)
		if err != nil {
			t.Fatal(err)
		}
		got := map[Returns]*Result{}
		for _, r := range ReturnPolicies {
			if got[r], err = pools[r].Score(ctx, funcs, row.Resps); err != nil {
				t.Fatal(err)
			}
		}
		for f := range funcs {
			for i := range row.Resps {
				w := want.Evals[f][i]
				c := total["reference"]
				switch {
				case w.Outcome == Pass:
					c.pass++
				case w.Outcome == Fail:
					c.fail++
				case w.Kind == KindBadReturn && w.Message == "evaluate returned NoneType, want bool":
					c.notCounted++
				default:
					t.Fatalf("%s:%d function %d response %d: the reference rule gave %+v, which this test does not expect", row.Source, row.Line, f, i, w)
				}
				for _, r := range ReturnPolicies {
					e := got[r].Evals[f][i]
					c := total[string(r)]
					switch e.Outcome {
					case Pass:
						c.pass++
					case Fail:
						c.fail++
					case Skipped:
						c.skipped++
						c.notCounted++
					default:
						c.errors++
						c.notCounted++
					}
					if r == ReturnsAutoIF && e.Ran() != w.Ran() || e.Ran() && w.Ran() && e.Outcome != w.Outcome {
						t.Errorf("%s:%d function %d response %d: --returns %s gave %+v, the reference rule %v", row.Source, row.Line, f, i, r, e, w.Outcome)
					}
				}
			}
		}
		for i := range row.Resps {
			if g, w := got[ReturnsAutoIF].Scores[i].Score, want.Scores[i].Score; g != w {
				t.Errorf("%s:%d response %d: --returns autoif scores %v, the reference rule %v", row.Source, row.Line, i, g, w)
			}
		}
	}
	for _, name := range []string{"reference", "strict", "autoif", "lenient"} {
		c := total[name]
		t.Logf("%-9s pass %3d  fail %3d  not counted %3d (errors %d, skipped %d)", name, c.pass, c.fail, c.notCounted, c.errors, c.skipped)
	}
	if r, a := total["reference"], total["autoif"]; r.pass != a.pass || r.fail != a.fail || r.notCounted != a.notCounted {
		t.Errorf("--returns autoif counts %+v, the reference rule %+v", *a, *r)
	}
	s, a, l := total["strict"], total["autoif"], total["lenient"]
	if s.skipped != 0 || l.skipped != 0 {
		t.Errorf("only --returns autoif skips: strict %+v, lenient %+v", *s, *l)
	}
	if a.skipped == 0 || l.pass+l.fail <= s.pass+s.fail || a.pass+a.fail < s.pass+s.fail {
		t.Errorf("on functions that return 'true'/'false', autoif skips them (%+v), lenient counts them (%+v), and neither counts less than strict (%+v)", *a, *l, *s)
	}
}

func TestReturnPoliciesOnAutoIFSample(t *testing.T) {
	checkAgainstReference(t, readAutoIFRows(t, filepath.Join("testdata", "autoif_returns.jsonl")))
}

// Every row of the two AutoIF sample files with functions and responses (bundled gzipped:
// testdata/PROVENANCE.md).
func TestReturnPoliciesOnAutoIFData(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: the full AutoIF data takes a while; TestReturnPoliciesOnAutoIFSample covers a sample")
	}
	var rows []autoifRow
	for _, name := range []string{"dpo_query_w_funcs.jsonl.gz", "query_rft.jsonl.gz"} {
		rows = append(rows, readAutoIFRows(t, filepath.Join("testdata", "autoif", name))...)
	}
	checkAgainstReference(t, rows)
}
