package ifeval

import (
	"fmt"
	"hash/fnv"
	"math/rand/v2"
	"slices"
	"strings"

	"github.com/autoif/autoif/internal/pystr"
)

// Input is one row of the official input_data.jsonl.
type Input struct {
	Key               int              `json:"key"`
	Prompt            string           `json:"prompt"`
	InstructionIDList []string         `json:"instruction_id_list"`
	Kwargs            []map[string]any `json:"kwargs"`
}

// Output is one row of eval_results_{strict,loose}.jsonl.
type Output struct {
	InstructionIDList     []string `json:"instruction_id_list"`
	Prompt                string   `json:"prompt"`
	Response              string   `json:"response"`
	FollowAllInstructions bool     `json:"follow_all_instructions"`
	FollowInstructionList []bool   `json:"follow_instruction_list"`
}

// Mode is the official evaluation function: Strict checks the response as it is; Loose also
// accepts it once any of 7 variants follows (first/last/both lines removed, '*' removed).
type Mode int

const (
	Strict Mode = iota
	Loose
)

func (m Mode) String() string {
	if m == Loose {
		return "loose"
	}
	return "strict"
}

// Prepared is an input row with its instructions built once, so strict and loose (and many
// responses, in a training loop) share them.
type Prepared struct {
	Input        Input
	Instructions []Instruction
}

// Prepare builds the row's instructions. Random draws the official code makes for absent
// arguments are seeded from the prompt, so a row always gets the same ones.
func Prepare(in Input) (*Prepared, error) {
	if len(in.Kwargs) != len(in.InstructionIDList) {
		return nil, fmt.Errorf("key %d: %d instruction ids but %d kwargs", in.Key, len(in.InstructionIDList), len(in.Kwargs))
	}
	h := fnv.New64a()
	h.Write([]byte(in.Prompt))
	rnd := rand.New(rand.NewPCG(h.Sum64(), uint64(in.Key)))
	p := &Prepared{Input: in}
	for i, id := range in.InstructionIDList {
		ins, err := Build(id, in.Kwargs[i], rnd)
		if err != nil {
			return nil, fmt.Errorf("key %d: %w", in.Key, err)
		}
		p.Instructions = append(p.Instructions, ins)
	}
	return p, nil
}

// Evaluate is test_instruction_following_strict / _loose on one response.
func (p *Prepared) Evaluate(response string, mode Mode) Output {
	variants := []string{response}
	if mode == Loose {
		variants = looseVariants(response)
	}
	out := Output{
		InstructionIDList:     p.Input.InstructionIDList,
		Prompt:                p.Input.Prompt,
		Response:              response,
		FollowAllInstructions: true,
		FollowInstructionList: make([]bool, len(p.Instructions)),
	}
	// A response followed by any variant follows: identical variants (no '*' to remove, one
	// line) are checked once.
	var texts []*Text
	for i, v := range variants {
		if !slices.Contains(variants[:i], v) {
			texts = append(texts, NewText(v))
		}
	}
	for i, ins := range p.Instructions {
		for _, v := range texts {
			if !v.Blank() && ins.Follows(v) {
				out.FollowInstructionList[i] = true
				break
			}
		}
		out.FollowAllInstructions = out.FollowAllInstructions && out.FollowInstructionList[i]
	}
	return out
}

// looseVariants are the official loose mode's 8 responses, in its order.
func looseVariants(response string) []string {
	lines := strings.Split(response, "\n")
	removeFirst := pystr.Strip(strings.Join(lines[1:], "\n"))
	removeLast := pystr.Strip(strings.Join(lines[:len(lines)-1], "\n"))
	removeBoth := ""
	if len(lines) > 2 {
		removeBoth = pystr.Strip(strings.Join(lines[1:len(lines)-1], "\n"))
	}
	noStar := func(s string) string { return strings.ReplaceAll(s, "*", "") }
	return []string{
		response,
		noStar(response),
		removeFirst,
		removeLast,
		removeBoth,
		noStar(removeFirst),
		noStar(removeLast),
		noStar(removeBoth),
	}
}

// Fraction is a count of successes over a total.
type Fraction struct{ Correct, Total int }

// Value is Correct/Total, 0 for an empty total.
func (f Fraction) Value() float64 {
	if f.Total == 0 {
		return 0
	}
	return float64(f.Correct) / float64(f.Total)
}

// Report is print_report's content: prompt- and instruction-level accuracy, and the
// instruction-level accuracy per category (tier 0, the id before the first ':') and per id
// (tier 1).
type Report struct {
	Prompt, Instruction Fraction
	Tier0, Tier1        map[string]Fraction
}

// NewReport aggregates outputs as print_report does.
func NewReport(outputs []Output) Report {
	r := Report{Tier0: map[string]Fraction{}, Tier1: map[string]Fraction{}}
	add := func(m map[string]Fraction, k string, ok bool) {
		f := m[k]
		f.Total++
		if ok {
			f.Correct++
		}
		m[k] = f
	}
	for _, o := range outputs {
		all := true
		for i, id := range o.InstructionIDList {
			ok := i < len(o.FollowInstructionList) && o.FollowInstructionList[i]
			all = all && ok
			r.Instruction.Total++
			if ok {
				r.Instruction.Correct++
			}
			add(r.Tier0, strings.SplitN(id, ":", 2)[0], ok)
			add(r.Tier1, id, ok)
		}
		r.Prompt.Total++
		if all {
			r.Prompt.Correct++
		}
	}
	return r
}
