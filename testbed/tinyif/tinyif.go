// Package tinyif is a small, bundled, deterministic instruction-following testbed: 20
// instruction types a tiny byte-level model can learn, each with AutoIF-style verification
// functions and test cases, crossed with ~300 short queries into prompt units, with a fixed
// train/held-out split and a generator of partly compliant SFT warm-start examples.
//
// Everything is embedded in the binary and identical on every machine, so runs on tinyIF are
// comparable across machines and commits. The format is documented in README.md.
package tinyif

import (
	"bufio"
	"bytes"
	_ "embed"
	"fmt"
	"hash/fnv"
	"strings"

	"gopkg.in/yaml.v3"

	"github.com/autoif/autoif/proto"
)

//go:embed data/instructions.yaml
var instructionsYAML []byte

//go:embed data/queries.tsv
var queriesTSV []byte

// Split names a part of the prompt units.
type Split string

const (
	Train   Split = "train"
	HeldOut Split = "heldout"
)

// ParseSplit reads a split name.
func ParseSplit(s string) (Split, error) {
	switch Split(s) {
	case Train, HeldOut:
		return Split(s), nil
	}
	return "", fmt.Errorf("tinyif split %q: want train or heldout", s)
}

// heldOutBuckets: a unit is held out when its id hashes to bucket 0 of 5, i.e. ~20%.
const heldOutBuckets = 5

// Case is a test case of an instruction's functions: a response and whether it follows the
// instruction.
type Case struct {
	Response string
	Expected bool
}

// UnmarshalYAML reads a case written [response, expected].
func (c *Case) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.SequenceNode || len(n.Content) != 2 {
		return fmt.Errorf("line %d: a case is [response, expected]", n.Line)
	}
	if err := n.Content[0].Decode(&c.Response); err != nil {
		return fmt.Errorf("line %d: case response: %w", n.Line, err)
	}
	if err := n.Content[1].Decode(&c.Expected); err != nil {
		return fmt.Errorf("line %d: case expected: %w", n.Line, err)
	}
	return nil
}

// Instruction is one instruction type with its verification functions and test cases.
type Instruction struct {
	ID        string   `yaml:"id"`
	Text      string   `yaml:"instruction"`
	Functions []string `yaml:"functions"`
	Cases     []Case   `yaml:"cases"`
}

// Query is a short question or task with a reference answer that follows no instruction.
type Query struct {
	ID     string
	Text   string
	Answer string
}

// Set is the whole testbed.
type Set struct {
	Instructions []Instruction
	Queries      []Query
}

// Minimums every instruction meets, so each survives AutoIF cross-validation's defaults.
const (
	MinFunctions = 3
	MinCases     = 10
)

// Load parses the embedded testbed and checks its invariants.
func Load() (*Set, error) {
	var s Set
	if err := yaml.Unmarshal(instructionsYAML, &s.Instructions); err != nil {
		return nil, fmt.Errorf("tinyif instructions: %w", err)
	}
	ids := map[string]bool{}
	for i := range s.Instructions {
		in := &s.Instructions[i]
		if in.ID == "" || in.Text == "" {
			return nil, fmt.Errorf("tinyif instruction %d: id and instruction are required", i)
		}
		if ids[in.ID] {
			return nil, fmt.Errorf("tinyif instruction %s: duplicate id", in.ID)
		}
		ids[in.ID] = true
		if _, ok := transforms[in.ID]; !ok {
			return nil, fmt.Errorf("tinyif instruction %s: no response transform", in.ID)
		}
		srcs := map[string]bool{}
		for j, f := range in.Functions {
			f = strings.TrimSpace(f)
			if !strings.Contains(f, "def evaluate(response)") {
				return nil, fmt.Errorf("tinyif instruction %s: function %d defines no evaluate(response)", in.ID, j)
			}
			if srcs[f] {
				return nil, fmt.Errorf("tinyif instruction %s: function %d repeats another", in.ID, j)
			}
			srcs[f] = true
			in.Functions[j] = f + "\n"
		}
		cases := map[string]bool{}
		for _, c := range in.Cases {
			if cases[c.Response] {
				return nil, fmt.Errorf("tinyif instruction %s: case %q repeats", in.ID, c.Response)
			}
			cases[c.Response] = true
		}
		if len(srcs) < MinFunctions || len(cases) < MinCases {
			return nil, fmt.Errorf("tinyif instruction %s: %d functions and %d cases, want >= %d and >= %d",
				in.ID, len(srcs), len(cases), MinFunctions, MinCases)
		}
	}
	for id := range transforms {
		if !ids[id] {
			return nil, fmt.Errorf("tinyif: transform %s has no instruction", id)
		}
	}
	sc := bufio.NewScanner(bytes.NewReader(queriesTSV))
	qids := map[string]bool{}
	for line := 1; sc.Scan(); line++ {
		text := sc.Text()
		if text == "" || strings.HasPrefix(text, "#") {
			continue
		}
		f := strings.Split(text, "\t")
		if len(f) != 3 || f[0] == "" || f[1] == "" || f[2] == "" {
			return nil, fmt.Errorf("tinyif queries line %d: want id, query and answer separated by tabs", line)
		}
		if qids[f[0]] {
			return nil, fmt.Errorf("tinyif queries line %d: duplicate id %s", line, f[0])
		}
		qids[f[0]] = true
		s.Queries = append(s.Queries, Query{ID: f[0], Text: f[1], Answer: f[2]})
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("tinyif queries: %w", err)
	}
	return &s, nil
}

// PromptID names the unit of an instruction and a query.
func PromptID(instructionID, queryID string) string {
	return "tinyif:" + instructionID + ":" + queryID
}

// SplitOf is the fixed split of a unit: a hash of its id, so adding queries or instructions
// never moves an existing unit between splits.
func SplitOf(promptID string) Split {
	h := fnv.New64a()
	h.Write([]byte(promptID))
	if h.Sum64()%heldOutBuckets == 0 {
		return HeldOut
	}
	return Train
}

// Prompt is the text the policy sees for an instruction and a query.
func Prompt(in *Instruction, q *Query) string { return q.Text + " " + in.Text }

// Instruction returns the instruction with the given id, or nil.
func (s *Set) Instruction(id string) *Instruction {
	for i := range s.Instructions {
		if s.Instructions[i].ID == id {
			return &s.Instructions[i]
		}
	}
	return nil
}

// Units returns the prompt units of a split, instruction-major in file order. CreatedAt is
// left zero: the testbed is fixed; whoever enqueues the units stamps them.
func (s *Set) Units(split Split) []proto.PromptUnit {
	var out []proto.PromptUnit
	for i := range s.Instructions {
		in := &s.Instructions[i]
		for j := range s.Queries {
			q := &s.Queries[j]
			id := PromptID(in.ID, q.ID)
			if SplitOf(id) != split {
				continue
			}
			out = append(out, proto.PromptUnit{
				PromptID:      id,
				InstructionID: in.ID,
				Instruction:   in.Text,
				Query:         q.Text,
				Prompt:        Prompt(in, q),
				Functions:     append([]string(nil), in.Functions...),
			})
		}
	}
	return out
}
