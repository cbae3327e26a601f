package synth

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/autoif/autoif/atomicfile"
	"github.com/autoif/autoif/reward/crossval"
)

// The rows stages pass on, in the reference pipeline's file formats (field names as in its
// sample_data), so its files can enter at any stage.

// InstructionRow is one instruction (stage 1's output).
type InstructionRow struct {
	Instruction string `json:"instruction"`
}

// FunctionsRow is stage 2's output, eval_func_rft.jsonl: the prompt and its completions.
type FunctionsRow struct {
	Prompt      string   `json:"prompt,omitempty"`
	Instruction string   `json:"instruction"`
	Completions []string `json:"gpt-answer"`
}

// BackTransRow is back_trans.jsonl: a cross-validated instruction, its back-translations and
// their NLI verdicts.
type BackTransRow struct {
	Instruction     string          `json:"instruction"`
	Functions       []crossval.Func `json:"eval_func"`
	Cases           []crossval.Case `json:"cases"`
	BackInstruction []string        `json:"back_instruction,omitempty"`
	NLIScores       []string        `json:"nli_scores,omitempty"`
}

// QueryRow pairs an instruction (and its functions) with a user query.
type QueryRow struct {
	Instruction string          `json:"instruction"`
	Query       string          `json:"query"`
	Prompt      string          `json:"prompt"`
	Functions   []crossval.Func `json:"eval_func"`
	Cases       []crossval.Case `json:"cases,omitempty"`
}

// Scored is a response and its pass rate over the functions; JSON [response, score] as in
// the reference's dpo_query_eval_score_results.jsonl.
type Scored struct {
	Response string
	Score    float64
}

func (s Scored) MarshalJSON() ([]byte, error) { return json.Marshal([]any{s.Response, s.Score}) }

func (s *Scored) UnmarshalJSON(b []byte) error {
	var raw []json.RawMessage
	if err := json.Unmarshal(b, &raw); err != nil || len(raw) != 2 {
		return fmt.Errorf("response entry: want [response, score]")
	}
	if err := json.Unmarshal(raw[0], &s.Response); err != nil {
		return err
	}
	return json.Unmarshal(raw[1], &s.Score)
}

// ResponsesRow is a query with every sampled response scored by its functions; Kept are the
// responses above the pass-rate threshold, in sampling order.
type ResponsesRow struct {
	QueryRow
	Responses []Scored `json:"responses"`
	Kept      []string `json:"kept"`
}

// JudgedRow is query_rft_score.jsonl: one response, the judge's prompt, its completions and
// their mean score.
type JudgedRow struct {
	Instruction string          `json:"instruction"`
	Query       string          `json:"query"`
	Response    string          `json:"response"`
	Prompt      string          `json:"prompt"`
	Gen         []string        `json:"gen"`
	Score       float64         `json:"score"`
	Functions   []crossval.Func `json:"eval_func,omitempty"`
}

// ReadJSONL reads one JSON object per line; blank lines are skipped, a bad line is an error
// naming it.
func ReadJSONL[T any](path string) ([]T, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return readJSONL[T](f, path)
}

func readJSONL[T any](r io.Reader, name string) ([]T, error) {
	var out []T
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 1<<20), 256<<20)
	line := 0
	for sc.Scan() {
		line++
		b := bytes.TrimSpace(sc.Bytes())
		if len(b) == 0 {
			continue
		}
		var v T
		if err := json.Unmarshal(b, &v); err != nil {
			return nil, fmt.Errorf("%s:%d: %w", name, line, err)
		}
		out = append(out, v)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("%s:%d: %w", name, line+1, err)
	}
	return out, nil
}

// WriteJSONL writes rows atomically, one JSON object per line.
func WriteJSONL[T any](path string, rows []T) error {
	return atomicfile.Write(path, 0o644, func(w io.Writer) error {
		enc := json.NewEncoder(w)
		enc.SetEscapeHTML(false)
		for _, r := range rows {
			if err := enc.Encode(r); err != nil {
				return err
			}
		}
		return nil
	})
}

// ReadInstructions reads instructions: a text file of one per line, or JSONL rows with an
// "instruction" field.
func ReadInstructions(path string) ([]string, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var out []string
	for i, line := range strings.Split(string(data), "\n") {
		line = strings.TrimSpace(line)
		if line == "" {
			continue
		}
		if strings.HasPrefix(line, "{") {
			var r InstructionRow
			if err := json.Unmarshal([]byte(line), &r); err != nil {
				return nil, fmt.Errorf("%s:%d: %w", path, i+1, err)
			}
			if strings.TrimSpace(r.Instruction) == "" {
				return nil, fmt.Errorf("%s:%d: no instruction", path, i+1)
			}
			out = append(out, strings.TrimSpace(r.Instruction))
			continue
		}
		out = append(out, line)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%s: no instructions", path)
	}
	return out, nil
}

// ReadQueries reads user queries: ShareGPT (a JSON array, or JSONL, of conversations with
// from/value or role/content turns: the first human turn), JSONL rows with "query" or
// "prompt", JSON strings, or plain text lines.
func ReadQueries(path string) ([]string, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	type turn struct {
		From, Value, Role, Content string
	}
	type row struct {
		Conversations []turn `json:"conversations"`
		Messages      []turn `json:"messages"`
		Query         string `json:"query"`
		Prompt        string `json:"prompt"`
	}
	first := func(r row) string {
		for _, t := range append(r.Conversations, r.Messages...) {
			if t.From == "human" || t.From == "user" || t.Role == "user" {
				return t.Value + t.Content
			}
		}
		if r.Query != "" {
			return r.Query
		}
		return r.Prompt
	}
	var out []string
	trimmed := bytes.TrimSpace(data)
	if len(trimmed) > 0 && trimmed[0] == '[' {
		var rows []row
		if err := json.Unmarshal(trimmed, &rows); err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		for _, r := range rows {
			if q := first(r); q != "" {
				out = append(out, q)
			}
		}
		return out, nil
	}
	for i, line := range strings.Split(string(data), "\n") {
		line = strings.TrimSpace(line)
		switch {
		case line == "":
		case strings.HasPrefix(line, "{"):
			var r row
			if err := json.Unmarshal([]byte(line), &r); err != nil {
				return nil, fmt.Errorf("%s:%d: %w", path, i+1, err)
			}
			if q := first(r); q != "" {
				out = append(out, q)
			}
		case strings.HasPrefix(line, `"`):
			var s string
			if err := json.Unmarshal([]byte(line), &s); err != nil {
				return nil, fmt.Errorf("%s:%d: %w", path, i+1, err)
			}
			out = append(out, s)
		default:
			out = append(out, line)
		}
	}
	return out, nil
}
