package tinyif

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/autoif/autoif/reward"
	"github.com/autoif/autoif/reward/crossval"
)

func newPool(t *testing.T) *reward.Pool {
	t.Helper()
	if _, err := exec.LookPath("python3"); err != nil {
		if _, err2 := os.Stat("/usr/bin/python3"); err2 != nil {
			t.Fatalf("python3 is required for the tinyIF tests: %v", err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	p, err := reward.NewPool(ctx, reward.Options{Workers: 2, Deadline: 5 * time.Second})
	if err != nil {
		t.Fatalf("reward pool: %v", err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}

func mustLoad(t *testing.T) *Set {
	t.Helper()
	s, err := Load()
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestLoadHasTwentyInstructionsAndAFewHundredQueries(t *testing.T) {
	s := mustLoad(t)
	if len(s.Instructions) != 20 {
		t.Errorf("%d instructions, want 20", len(s.Instructions))
	}
	if n := len(s.Queries); n < 250 || n > 400 {
		t.Errorf("%d queries, want a few hundred", n)
	}
	for _, in := range s.Instructions {
		// Every instruction is a sentence; one cut short (YAML reads " #" as a comment) is not.
		if !strings.HasSuffix(in.Text, ".") {
			t.Errorf("%s: instruction %q does not end a sentence", in.ID, in.Text)
		}
		if len(in.Functions) < MinFunctions || len(in.Cases) < MinCases {
			t.Errorf("%s: %d functions, %d cases", in.ID, len(in.Functions), len(in.Cases))
		}
		pos := 0
		for _, c := range in.Cases {
			if c.Expected {
				pos++
			}
		}
		// Both outcomes must be represented, or a function that always answers one way passes.
		if pos < 3 || len(in.Cases)-pos < 3 {
			t.Errorf("%s: %d of %d cases expect true; want at least 3 of each", in.ID, pos, len(in.Cases))
		}
	}
}

// The split is part of the testbed's definition: these numbers change only when the data does,
// and then every result on tinyIF changes meaning, so the change must be deliberate.
func TestSplitIsFixedDisjointAndAboutOneFifthHeldOut(t *testing.T) {
	s := mustLoad(t)
	train, held := s.Units(Train), s.Units(HeldOut)
	total := len(s.Instructions) * len(s.Queries)
	if len(train)+len(held) != total {
		t.Fatalf("train %d + held-out %d != %d units", len(train), len(held), total)
	}
	if len(train) != wantTrain || len(held) != wantHeldOut {
		t.Errorf("split moved: train %d, held-out %d; pinned %d, %d", len(train), len(held), wantTrain, wantHeldOut)
	}
	if f := float64(len(held)) / float64(total); f < 0.17 || f > 0.23 {
		t.Errorf("held-out fraction %.3f, want ~0.2", f)
	}
	ids := map[string]bool{}
	perInstr := map[string][2]int{}
	for i, u := range append(train, held...) {
		if ids[u.PromptID] {
			t.Fatalf("unit %s in both splits or twice", u.PromptID)
		}
		ids[u.PromptID] = true
		if u.Prompt == "" || len(u.Functions) < MinFunctions || !strings.Contains(u.Prompt, u.Instruction) || !strings.HasPrefix(u.Prompt, u.Query) {
			t.Errorf("malformed unit %+v", u)
		}
		c := perInstr[u.InstructionID]
		c[min(i/len(train), 1)]++
		perInstr[u.InstructionID] = c
	}
	for id, c := range perInstr {
		if c[0] == 0 || c[1] == 0 {
			t.Errorf("instruction %s: %d train, %d held-out units; want both", id, c[0], c[1])
		}
	}
}

const wantTrain, wantHeldOut = 4745, 1195

// completion writes an instruction's function and cases the way a stage-2 model does.
func completion(fn string, cases []Case) string {
	type jc struct {
		Input  string `json:"input"`
		Output bool   `json:"output"`
	}
	body := struct {
		Func  string `json:"func"`
		Cases []jc   `json:"cases"`
	}{Func: fn}
	for _, c := range cases {
		body.Cases = append(body.Cases, jc{c.Response, c.Expected})
	}
	b, _ := json.Marshal(body)
	return "```json\n" + string(b) + "\n```"
}

// The testbed's functions and cases go through the same cross-validation as synthesised ones,
// with its default thresholds, in the real sandbox: everything must survive.
func TestEveryInstructionPassesCrossValidation(t *testing.T) {
	s := mustLoad(t)
	pool := newPool(t)
	var inputs []crossval.Input
	for _, in := range s.Instructions {
		ci := crossval.Input{Instruction: in.ID}
		for f, fn := range in.Functions {
			var share []Case
			for c := f; c < len(in.Cases); c += len(in.Functions) {
				share = append(share, in.Cases[c])
			}
			ci.Completions = append(ci.Completions, completion(fn, share))
		}
		inputs = append(inputs, ci)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	outs, rep, err := crossval.Run(ctx, pool, inputs, crossval.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Kept != len(s.Instructions) {
		for _, ir := range rep.PerInstr {
			if !ir.Kept {
				t.Errorf("%s dropped: %s %v", ir.Instruction, ir.Reason, ir.Dropped)
			}
		}
		t.Fatalf("%d of %d instructions kept", rep.Kept, len(s.Instructions))
	}
	for i, out := range outs {
		in := s.Instruction(out.Instruction)
		if len(out.Functions) != len(in.Functions) || len(out.Cases) != len(in.Cases) {
			t.Errorf("%s: kept %d/%d functions, %d/%d cases: %v", in.ID, len(out.Functions), len(in.Functions),
				len(out.Cases), len(in.Cases), rep.PerInstr[i].Dropped)
		}
		for _, f := range out.Functions {
			if f.Accuracy < 0.8 {
				t.Errorf("%s: function accuracy %.2f < 0.8:\n%s", in.ID, f.Accuracy, f.Source)
			}
		}
	}
}

// Every function must get every case right: crossval tolerates 20% error, the testbed is
// meant to be exact, and this names the function and case when one is not.
func TestEveryFunctionGetsEveryCaseRight(t *testing.T) {
	s := mustLoad(t)
	pool := newPool(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	for _, in := range s.Instructions {
		responses := make([]string, len(in.Cases))
		for i, c := range in.Cases {
			responses[i] = c.Response
		}
		for f, fn := range in.Functions {
			evals, err := pool.Evaluate(ctx, fn, responses)
			if err != nil {
				t.Fatal(err)
			}
			for i, e := range evals {
				if !e.Ran() || (e.Outcome == reward.Pass) != in.Cases[i].Expected {
					t.Errorf("%s function %d on %q: %s %s %s, want %v", in.ID, f, in.Cases[i].Response, e.Outcome, e.Kind, e.Message, in.Cases[i].Expected)
				}
			}
		}
	}
}

// The SFT responses are what make a warm-started policy follow instructions in part: the
// compliant ones must score 1 and the others 0, for every query, or the warm start teaches
// noise and the pairs the worker builds from it are mislabelled.
func TestComplyScoresOneAndViolateScoresZeroOnEveryQuery(t *testing.T) {
	s := mustLoad(t)
	pool := newPool(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	for _, in := range s.Instructions {
		var responses []string
		for i := range s.Queries {
			c, err := Comply(in.ID, &s.Queries[i])
			if err != nil {
				t.Fatal(err)
			}
			v, _ := Violate(in.ID, &s.Queries[i])
			responses = append(responses, c, v)
		}
		res, err := pool.Score(ctx, in.Functions, responses)
		if err != nil {
			t.Fatal(err)
		}
		bad := 0
		for r, sc := range res.Scores {
			want := 1.0
			if r%2 == 1 {
				want = 0
			}
			if sc.Score != want && bad < 3 {
				bad++
				t.Errorf("%s: %q scored %.2f (errors %d), want %.0f", in.ID, responses[r], sc.Score, sc.Errors, want)
			}
		}
	}
}

func TestSFTIsDeterministicAndCompliesAboutHalfTheTime(t *testing.T) {
	s := mustLoad(t)
	a := s.SFT(Train, SFTOptions{Seed: 1})
	b := s.SFT(Train, SFTOptions{Seed: 1})
	c := s.SFT(Train, SFTOptions{Seed: 2})
	if len(a) != wantTrain || len(b) != len(a) || len(c) != len(a) {
		t.Fatalf("examples: %d, %d, %d; want %d each", len(a), len(b), len(c), wantTrain)
	}
	same, comply := 0, 0
	perInstr := map[string][2]int{}
	for i := range a {
		if a[i] != b[i] {
			t.Fatalf("same seed, example %d differs: %+v vs %+v", i, a[i], b[i])
		}
		if a[i].Complies == c[i].Complies {
			same++
		}
		if a[i].Complies {
			comply++
		}
		n := perInstr[a[i].InstructionID]
		n[0]++
		if a[i].Complies {
			n[1]++
		}
		perInstr[a[i].InstructionID] = n
	}
	if f := float64(comply) / float64(len(a)); f < 0.45 || f > 0.55 {
		t.Errorf("compliance %.3f, want ~0.5", f)
	}
	if same == len(a) {
		t.Error("seeds 1 and 2 chose the same examples")
	}
	for id, n := range perInstr {
		if f := float64(n[1]) / float64(n[0]); f < 0.3 || f > 0.7 {
			t.Errorf("%s: compliance %.2f, want near 0.5", id, f)
		}
	}
	all := s.SFT(HeldOut, SFTOptions{Seed: 1, Comply: 1, PerPrompt: 2})
	if len(all) != 2*wantHeldOut {
		t.Fatalf("%d held-out examples, want %d", len(all), 2*wantHeldOut)
	}
	for _, e := range all {
		if !e.Complies {
			t.Fatalf("Comply 1 gave a non-compliant example %+v", e)
		}
	}
	for _, e := range s.SFT(HeldOut, SFTOptions{Comply: -1}) {
		if e.Complies {
			t.Fatalf("Comply -1 gave a compliant example %+v", e)
		}
	}
}

func TestNumberWordsSpellWithoutDigits(t *testing.T) {
	for in, want := range map[string]string{
		"The answer is 5.":           "The answer is five.",
		"The number after 29 is 30.": "The number after twenty-nine is thirty.",
		"0 and 18 and 100 and 342":   "zero and eighteen and one hundred and three hundred forty-two",
		"no digits":                  "no digits",
	} {
		if got := spellNumbers(in); got != want {
			t.Errorf("spellNumbers(%q) = %q, want %q", in, got, want)
		}
	}
	if got := spellNumbers("12345"); strings.ContainsAny(got, "0123456789") {
		t.Errorf("spellNumbers(12345) = %q keeps digits", got)
	}
}

func ExampleSet_Units() {
	s, _ := Load()
	u := s.Units(Train)[0]
	fmt.Println(u.PromptID)
	fmt.Println(u.Prompt)
	// Output:
	// tinyif:lowercase:add-1-1
	// What is 1+1? Answer in lowercase letters only.
}
