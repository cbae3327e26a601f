package ifeval

import (
	"bufio"
	"bytes"
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/autoif/autoif/atomicfile"
)

// officialInputData is google-research's instruction_following_eval/data/input_data.jsonl
// (541 prompts; testdata/PROVENANCE).
//
//go:embed testdata/input_data.jsonl
var officialInputData []byte

// OfficialInputs returns the bundled official IFEval prompts.
func OfficialInputs() []Input {
	in, err := ReadInputs(bytes.NewReader(officialInputData), "input_data.jsonl")
	if err != nil {
		panic("ifeval: bundled input_data.jsonl: " + err.Error())
	}
	return in
}

// eachLine calls fn with every non-blank line and its 1-based number.
func eachLine(r io.Reader, fn func(n int, line []byte) error) error {
	br := bufio.NewReader(r)
	for n := 1; ; n++ {
		line, err := br.ReadBytes('\n')
		if len(bytes.TrimSpace(line)) > 0 {
			if ferr := fn(n, line); ferr != nil {
				return ferr
			}
		}
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
	}
}

// ReadInputs reads input_data.jsonl rows, or open-instruct's RLVR rows (rlvr.go); name labels
// errors (name:line).
func ReadInputs(r io.Reader, name string) ([]Input, error) {
	var out []Input
	err := eachLine(r, func(n int, line []byte) error {
		var in Input
		if err := json.Unmarshal(line, &in); err != nil {
			return fmt.Errorf("%s:%d: %v", name, n, err)
		}
		var rlvr rlvrRow
		if err := json.Unmarshal(line, &rlvr); err == nil && (rlvr.Messages != nil || rlvr.GroundTruth != nil) {
			var err error
			if in, err = fromRLVR(rlvr); err != nil {
				return fmt.Errorf("%s:%d: %v", name, n, err)
			}
			in.Key = n // RLVR rows have no key: errors and reports name the line
		}
		if in.Prompt == "" || len(in.InstructionIDList) == 0 {
			return fmt.Errorf("%s:%d: want a row with prompt, instruction_id_list and kwargs (IFEval), or messages and ground_truth (open-instruct RLVR)", name, n)
		}
		if len(in.Kwargs) != len(in.InstructionIDList) {
			return fmt.Errorf("%s:%d: %d instruction ids but %d kwargs", name, n, len(in.InstructionIDList), len(in.Kwargs))
		}
		for i, id := range in.InstructionIDList {
			if _, err := Build(id, in.Kwargs[i], nil); err != nil {
				return fmt.Errorf("%s:%d: %v", name, n, err)
			}
		}
		out = append(out, in)
		return nil
	})
	if err == nil && len(out) == 0 {
		err = fmt.Errorf("%s: no rows", name)
	}
	return out, err
}

// ReadInputFile reads an input_data.jsonl file.
func ReadInputFile(path string) ([]Input, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return ReadInputs(f, path)
}

// ReadResponses reads {"prompt", "response"} lines into a prompt → response map; as in the
// official reader, a later line for the same prompt wins.
func ReadResponses(r io.Reader, name string) (map[string]string, error) {
	out := map[string]string{}
	err := eachLine(r, func(n int, line []byte) error {
		var row struct {
			Prompt   *string `json:"prompt"`
			Response *string `json:"response"`
		}
		if err := json.Unmarshal(line, &row); err != nil {
			return fmt.Errorf("%s:%d: %v", name, n, err)
		}
		if row.Prompt == nil || row.Response == nil {
			return fmt.Errorf("%s:%d: want a JSON object with string fields \"prompt\" and \"response\"", name, n)
		}
		out[*row.Prompt] = *row.Response
		return nil
	})
	return out, err
}

// ReadResponseFile reads a responses file.
func ReadResponseFile(path string) (map[string]string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return ReadResponses(f, path)
}

// Result holds both evaluations of one set of responses.
type Result struct {
	Strict, Loose []Output
}

// Headline is the four figures IFEval is reported with.
type Headline struct {
	PromptStrict      float64 `json:"prompt_strict"`
	InstructionStrict float64 `json:"instruction_strict"`
	PromptLoose       float64 `json:"prompt_loose"`
	InstructionLoose  float64 `json:"instruction_loose"`
}

// Headline computes the four figures.
func (r Result) Headline() Headline {
	s, l := NewReport(r.Strict), NewReport(r.Loose)
	return Headline{s.Prompt.Value(), s.Instruction.Value(), l.Prompt.Value(), l.Instruction.Value()}
}

// EvaluateAll checks every input's response, strict and loose. Every input needs a
// response: a missing one is an error naming the first few missing prompts' keys.
func EvaluateAll(inputs []Input, responses map[string]string) (Result, error) {
	var missing []int
	for _, in := range inputs {
		if _, ok := responses[in.Prompt]; !ok {
			missing = append(missing, in.Key)
		}
	}
	if len(missing) > 0 {
		keys := fmt.Sprint(missing[:min(len(missing), 5)])
		if len(missing) > 5 {
			keys = keys[:len(keys)-1] + " ...]"
		}
		return Result{}, fmt.Errorf("no response for %d of %d prompts (keys %s)", len(missing), len(inputs), keys)
	}
	var res Result
	for _, in := range inputs {
		p, err := Prepare(in)
		if err != nil {
			return Result{}, err
		}
		resp := responses[in.Prompt]
		res.Strict = append(res.Strict, p.Evaluate(resp, Strict))
		res.Loose = append(res.Loose, p.Evaluate(resp, Loose))
	}
	return res, nil
}

// Official output file names in --output-dir.
const (
	StrictFile = "eval_results_strict.jsonl"
	LooseFile  = "eval_results_loose.jsonl"
)

// WriteResults writes eval_results_strict.jsonl and eval_results_loose.jsonl into dir (when
// dir is not empty), each atomically, and prints each one's report to w, as
// evaluation_main.py does.
func WriteResults(res Result, dir string, w io.Writer) error {
	files := []struct {
		name    string
		outputs []Output
	}{{StrictFile, res.Strict}, {LooseFile, res.Loose}}
	if dir != "" {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return err
		}
		for _, f := range files {
			var b []byte
			for _, o := range f.outputs {
				b = o.AppendJSONL(b)
			}
			if err := atomicfile.WriteFile(filepath.Join(dir, f.name), b, 0o644); err != nil {
				return err
			}
		}
	}
	for _, f := range files {
		label := f.name
		if dir != "" {
			label = filepath.Join(dir, f.name)
		}
		if _, err := fmt.Fprintf(w, "%s\n%s Accuracy Scores:\n", strings.Repeat("=", 64), label); err != nil {
			return err
		}
		if err := NewReport(f.outputs).Write(w); err != nil {
			return err
		}
	}
	return nil
}

// WriteResponses writes {"prompt", "response"} lines, as the official
// input_response_data_*.jsonl files are written, atomically.
func WriteResponses(path string, prompts, responses []string) error {
	if len(prompts) != len(responses) {
		return fmt.Errorf("%d prompts but %d responses", len(prompts), len(responses))
	}
	var b []byte
	for i := range prompts {
		b = append(b, `{"prompt": `...)
		b = appendPyString(b, prompts[i])
		b = append(b, `, "response": `...)
		b = appendPyString(b, responses[i])
		b = append(b, "}\n"...)
	}
	return atomicfile.WriteFile(path, b, 0o644)
}
