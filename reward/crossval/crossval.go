// Package crossval is AutoIF's stage 3: it cross-validates the verification functions and
// test cases a model wrote for each instruction, keeping cases that some function gets right,
// functions that get most kept cases right, and instructions with enough of both.
//
// Differences from the reference script (QwenLM/AutoIF code/3_cross_validation.py) are
// deliberate and listed in reward/CROSSVAL.md.
package crossval

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"regexp"
	"sort"
	"strings"
	"sync"

	"github.com/autoif/autoif/reward"
)

// Options are the cross-validation thresholds.
type Options struct {
	// MinFunctions and MinCases drop instructions with fewer distinct functions or cases.
	// Defaults 3 and 10.
	MinFunctions, MinCases int
	// MinAccuracy keeps a function whose accuracy on the kept cases is at least this.
	// Default 0.8.
	MinAccuracy float64
	// ReferenceThresholds applies MinFunctions/MinCases only before cross-validation and
	// then keeps any instruction with one surviving function, as the reference script does.
	// By default they are applied to the survivors too.
	ReferenceThresholds bool
	// Parallel bounds how many functions are evaluated at once. Default 4.
	Parallel int
}

func (o Options) withDefaults() Options {
	if o.MinFunctions <= 0 {
		o.MinFunctions = 3
	}
	if o.MinCases <= 0 {
		o.MinCases = 10
	}
	if o.MinAccuracy <= 0 {
		o.MinAccuracy = 0.8
	}
	if o.Parallel <= 0 {
		o.Parallel = 4
	}
	return o
}

// Input is one instruction with the raw completions of stage 2 (eval_func_rft.jsonl).
type Input struct {
	Instruction string   `json:"instruction"`
	Completions []string `json:"gpt-answer"`
}

// Output is one surviving instruction (back_trans.jsonl without back-translation).
type Output struct {
	Instruction string `json:"instruction"`
	Functions   []Func `json:"eval_func"`
	Cases       []Case `json:"cases"`
}

// Func is a kept function and its accuracy on the kept cases; JSON [source, accuracy].
type Func struct {
	Source   string
	Accuracy float64
}

func (f Func) MarshalJSON() ([]byte, error) { return json.Marshal([]any{f.Source, f.Accuracy}) }

func (f *Func) UnmarshalJSON(b []byte) error {
	var raw []json.RawMessage
	if err := json.Unmarshal(b, &raw); err != nil || len(raw) != 2 {
		return fmt.Errorf("eval_func entry %s: want [source, accuracy]", truncate(string(b), 80))
	}
	if err := json.Unmarshal(raw[0], &f.Source); err != nil {
		return err
	}
	return json.Unmarshal(raw[1], &f.Accuracy)
}

// Case is a test case; JSON [input, expected].
type Case struct {
	Input    string
	Expected bool
}

func (c Case) MarshalJSON() ([]byte, error) { return json.Marshal([]any{c.Input, c.Expected}) }

func (c *Case) UnmarshalJSON(b []byte) error {
	var raw []json.RawMessage
	if err := json.Unmarshal(b, &raw); err != nil || len(raw) != 2 {
		return fmt.Errorf("case %s: want [input, expected]", truncate(string(b), 80))
	}
	if err := json.Unmarshal(raw[0], &c.Input); err != nil {
		return err
	}
	exp, ok := normaliseExpected(raw[1])
	if !ok {
		return fmt.Errorf("case expected output %s: want true or false", raw[1])
	}
	c.Expected = exp
	return nil
}

// Reason names why something was dropped.
type Reason string

const (
	NoJSONBlock        Reason = "completion: no ```json block"
	BadJSON            Reason = "completion: invalid JSON"
	NoFunc             Reason = "completion: no func string"
	NotCompiling       Reason = "function: does not compile or define evaluate"
	DuplicateFunc      Reason = "function: duplicate"
	LowAccuracy        Reason = "function: accuracy below threshold"
	MalformedCase      Reason = "case: missing input or output"
	InputNotString     Reason = "case: input is not a string"
	BadExpected        Reason = "case: expected output is not true/false"
	DuplicateCase      Reason = "case: duplicate"
	CaseFromBadFunc    Reason = "case: came with a function that does not compile"
	Unconfirmed        Reason = "case: no function gets it right"
	TooFewFunctions    Reason = "instruction: too few distinct functions"
	TooFewCases        Reason = "instruction: too few distinct cases"
	TooFewFunctionsCV  Reason = "instruction: too few functions survive"
	TooFewCasesCV      Reason = "instruction: too few cases survive"
	NoFunctionSurvives Reason = "instruction: no function survives"
)

// InstructionReport says what happened to one instruction.
type InstructionReport struct {
	Instruction string         `json:"instruction"`
	Kept        bool           `json:"kept"`
	Reason      Reason         `json:"reason,omitempty"`
	Functions   int            `json:"functions"` // distinct compiling functions before CV
	Cases       int            `json:"cases"`     // distinct valid cases before CV
	KeptFuncs   int            `json:"kept_functions"`
	KeptCases   int            `json:"kept_cases"`
	Normalised  int            `json:"normalised_expected"` // "true"/"True" strings turned to bools
	Dropped     map[Reason]int `json:"dropped,omitempty"`
}

