package orchestrator

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/autoif/autoif/ifeval"
	"github.com/autoif/autoif/proto"
	"github.com/autoif/autoif/testbed/tinyif"
)

// PromptSet is the prompt units a run samples from, in a fixed order (epochs shuffle it).
type PromptSet struct {
	Units []proto.PromptUnit
	// Sources are the sources it was loaded from, for logs.
	Sources []string
	// DroppedFunctions counts verification functions left out (below MinFuncAccuracy, or
	// defining no evaluate); Duplicates counts prompt units seen twice.
	DroppedFunctions int
	Duplicates       int
}

// Fingerprint identifies the set's content and order, so a resumed run can tell that its
// cursor still points into the same sequence.
func (s *PromptSet) Fingerprint() string {
	h := sha256.New()
	for _, u := range s.Units {
		h.Write([]byte(u.PromptID))
		h.Write([]byte{0})
	}
	return hex.EncodeToString(h.Sum(nil)[:12])
}

// Instructions counts distinct instructions.
func (s *PromptSet) Instructions() int {
	ids := map[string]bool{}
	for _, u := range s.Units {
		ids[u.InstructionID] = true
	}
	return len(ids)
}

// LoadPrompts reads prompt sources: "tinyif" or "tinyif:train" (the bundled testbed's
// train split), "tinyif:heldout", "ifeval:FILE" (IFEval rows: prompt, instruction_id_list,
// kwargs; "ifeval:" alone is the bundled official prompts), or AutoIF JSONL files.
// An IFEval row's constraints become its verification functions, checked natively
// (ifeval.ConstraintFunction): its score is the fraction of them followed. The AutoIF reference pipeline's
// files are accepted as they come out of it:
//
//   - rows holding a prompt and its functions: `dpo_query_w_funcs.jsonl` (prompt,
//     eval_func), `query_rft.jsonl` (prompt, instruction, eval_func), or any row with
//     instruction, query and eval_func;
//   - instruction rows (instruction, eval_func, no query: `back_trans.jsonl`) joined by
//     instruction text with query rows (instruction, query, no eval_func:
//     `query_score_filter.jsonl`), given as separate files in one list.
//
// eval_func is a list of [source, accuracy] pairs or of sources. Every unit must end up with
// at least one function defining evaluate(response), or loading fails naming the row.
func LoadPrompts(sources []string, minAccuracy float64) (*PromptSet, error) {
	if len(sources) == 0 {
		sources = []string{"tinyif"}
	}
	set := &PromptSet{Sources: sources}
	seen := map[string]bool{}
	add := func(u proto.PromptUnit) {
		if seen[u.PromptID] {
			set.Duplicates++
			return
		}
		seen[u.PromptID] = true
		set.Units = append(set.Units, u)
	}
	var files []string
	for _, src := range sources {
		name, split, _ := strings.Cut(src, ":")
		if name == "ifeval" {
			units, err := loadIFEval(split)
			if err != nil {
				return nil, fmt.Errorf("prompts %s: %w", src, err)
			}
			for _, u := range units {
				add(u)
			}
			continue
		}
		if name != "tinyif" {
			files = append(files, src)
			continue
		}
		if split == "" {
			split = string(tinyif.Train)
		}
		sp, err := tinyif.ParseSplit(split)
		if err != nil {
			return nil, fmt.Errorf("prompts %s: %w", src, err)
		}
		tb, err := tinyif.Load()
		if err != nil {
			return nil, fmt.Errorf("prompts %s: %w", src, err)
		}
		for _, u := range tb.Units(sp) {
			add(u)
		}
	}
	if len(files) > 0 {
		units, dropped, err := loadAutoIF(files, minAccuracy)
		if err != nil {
			return nil, err
		}
		set.DroppedFunctions = dropped
		for _, u := range units {
			add(u)
		}
	}
	if len(set.Units) == 0 {
		return nil, fmt.Errorf("prompts %s: no prompt units", strings.Join(sources, ","))
	}
	return set, nil
}

