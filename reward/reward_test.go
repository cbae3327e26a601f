package reward

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestScoreResponsesAppliesAutoIFRule(t *testing.T) {
	p, f := Eval{Outcome: Pass}, Eval{Outcome: Fail}
	e := Eval{Outcome: Error, Kind: KindException}
	to := Eval{Outcome: Timeout}
	cases := []struct {
		name  string
		evals [][]Eval // [function][response]
		want  []ResponseScore
	}{
		{"all pass scores one", [][]Eval{{p}, {p}, {p}}, []ResponseScore{{Score: 1, Passed: 3, Ran: 3}}},
		{"mean pass rate over functions", [][]Eval{{p}, {f}, {p}, {f}}, []ResponseScore{{Score: 0.5, Passed: 2, Ran: 4}}},
		{"errors leave the denominator", [][]Eval{{p}, {e}, {f}, {e}}, []ResponseScore{{Score: 0.5, Passed: 1, Ran: 2, Errors: 2}}},
		{"timeouts count as errors", [][]Eval{{p}, {to}}, []ResponseScore{{Score: 1, Passed: 1, Ran: 1, Errors: 1, Timeouts: 1}}},
		{"no function ran scores zero", [][]Eval{{e}, {to}}, []ResponseScore{{Score: 0, Errors: 2, Timeouts: 1}}},
		{"no functions scores zero", nil, []ResponseScore{{}}},
		{"skipped results leave the denominator, apart from errors", [][]Eval{{p}, {Eval{Outcome: Skipped, Kind: KindBadReturn}}, {f}}, []ResponseScore{{Score: 0.5, Passed: 1, Ran: 2, Skipped: 1}}},
		{"responses are scored independently", [][]Eval{{p, f}, {p, e}}, []ResponseScore{{Score: 1, Passed: 2, Ran: 2}, {Score: 0, Ran: 1, Errors: 1}}},
	}
	for _, tc := range cases {
		t.Run(strings.ReplaceAll(tc.name, " ", "_"), func(t *testing.T) {
			if got := ScoreResponses(tc.evals, len(tc.want)); !reflect.DeepEqual(got, tc.want) {
				t.Errorf("got %+v, want %+v", got, tc.want)
			}
		})
	}
}

func TestFunctionSources(t *testing.T) {
	p := newTestPool(t, Options{Workers: 1})
	cases := []struct {
		name string
		src  string
		want Outcome
		kind Kind
	}{
		{"top-level helper is visible to evaluate",
			"def count_words(s):\n    return len(s.split())\n\ndef evaluate(response):\n    return count_words(response) == 2\n", Pass, ""},
		{"top-level import is visible to evaluate",
			"import string\nVOWELS = set('aeiou')\ndef evaluate(response):\n    return response[0] in string.ascii_lowercase and response[0] not in VOWELS\n", Pass, ""},
		{"helper defined after evaluate is visible", "def evaluate(response):\n    return helper(response)\ndef helper(s):\n    return s == 'hi there'\n", Pass, ""},
		{"syntax error is a compile error", "def evaluate(response)\n    return True\n", Error, KindCompile},
		{"missing evaluate is a compile error", "def check(response):\n    return True\n", Error, KindCompile},
		{"top-level exception is an exception", "raise ValueError('boom')\ndef evaluate(response):\n    return True\n", Error, KindException},
		{"missing optional module is unavailable", "import no_such_package_autoif.sub\ndef evaluate(response):\n    return True\n", Error, KindModuleUnavailable},
		{"missing module inside evaluate is unavailable", "def evaluate(response):\n    import no_such_module_autoif\n    return True\n", Error, KindModuleUnavailable},
		{"exception inside evaluate", "def evaluate(response):\n    return response[100] == 'x'\n", Error, KindException},
		{"standard library works", "import re, json, collections, unicodedata, datetime\ndef evaluate(response):\n    return bool(re.match(r'hi', response)) and json.loads('[1]') == [1] and collections.Counter(response)['i'] == 1 and unicodedata.category('a') == 'Ll' and datetime.date(2024, 1, 1).year == 2024\n", Pass, ""},
		{"printing a little is fine", "def evaluate(response):\n    print('checking', response)\n    return True\n", Pass, ""},
	}
	for _, tc := range cases {
		t.Run(strings.ReplaceAll(tc.name, " ", "_"), func(t *testing.T) {
			got, err := p.Evaluate(context.Background(), tc.src, []string{"hi there"})
			if err != nil {
				t.Fatal(err)
			}
			if got[0].Outcome != tc.want || got[0].Kind != tc.kind {
				t.Errorf("got %+v, want %v %q", got[0], tc.want, tc.kind)
			}
		})
	}
}