// Report sums up a run.
type Report struct {
	Instructions int                 `json:"instructions"`
	Kept         int                 `json:"kept"`
	Dropped      map[Reason]int      `json:"dropped"`
	PerInstr     []InstructionReport `json:"per_instruction"`
}

var jsonBlock = regexp.MustCompile("(?s)```json(.*?)```")

type candidate struct {
	func_  string
	cases  []rawCase
	reason Reason // non-empty: the completion is unusable
}

type rawCase struct {
	Input  json.RawMessage `json:"input"`
	Output json.RawMessage `json:"output"`
}

// parseCompletion extracts the function and cases of one raw completion like the reference:
// the first ```json block, its "func" (stripped) and "cases".
func parseCompletion(text string) candidate {
	m := jsonBlock.FindStringSubmatch(text)
	if m == nil {
		return candidate{reason: NoJSONBlock}
	}
	var body struct {
		Func  json.RawMessage   `json:"func"`
		Cases []json.RawMessage `json:"cases"`
	}
	if err := json.Unmarshal([]byte(strings.TrimSpace(m[1])), &body); err != nil {
		return candidate{reason: BadJSON}
	}
	var fn string
	if err := json.Unmarshal(body.Func, &fn); err != nil || strings.TrimSpace(fn) == "" {
		return candidate{reason: NoFunc}
	}
	c := candidate{func_: strings.TrimSpace(fn)}
	for _, raw := range body.Cases {
		var rc rawCase
		if json.Unmarshal(raw, &rc) != nil {
			rc = rawCase{}
		}
		c.cases = append(c.cases, rc)
	}
	return c
}

// normaliseExpected reads an expected output: JSON true/false, the strings "true"/"True"/
// "false"/"False" (any case, trimmed), or 0/1.
func normaliseExpected(raw json.RawMessage) (bool, bool) {
	if t := strings.TrimSpace(string(raw)); t == "" || t == "null" {
		return false, false // null would decode as "no change" below
	}
	var b bool
	if json.Unmarshal(raw, &b) == nil {
		return b, true
	}
	var s string
	if json.Unmarshal(raw, &s) == nil {
		switch strings.ToLower(strings.TrimSpace(s)) {
		case "true":
			return true, true
		case "false":
			return false, true
		}
		return false, false
	}
	var n float64
	if json.Unmarshal(raw, &n) == nil && (n == 0 || n == 1) {
		return n == 1, true
	}
	return false, false
}

// Checker tells whether a function's source compiles and defines evaluate.
type Checker interface {
	Check(ctx context.Context, fn string) (*reward.Eval, error)
}

// Sandbox is what cross-validation needs from the reward pool.
type Sandbox interface {
	reward.Evaluator
	Checker
}

// Run cross-validates every input. It returns the survivors in input order and a report.
func Run(ctx context.Context, sb Sandbox, inputs []Input, opts Options) ([]Output, *Report, error) {
	opts = opts.withDefaults()
	rep := &Report{Instructions: len(inputs), Dropped: map[Reason]int{}}
	var outs []Output
	for _, in := range inputs {
		out, ir, err := runOne(ctx, sb, in, opts)
		if err != nil {
			return nil, nil, fmt.Errorf("cross-validate %q: %w", truncate(in.Instruction, 60), err)
		}
		for r, n := range ir.Dropped {
			rep.Dropped[r] += n
		}
		if ir.Reason != "" {
			rep.Dropped[ir.Reason]++
		}
		rep.PerInstr = append(rep.PerInstr, *ir)
		if out != nil {
			rep.Kept++
			outs = append(outs, *out)
		}
	}
	return outs, rep, nil
}