// autoifRow is the union of the AutoIF pipeline's row shapes.
type autoifRow struct {
	Prompt      *string         `json:"prompt"`
	Instruction *string         `json:"instruction"`
	Query       *string         `json:"query"`
	EvalFunc    json.RawMessage `json:"eval_func"`
}

type rowRef struct {
	file string
	line int
}

func (r rowRef) String() string { return fmt.Sprintf("%s:%d", r.file, r.line) }

type queryRow struct {
	ref                  rowRef
	prompt, instr, query string
	funcs                []string
	ownFuncs             bool
	droppedHere          int
}

func loadAutoIF(files []string, minAccuracy float64) ([]proto.PromptUnit, int, error) {
	instrFuncs := map[string][]string{}
	var queries []queryRow
	dropped := 0
	for _, path := range files {
		data, err := os.ReadFile(path)
		if err != nil {
			return nil, 0, fmt.Errorf("prompts: %w", err)
		}
		sc := bufio.NewScanner(bytes.NewReader(data))
		sc.Buffer(make([]byte, 1<<20), 64<<20)
		for line := 1; sc.Scan(); line++ {
			text := bytes.TrimSpace(sc.Bytes())
			if len(text) == 0 {
				continue
			}
			ref := rowRef{path, line}
			var r autoifRow
			if err := json.Unmarshal(text, &r); err != nil {
				return nil, 0, fmt.Errorf("prompts %s: not a JSON object: %w", ref, err)
			}
			q := queryRow{ref: ref, prompt: deref(r.Prompt), instr: deref(r.Instruction), query: deref(r.Query)}
			if len(r.EvalFunc) > 0 && string(r.EvalFunc) != "null" {
				funcs, n, err := parseEvalFunc(r.EvalFunc, minAccuracy)
				if err != nil {
					return nil, 0, fmt.Errorf("prompts %s: eval_func: %w", ref, err)
				}
				dropped += n
				q.funcs, q.ownFuncs, q.droppedHere = funcs, true, n
			}
			switch {
			case q.ownFuncs && q.prompt == "" && q.query == "":
				// An instruction with its functions (back_trans.jsonl): joined with query rows.
				if q.instr == "" {
					return nil, 0, fmt.Errorf("prompts %s: a row with eval_func needs a prompt, a query or an instruction", ref)
				}
				if len(q.funcs) == 0 {
					return nil, 0, fmt.Errorf("prompts %s: instruction %q has no verified function (%d dropped)", ref, clip(q.instr), q.droppedHere)
				}
				instrFuncs[q.instr] = append(instrFuncs[q.instr], q.funcs...)
			case q.prompt == "" && q.query == "":
				return nil, 0, fmt.Errorf("prompts %s: row has no prompt, query or eval_func (want AutoIF rows: prompt/instruction/query with eval_func)", ref)
			case !q.ownFuncs && q.instr == "":
				return nil, 0, fmt.Errorf("prompts %s: row has no eval_func and no instruction to find its functions by", ref)
			default:
				queries = append(queries, q)
			}
		}
		if err := sc.Err(); err != nil {
			return nil, 0, fmt.Errorf("prompts %s: %w", path, err)
		}
	}
	units := make([]proto.PromptUnit, 0, len(queries))
	for _, q := range queries {
		funcs := q.funcs
		if !q.ownFuncs {
			funcs = instrFuncs[q.instr]
			if len(funcs) == 0 {
				return nil, 0, fmt.Errorf("prompts %s: instruction %q has no verified function in any given file", q.ref, clip(q.instr))
			}
		}
		if len(funcs) == 0 {
			return nil, 0, fmt.Errorf("prompts %s: instruction %q has no verified function (%d dropped)", q.ref, clip(firstNonEmpty(q.instr, q.prompt)), q.droppedHere)
		}
		prompt := q.prompt
		if prompt == "" {
			// AutoIF's DPO prompts put the instruction before the query.
			prompt = strings.TrimSpace(q.instr + " " + q.query)
		}
		instrKey := q.instr
		if instrKey == "" {
			// No instruction text (dpo_query_w_funcs.jsonl): its functions identify it.
			instrKey = strings.Join(funcs, "\x00")
		}
		units = append(units, proto.PromptUnit{
			PromptID:      "autoif:" + shortHash(prompt),
			InstructionID: "autoif:" + shortHash(instrKey),
			Instruction:   q.instr,
			Query:         firstNonEmpty(q.query, queryOf(prompt)),
			Prompt:        prompt,
			Functions:     funcs,
		})
	}
	return units, dropped, nil
}