func TestSandboxEnvironment(t *testing.T) {
	p := newTestPool(t, Options{Workers: 1})
	cases := []struct{ name, expr string }{
		{"own PID namespace, forked from the zygote at PID 1", "os.getppid() == 1 and os.getpid() > 1"},
		{"environment holds only the thread pins and HOME", "all(k.endswith('_THREADS') or k in ('LC_CTYPE', 'HOME') for k in os.environ)"},
		{"unprivileged uid", unprivilegedExpr()},
		{"private /tmp as working directory", "os.getcwd() == '/tmp'"},
	}
	for _, tc := range cases {
		t.Run(strings.ReplaceAll(tc.name, " ", "_"), func(t *testing.T) {
			got, err := p.Evaluate(context.Background(), "import os\ndef evaluate(response):\n    return "+tc.expr+"\n", []string{""})
			if err != nil {
				t.Fatal(err)
			}
			if got[0].Outcome != Pass {
				t.Errorf("%s: got %+v", tc.expr, got[0])
			}
		})
	}
}

// unprivilegedExpr: started as root, workers run as nobody; otherwise they are root only
// inside a user namespace owned by the unprivileged caller.
func unprivilegedExpr() string {
	if os.Geteuid() == 0 {
		return "os.getuid() == 65534 and os.geteuid() == 65534"
	}
	return "os.getuid() == 0" // the caller's non-zero uid, seen from inside its user namespace
}

// The workers' namespaces are checked from the host side, where a function cannot lie.
func TestWorkersRunInTheirOwnNamespaces(t *testing.T) {
	p := newTestPool(t, Options{Workers: 2})
	me := os.Getpid()
	ents, err := os.ReadDir("/proc")
	if err != nil {
		t.Fatal(err)
	}
	workers := 0
	for _, e := range ents {
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "status"))
		if err != nil || !strings.Contains(string(b), fmt.Sprintf("\nPPid:\t%d\n", me)) {
			continue
		}
		workers++
		if !strings.Contains(string(b), fmt.Sprintf("\nUid:\t%d\t", p.Options().UID)) && os.Geteuid() == 0 {
			t.Errorf("worker %s does not run as uid %d", e.Name(), p.Options().UID)
		}
		for _, ns := range []string{"pid", "net", "ipc", "uts"} {
			mine, err1 := os.Readlink("/proc/self/ns/" + ns)
			theirs, err2 := os.Readlink(filepath.Join("/proc", e.Name(), "ns", ns))
			if err1 != nil || err2 != nil {
				t.Fatalf("read %s namespace: %v %v", ns, err1, err2)
			}
			if mine == theirs {
				t.Errorf("worker %s shares the %s namespace %s", e.Name(), ns, mine)
			}
		}
	}
	if workers != 2 {
		t.Errorf("found %d workers, want 2", workers)
	}
}

// Every call runs in a fresh fork of the worker's zygote, so state a function keeps in globals
// cannot make the same inputs score differently.
func TestScoreIsDeterministic(t *testing.T) {
	p := newTestPool(t, Options{Workers: 2})
	funcs := []string{
		"calls = 0\ndef evaluate(response):\n    global calls\n    calls += 1\n    return calls <= 2\n",
		"import random\ndef evaluate(response):\n    return len(response) > 3\n",
		"def evaluate(response):\n    return response.count('a') >= 2\n",
		"def evaluate(response):\n    return 1 / (len(response) - 4) > 0\n",
	}
	responses := []string{"banana", "abc", "aaaa", "xyzzy", "four"}
	var first []byte
	for run := range 4 {
		res, err := p.Score(context.Background(), funcs, responses)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := json.Marshal(res)
		if run == 0 {
			first = b
			if res.Scores[0].Ran != 4 || res.Scores[4].Errors != 1 {
				t.Errorf("unexpected scores %+v", res.Scores)
			}
			continue
		}
		if string(b) != string(first) {
			t.Fatalf("run %d differs:\n%s\n%s", run, b, first)
		}
	}
}