func runOne(ctx context.Context, sb Sandbox, in Input, opts Options) (*Output, *InstructionReport, error) {
	ir := &InstructionReport{Instruction: in.Instruction, Dropped: map[Reason]int{}}
	var funcs []string
	seenFunc := map[string]bool{}
	var cases []Case
	seenCase := map[Case]bool{}
	checked := map[string]bool{} // source -> compiles
	for _, text := range in.Completions {
		c := parseCompletion(text)
		if c.reason != "" {
			ir.Dropped[c.reason]++
			continue
		}
		ok, seen := checked[c.func_]
		if !seen {
			e, err := sb.Check(ctx, c.func_)
			if err != nil {
				return nil, nil, err
			}
			ok = e == nil
			checked[c.func_] = ok
		}
		if !ok {
			// The reference skips the whole completion when its function fails to exec.
			ir.Dropped[NotCompiling]++
			ir.Dropped[CaseFromBadFunc] += len(c.cases)
			continue
		}
		if seenFunc[c.func_] {
			ir.Dropped[DuplicateFunc]++
		} else {
			seenFunc[c.func_] = true
			funcs = append(funcs, c.func_)
		}
		for _, rc := range c.cases {
			if len(rc.Input) == 0 || len(rc.Output) == 0 {
				ir.Dropped[MalformedCase]++
				continue
			}
			var input string
			if json.Unmarshal(rc.Input, &input) != nil {
				ir.Dropped[InputNotString]++
				continue
			}
			exp, ok := normaliseExpected(rc.Output)
			if !ok {
				ir.Dropped[BadExpected]++
				continue
			}
			var isBool bool
			if json.Unmarshal(rc.Output, &isBool) != nil {
				ir.Normalised++
			}
			cs := Case{Input: input, Expected: exp}
			if seenCase[cs] {
				ir.Dropped[DuplicateCase]++
				continue
			}
			seenCase[cs] = true
			cases = append(cases, cs)
		}
	}
	ir.Functions, ir.Cases = len(funcs), len(cases)
	if len(funcs) < opts.MinFunctions {
		ir.Reason = TooFewFunctions
		return nil, ir, nil
	}
	if len(cases) < opts.MinCases {
		ir.Reason = TooFewCases
		return nil, ir, nil
	}

	inputs := make([]string, len(cases))
	for i, c := range cases {
		inputs[i] = c.Input
	}
	evals, err := evaluateAll(ctx, sb, funcs, inputs, opts.Parallel)
	if err != nil {
		return nil, nil, err
	}
	right := func(e reward.Eval, c Case) bool {
		return e.Ran() && (e.Outcome == reward.Pass) == c.Expected
	}
	var keptIdx []int
	for j, c := range cases {
		for f := range funcs {
			if right(evals[f][j], c) {
				keptIdx = append(keptIdx, j)
				break
			}
		}
	}
	ir.Dropped[Unconfirmed] += len(cases) - len(keptIdx)
	out := &Output{Instruction: in.Instruction}
	for _, j := range keptIdx {
		out.Cases = append(out.Cases, cases[j])
	}
	for f, src := range funcs {
		acc := 0.0
		if len(keptIdx) > 0 {
			n := 0
			for _, j := range keptIdx {
				if right(evals[f][j], cases[j]) {
					n++
				}
			}
			acc = float64(n) / float64(len(keptIdx))
		}
		if acc >= opts.MinAccuracy {
			out.Functions = append(out.Functions, Func{Source: src, Accuracy: acc})
		} else {
			ir.Dropped[LowAccuracy]++
		}
	}
	ir.KeptFuncs, ir.KeptCases = len(out.Functions), len(out.Cases)
	switch {
	case len(out.Functions) == 0:
		ir.Reason = NoFunctionSurvives
	case !opts.ReferenceThresholds && len(out.Functions) < opts.MinFunctions:
		ir.Reason = TooFewFunctionsCV
	case !opts.ReferenceThresholds && len(out.Cases) < opts.MinCases:
		ir.Reason = TooFewCasesCV
	}
	if ir.Reason != "" {
		return nil, ir, nil
	}
	ir.Kept = true
	return out, ir, nil
}

func evaluateAll(ctx context.Context, ev reward.Evaluator, funcs, inputs []string, parallel int) ([][]reward.Eval, error) {
	evals := make([][]reward.Eval, len(funcs))
	errs := make([]error, len(funcs))
	sem := make(chan struct{}, parallel)
	var wg sync.WaitGroup
	for f := range funcs {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			evals[f], errs[f] = ev.Evaluate(ctx, funcs[f], inputs)
		}()
	}
	wg.Wait()
	return evals, errors.Join(errs...)
}

// ReadInputs reads eval_func_rft.jsonl rows.
func ReadInputs(r io.Reader) ([]Input, error) {
	var ins []Input
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 1<<20), 256<<20)
	line := 0
	for sc.Scan() {
		line++
		if strings.TrimSpace(sc.Text()) == "" {
			continue
		}
		var in Input
		if err := json.Unmarshal(sc.Bytes(), &in); err != nil {
			return nil, fmt.Errorf("line %d: %w", line, err)
		}
		ins = append(ins, in)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("line %d: %w", line+1, err)
	}
	return ins, nil
}

// ReadOutputs reads cross-validated rows (this package's output, or back_trans.jsonl).
func ReadOutputs(r io.Reader) ([]Output, error) {
	var outs []Output
	dec := json.NewDecoder(r)
	for {
		var o Output
		if err := dec.Decode(&o); err == io.EOF {
			return outs, nil
		} else if err != nil {
			return nil, fmt.Errorf("row %d: %w", len(outs)+1, err)
		}
		outs = append(outs, o)
	}
}

// WriteOutputs writes one JSON object per line.
func WriteOutputs(w io.Writer, outs []Output) error {
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	for _, o := range outs {
		if err := enc.Encode(o); err != nil {
			return err
		}
	}
	return nil
}

// SortedReasons lists a reason count map in a stable order for printing.
func SortedReasons(m map[Reason]int) []Reason {
	rs := make([]Reason, 0, len(m))
	for r, n := range m {
		if n > 0 {
			rs = append(rs, r)
		}
	}
	sort.Slice(rs, func(i, j int) bool { return rs[i] < rs[j] })
	return rs
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}
