package trainer

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/autoif/autoif/tokenizer"
)

// TextOptions say how text rows become token ids.
type TextOptions struct {
	// Tokenizer is required for rows given as text.
	Tokenizer *tokenizer.Tokenizer
	// Chat renders the prompt as one user message through the tokenizer's chat template
	// (with the generation prompt), as the rollout workers sample; otherwise the prompt is
	// encoded as plain text with the tokenizer's special tokens.
	Chat bool
	// NoEOS leaves responses without the end-of-sequence token TRL appends.
	NoEOS bool
}

func (o TextOptions) prompt(text string) ([]int, error) {
	if o.Tokenizer == nil {
		return nil, errors.New("text row needs a tokenizer (the model directory has no tokenizer.json)")
	}
	ids, _, err := o.Tokenizer.RenderPrompt(text, o.Chat)
	if err != nil {
		return nil, fmt.Errorf("%w (or render prompts as plain text: --chat=false)", err)
	}
	return ids, nil
}

func (o TextOptions) response(text string) ([]int, error) {
	if o.Tokenizer == nil {
		return nil, errors.New("text row needs a tokenizer (the model directory has no tokenizer.json)")
	}
	ids := o.Tokenizer.Encode(text, false)
	// An empty response stays empty so the trainer skips and counts it rather than training
	// on a lone EOS.
	if eos, ok := o.Tokenizer.EOS(); ok && !o.NoEOS && len(ids) > 0 {
		ids = append(ids, eos)
	}
	return ids, nil
}

// pairRow holds every field name the supported pair formats use.
type pairRow struct {
	ID     string `json:"id"`
	PairID string `json:"pair_id"`
	// Token ids.
	PromptIDs   []int `json:"prompt_ids"`
	ChosenIDs   []int `json:"chosen_ids"`
	RejectedIDs []int `json:"rejected_ids"`
	// TRL.
	Prompt   *string `json:"prompt"`
	Chosen   *string `json:"chosen"`
	Rejected *string `json:"rejected"`
	// AutoIF dpo_pairs.jsonl.
	Instruction *string `json:"instruction"`
	Positive    *string `json:"positive"`
	Negative    *string `json:"negative"`
}

// LoadPairs reads preference pairs from a JSONL file in any of the supported formats, chosen
// per line by its fields: token ids (prompt_ids, chosen_ids, rejected_ids), TRL
// (prompt, chosen, rejected) or AutoIF's dpo_pairs.jsonl (instruction, positive, negative).
// A line in none of them is an error naming the line; rows whose content is bad (an empty
// response, chosen == rejected) load, and the trainer skips and counts them. A pair's id is its
// pair_id or id field, else file:line.
func LoadPairs(path string, o TextOptions) ([]*Pair, error) {
	var pairs []*Pair
	ids := map[string]bool{}
	err := eachJSONLine(path, func(line int, raw []byte) error {
		var r pairRow
		if err := json.Unmarshal(raw, &r); err != nil {
			return err
		}
		p := &Pair{ID: firstNonEmpty(r.PairID, r.ID, fmt.Sprintf("%s:%d", path, line))}
		if ids[p.ID] {
			// Ids key the reference cache and the logs: a repeated one gets its line.
			p.ID = fmt.Sprintf("%s@%s:%d", p.ID, path, line)
		}
		ids[p.ID] = true
		var err error
		switch {
		case r.PromptIDs != nil || r.ChosenIDs != nil || r.RejectedIDs != nil:
			p.Prompt, p.Chosen, p.Rejected = r.PromptIDs, r.ChosenIDs, r.RejectedIDs
		case r.Prompt != nil && r.Chosen != nil && r.Rejected != nil:
			err = textPair(p, o, *r.Prompt, *r.Chosen, *r.Rejected)
		case r.Instruction != nil && r.Positive != nil && r.Negative != nil:
			err = textPair(p, o, *r.Instruction, *r.Positive, *r.Negative)
		default:
			return errors.New("want prompt_ids/chosen_ids/rejected_ids, prompt/chosen/rejected or instruction/positive/negative")
		}
		if err != nil {
			return err
		}
		pairs = append(pairs, p)
		return nil
	})
	return pairs, err
}

func textPair(p *Pair, o TextOptions, prompt, chosen, rejected string) error {
	var err error
	if p.Prompt, err = o.prompt(prompt); err != nil {
		return err
	}
	if p.Chosen, err = o.response(chosen); err != nil {
		return err
	}
	p.Rejected, err = o.response(rejected)
	return err
}

type sftRow struct {
	ID          string  `json:"id"`
	Instruction *string `json:"instruction"`
	Input       string  `json:"input"`
	Output      *string `json:"output"`
	Prompt      *string `json:"prompt"`
	Response    *string `json:"response"`
	PromptIDs   []int   `json:"prompt_ids"`
	ResponseIDs []int   `json:"response_ids"`
}

// LoadSFT reads SFT examples: an alpaca-style JSON array (instruction, input, output), or
// JSONL with those fields, prompt/response, or prompt_ids/response_ids.
func LoadSFT(path string, o TextOptions) ([]*Example, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("load sft data: %w", err)
	}
	var rows []sftRow
	if t := bytes.TrimSpace(data); len(t) > 0 && t[0] == '[' {
		if err := json.Unmarshal(t, &rows); err != nil {
			return nil, fmt.Errorf("load sft data %s: %w", path, err)
		}
	} else {
		err := eachJSONLine(path, func(_ int, raw []byte) error {
			var r sftRow
			if err := json.Unmarshal(raw, &r); err != nil {
				return err
			}
			rows = append(rows, r)
			return nil
		})
		if err != nil {
			return nil, err
		}
	}
	out := make([]*Example, 0, len(rows))
	for i, r := range rows {
		e := &Example{ID: firstNonEmpty(r.ID, fmt.Sprintf("%s:%d", path, i+1))}
		var err error
		switch {
		case r.PromptIDs != nil || r.ResponseIDs != nil:
			e.Prompt, e.Response = r.PromptIDs, r.ResponseIDs
		case r.Instruction != nil && r.Output != nil:
			prompt := *r.Instruction
			if strings.TrimSpace(r.Input) != "" {
				prompt += "\n\n" + r.Input
			}
			if e.Prompt, err = o.prompt(prompt); err == nil {
				e.Response, err = o.response(*r.Output)
			}
		case r.Prompt != nil && r.Response != nil:
			if e.Prompt, err = o.prompt(*r.Prompt); err == nil {
				e.Response, err = o.response(*r.Response)
			}
		default:
			err = errors.New("want instruction/input/output, prompt/response or prompt_ids/response_ids")
		}
		if err != nil {
			return nil, fmt.Errorf("load sft data %s: example %d: %w", path, i+1, err)
		}
		out = append(out, e)
	}
	return out, nil
}

// eachJSONLine calls fn for every non-blank line, wrapping its error with the line number.
func eachJSONLine(path string, fn func(line int, raw []byte) error) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("load %s: %w", path, err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 256<<20)
	line := 0
	for sc.Scan() {
		line++
		raw := bytes.TrimSpace(sc.Bytes())
		if len(raw) == 0 {
			continue
		}
		if err := fn(line, raw); err != nil {
			return fmt.Errorf("load %s: line %d: %w", path, line, err)
		}
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("load %s: %w", path, err)
	}
	return nil
}

func firstNonEmpty(s ...string) string {
	for _, v := range s {
		if v != "" {
			return v
		}
	}
	return ""
}