func TestScoreMatchesEvaluate(t *testing.T) {
	p := newTestPool(t, Options{Workers: 2})
	funcs := []string{
		"def evaluate(response):\n    return 'e' not in response.lower()\n",
		"def evaluate(response):\n    return len(response.split()) <= 3\n",
		"def evaluate(response):\n    return response.undefined()\n",
	}
	responses := []string{"My cat is big", "Every cloud", "Hi"}
	res, err := p.Score(context.Background(), funcs, responses)
	if err != nil {
		t.Fatal(err)
	}
	want := []ResponseScore{
		{Score: 0.5, Passed: 1, Ran: 2, Errors: 1},
		{Score: 0.5, Passed: 1, Ran: 2, Errors: 1},
		{Score: 1, Passed: 2, Ran: 2, Errors: 1},
	}
	if !reflect.DeepEqual(res.Scores, want) {
		t.Errorf("scores %+v, want %+v", res.Scores, want)
	}
	if res.Evals[2][0].Kind != KindException {
		t.Errorf("broken function gave %+v", res.Evals[2][0])
	}
}

func TestTimeoutCostsOnlyItsResponse(t *testing.T) {
	p := newTestPool(t, Options{Workers: 1, Deadline: 400 * time.Millisecond})
	fn := "def evaluate(response):\n    while response == 'hang':\n        pass\n    return response == 'yes'\n"
	responses := []string{"yes", "no", "hang", "yes", "hang", "no"}
	got, err := p.Evaluate(context.Background(), fn, responses)
	if err != nil {
		t.Fatal(err)
	}
	want := []Outcome{Pass, Fail, Timeout, Pass, Timeout, Fail}
	for i := range want {
		if got[i].Outcome != want[i] {
			t.Errorf("response %d (%q): %v, want %v", i, responses[i], got[i].Outcome, want[i])
		}
	}
	// Only the function's process is killed: the worker and its imports stay.
	if s := p.Stats(); s.Timeouts != 2 || s.WorkersRestarted != 0 || s.WorkersStarted != 1 {
		t.Errorf("stats %+v, want 2 timeouts and no restart", s)
	}
}

func TestAFunctionThatAlwaysHangsIsGivenUp(t *testing.T) {
	p := newTestPool(t, Options{Workers: 1, Deadline: 300 * time.Millisecond, MaxTimeouts: 2})
	responses := make([]string, 20)
	start := time.Now()
	got, err := p.Evaluate(context.Background(), "def evaluate(response):\n    while True:\n        pass\n", responses)
	if err != nil {
		t.Fatal(err)
	}
	for i, e := range got {
		if e.Outcome != Timeout {
			t.Errorf("response %d: %+v, want timeout", i, e)
		}
	}
	if elapsed := time.Since(start); elapsed > 3*time.Second {
		t.Errorf("took %v: each response paid the deadline", elapsed)
	}
	if s := p.Stats(); s.Timeouts != 20 || s.Calls != 2 || s.WorkersRestarted != 0 {
		t.Errorf("stats %+v, want 20 timeouts in 2 calls, no restart", s)
	}
}

func TestContextCancellationStopsACall(t *testing.T) {
	p := newTestPool(t, Options{Workers: 1, Deadline: 30 * time.Second})
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	_, err := p.Evaluate(ctx, "def evaluate(response):\n    while True:\n        pass\n", []string{"x"})
	if err == nil {
		t.Fatal("want an error from a cancelled call")
	}
	got, err := p.Evaluate(context.Background(), benign, []string{"ok"})
	if err != nil || got[0].Outcome != Pass {
		t.Fatalf("pool unusable after cancellation: %+v %v", got, err)
	}
}