// parseEvalFunc reads [[source, accuracy], ...] or [source, ...], keeping functions that
// define evaluate and reach minAccuracy.
func parseEvalFunc(raw json.RawMessage, minAccuracy float64) ([]string, int, error) {
	var items []json.RawMessage
	if err := json.Unmarshal(raw, &items); err != nil {
		return nil, 0, errors.New("want a list")
	}
	var out []string
	dropped := 0
	seen := map[string]bool{}
	for i, it := range items {
		var src string
		acc := 1.0
		if err := json.Unmarshal(it, &src); err != nil {
			var pair []json.RawMessage
			if err := json.Unmarshal(it, &pair); err != nil || len(pair) == 0 {
				return nil, 0, fmt.Errorf("item %d: want a source or [source, accuracy]", i)
			}
			if err := json.Unmarshal(pair[0], &src); err != nil {
				return nil, 0, fmt.Errorf("item %d: source is not a string", i)
			}
			if len(pair) > 1 {
				if err := json.Unmarshal(pair[1], &acc); err != nil {
					return nil, 0, fmt.Errorf("item %d: accuracy is not a number", i)
				}
			}
		}
		if !strings.Contains(src, "def evaluate(") || acc < minAccuracy || seen[src] {
			dropped++
			continue
		}
		seen[src] = true
		out = append(out, src)
	}
	return out, dropped, nil
}

// queryOf extracts the query of a query_rft.jsonl-style prompt ("...[Query] text").
func queryOf(prompt string) string {
	if _, q, ok := strings.Cut(prompt, "[Query] "); ok {
		return strings.TrimSpace(q)
	}
	return ""
}

func shortHash(s string) string {
	h := sha256.Sum256([]byte(s))
	return hex.EncodeToString(h[:8])
}

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return strings.TrimSpace(*s)
}

func firstNonEmpty(ss ...string) string {
	for _, s := range ss {
		if s != "" {
			return s
		}
	}
	return ""
}

func clip(s string) string {
	if len(s) > 60 {
		return s[:57] + "..."
	}
	return s
}

// loadIFEval makes one prompt unit per IFEval row, its constraints as native verification
// functions; an empty path is the bundled official prompts.
func loadIFEval(path string) ([]proto.PromptUnit, error) {
	inputs := ifeval.OfficialInputs()
	if path != "" {
		var err error
		if inputs, err = ifeval.ReadInputFile(path); err != nil {
			return nil, err
		}
	}
	units := make([]proto.PromptUnit, 0, len(inputs))
	for _, in := range inputs {
		u := proto.PromptUnit{
			PromptID:      "ifeval:" + shortHash(in.Prompt),
			InstructionID: "ifeval:" + strings.Join(in.InstructionIDList, "+"),
			Instruction:   strings.Join(in.InstructionIDList, ", "),
			Query:         in.Prompt,
			Prompt:        in.Prompt,
		}
		for i, id := range in.InstructionIDList {
			fn, err := ifeval.ConstraintFunction(id, in.Kwargs[i])
			if err != nil {
				return nil, fmt.Errorf("key %d: %w", in.Key, err)
			}
			u.Functions = append(u.Functions, fn)
		}
		units = append(units, u)
	}
	return units, nil
}