// Workers start and score with the packages AutoIF's functions import installed: numpy and
// NLTK pull in OpenBLAS, whose thread pool must not meet the workers' process limit (it once
// hung every worker's start). `make deps` installs them.
func TestWorkersScoreWithNumericPackages(t *testing.T) {
	p := newTestPool(t, Options{Workers: 1, Deadline: 10 * time.Second})
	src := "import numpy as np\nimport nltk\nimport langdetect\n" +
		"def evaluate(response):\n    v = np.arange(4.0)\n    return float(v @ v) == 14.0 and len(nltk.tokenize.wordpunct_tokenize(response)) == 3\n"
	got, err := p.Evaluate(context.Background(), src, []string{"hi there !", "one"})
	if err != nil {
		t.Fatal(err)
	}
	if got[0].Kind == KindModuleUnavailable {
		t.Fatalf("%s: numpy, NLTK and langdetect must be installed for %s (make deps installs python3-numpy, python3-nltk, python3-langdetect)", got[0].Message, p.Python())
	}
	if got[0].Outcome != Pass || got[1].Outcome != Fail {
		t.Errorf("got %+v, want pass, fail", got)
	}
	// The zygote imported them for that call; a plain function after it still runs.
	got, err = p.Evaluate(context.Background(), "def evaluate(response):\n    return response == 'x'\n", []string{"x"})
	if err != nil || got[0].Outcome != Pass {
		t.Errorf("plain function after the numeric one: %+v, %v", got, err)
	}
}

// Workers exec an interpreter no one can read, so the kernel marks them not dumpable, and
// their forks too: no worker process can open another's /proc/PID/mem or fd entries, even
// under the same uid. (Asked with ctypes, so with the audit hook off.)
func TestWorkerProcessesAreNotDumpable(t *testing.T) {
	p := newTestPool(t, Options{Workers: 1, noAuditHook: true})
	got, err := p.Evaluate(context.Background(),
		"import ctypes\ndef evaluate(response):\n    return ctypes.CDLL(None).prctl(3, 0, 0, 0, 0) == 0\n", []string{"x"})
	if err != nil {
		t.Fatal(err)
	}
	if got[0].Outcome != Pass {
		t.Errorf("prctl(PR_GET_DUMPABLE) == 0 gave %+v", got[0])
	}
}

// A sandbox that cannot be built says why in one line, from the init that failed, not as a
// worker that never became ready.
func TestSandboxSetupFailureIsOneLine(t *testing.T) {
	opts := Options{Workers: 1}.withDefaults()
	in, err := resolveInterpreter(context.Background(), "", opts)
	if err != nil {
		t.Fatal(err)
	}
	broken := *in
	broken.mounts = append(append([]mountOp(nil), in.mounts...), mountOp{Path: "/nonexistent-autoif-path", Dir: true})
	start := time.Now()
	w, err := startWorker(&broken, opts, 1)
	if err == nil {
		w.close()
		t.Fatal("a worker started with a root that cannot be built")
	}
	msg := err.Error()
	if !strings.HasPrefix(msg, "reward sandbox: bind /nonexistent-autoif-path") || strings.Contains(msg, "\n") ||
		!strings.Contains(msg, "--unsafe-no-sandbox") {
		t.Errorf("error %q, want one line naming the failed bind and the way out", msg)
	}
	if elapsed := time.Since(start); elapsed > opts.StartTimeout/2 {
		t.Errorf("took %v: the failure should be seen when the init exits, not at the start timeout", elapsed)
	}
}

// Many functions on one large response set: once the set has had several calls in a row, each
// spare decodes it ahead of its call. Every function still sees exactly the set it is called
// on, in order, and sees another set when the next calls bring one, however large.
func TestLargeHeldSetsScoreTheSameWhenDecodedAhead(t *testing.T) {
	p := newTestPool(t, Options{Workers: 1})
	set := func(tag string) []string {
		out := make([]string, 90)
		for i := range out {
			out[i] = fmt.Sprintf("%s %03d %s", tag, i, strings.Repeat("ü", 300)) // ~600 bytes each
		}
		return out
	}
	for _, tag := range []string{"first", "second"} {
		responses := set(tag)
		// The first call on each set is the one a spare that decoded the previous set must
		// not serve: its function tells the sets apart.
		funcs := []string{fmt.Sprintf("def evaluate(response):\n    return response.startswith(%q)\n", tag+" ")}
		for k := 1; k <= 10; k++ {
			funcs = append(funcs, fmt.Sprintf("def evaluate(response):\n    return int(response.split()[1]) %% %d == 0\n", k))
		}
		for round := range 2 {
			res, err := p.Score(context.Background(), funcs, responses)
			if err != nil {
				t.Fatal(err)
			}
			for f := range funcs {
				for r := range responses {
					want := Fail
					if f == 0 || r%f == 0 {
						want = Pass
					}
					if got := res.Evals[f][r].Outcome; got != want {
						t.Fatalf("set %s, round %d: function %d on response %d: %v, want %v", tag, round, f, r, res.Evals[f][r], want)
					}
				}
			}
		}
	}
}
