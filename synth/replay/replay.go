// Package replay answers chat completion requests with the completions real models gave to
// the same prompts, recorded by AutoIF pipelines (the reference's sample data and the
// Post-Training-Data-Flywheel re-implementation's calls), so the synth pipeline can be run
// end to end offline. It speaks the OpenAI chat completions API and Hugging Face TEI's
// /predict (NLI verdicts); a prompt that was never recorded gets a 404, as a server without
// the model would answer.
package replay

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
)

// Handler serves the recordings.
type Handler struct {
	chat  map[string][]string // prompt -> recorded completions
	usage map[string]map[string]int
	nli   map[[2]string]string // (instruction, back-translation) -> recorded NLI label

	mu       sync.Mutex
	answered map[string]int // prompt -> times answered
	attempts map[string]int // prompt -> requests received
	unknown  int
	fault    func(prompt string, attempt int, w http.ResponseWriter) bool
}

// Load reads the recordings under dir: autoif-flywheel/ (records [request, response, row] of
// stages 2, 4, 6 and 7, stage 8's prompts and completions, stage 5's NLI verdicts) and
// autoif/ (eval_func_rft.jsonl and query_rft_score.jsonl: prompts and completions).
func Load(dir string) (*Handler, error) {
	h := &Handler{chat: map[string][]string{}, usage: map[string]map[string]int{}, nli: map[[2]string]string{},
		answered: map[string]int{}, attempts: map[string]int{}}
	for _, f := range []string{"2_eval_func_rft_prompts_results", "4_backtranslate_prompt_results",
		"6_instruction_filtered_query_prompt_results", "7_query_need_quality_score_prompt_results"} {
		err := eachLine(filepath.Join(dir, "autoif-flywheel", f+".jsonl"), func(raw []byte) error {
			var rec []json.RawMessage
			var req struct {
				Messages []struct{ Content string } `json:"messages"`
			}
			var resp struct {
				Choices []struct {
					Message struct{ Content string } `json:"message"`
				} `json:"choices"`
				Usage map[string]int `json:"usage"`
			}
			if json.Unmarshal(raw, &rec) != nil || len(rec) < 2 || json.Unmarshal(rec[0], &req) != nil ||
				json.Unmarshal(rec[1], &resp) != nil || len(req.Messages) == 0 {
				return fmt.Errorf("not a [request, response, ...] record")
			}
			prompt := req.Messages[len(req.Messages)-1].Content
			for _, c := range resp.Choices {
				h.chat[prompt] = append(h.chat[prompt], c.Message.Content)
			}
			h.usage[prompt] = resp.Usage
			return nil
		})
		if err != nil {
			return nil, err
		}
	}
	err := eachLine(filepath.Join(dir, "autoif-flywheel", "5_back_trans_fliter.jsonl"), func(raw []byte) error {
		var row struct {
			Instruction     string   `json:"instruction"`
			BackInstruction []string `json:"back_instruction"`
			NLIScores       []string `json:"nli_scores"`
		}
		if err := json.Unmarshal(raw, &row); err != nil || len(row.NLIScores) != len(row.BackInstruction) {
			return fmt.Errorf("want instruction, back_instruction and as many nli_scores")
		}
		for i, b := range row.BackInstruction {
			h.nli[[2]string{row.Instruction, b}] = row.NLIScores[i]
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	// Rows that keep each prompt with its completions.
	for _, f := range []struct{ path, field string }{
		{"autoif-flywheel/8_query_score_filter.jsonl", "gen"},
		{"autoif/eval_func_rft.jsonl", "gpt-answer"},
		{"autoif/query_rft_score.jsonl", "gen"},
	} {
		err := eachLine(filepath.Join(dir, f.path), func(raw []byte) error {
			var row map[string]json.RawMessage
			var prompt string
			var completions []string
			if json.Unmarshal(raw, &row) != nil || json.Unmarshal(row["prompt"], &prompt) != nil || json.Unmarshal(row[f.field], &completions) != nil {
				return fmt.Errorf("want prompt and %s", f.field)
			}
			h.chat[prompt] = completions
			return nil
		})
		if err != nil {
			return nil, err
		}
	}
	return h, nil
}

func eachLine(path string, fn func([]byte) error) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 64<<20)
	for line := 1; sc.Scan(); line++ {
		if b := bytes.TrimSpace(sc.Bytes()); len(b) > 0 {
			if err := fn(b); err != nil {
				return fmt.Errorf("%s:%d: %w", path, line, err)
			}
		}
	}
	return sc.Err()
}

// SetFault installs a hook run before each chat request is answered; when it returns true it
// has written the response itself (a fault), else the recording answers.
func (h *Handler) SetFault(f func(prompt string, attempt int, w http.ResponseWriter) bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.fault = f
}

// Answered returns how many times each prompt was answered from the recordings.
func (h *Handler) Answered() map[string]int {
	h.mu.Lock()
	defer h.mu.Unlock()
	m := make(map[string]int, len(h.answered))
	for k, v := range h.answered {
		m[k] = v
	}
	return m
}

// Attempts returns how many requests carried the prompt.
func (h *Handler) Attempts(prompt string) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.attempts[prompt]
}

// Unknown counts requests for prompts that were never recorded.
func (h *Handler) Unknown() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.unknown
}

func (h *Handler) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	switch {
	case strings.HasSuffix(req.URL.Path, "/chat/completions"):
		var body struct {
			Messages []struct{ Content string } `json:"messages"`
			N        int                        `json:"n"`
		}
		if json.NewDecoder(req.Body).Decode(&body) != nil || len(body.Messages) == 0 {
			w.WriteHeader(http.StatusBadRequest)
			w.Write([]byte(`{"error":{"message":"bad request"}}`))
			return
		}
		prompt := body.Messages[len(body.Messages)-1].Content
		h.mu.Lock()
		h.attempts[prompt]++
		attempt, fault := h.attempts[prompt], h.fault
		h.mu.Unlock()
		if fault != nil && fault(prompt, attempt, w) {
			return
		}
		got, ok := h.chat[prompt]
		h.mu.Lock()
		if ok {
			h.answered[prompt]++
		} else {
			h.unknown++
		}
		h.mu.Unlock()
		if !ok {
			w.WriteHeader(http.StatusNotFound)
			w.Write([]byte(`{"error":{"message":"no recorded completion for this prompt"}}`))
			return
		}
		if n := max(body.N, 1); n < len(got) {
			got = got[:n]
		}
		var choices []any
		for i, c := range got {
			choices = append(choices, map[string]any{"index": i, "message": map[string]any{"role": "assistant", "content": c}, "finish_reason": "stop"})
		}
		json.NewEncoder(w).Encode(map[string]any{"object": "chat.completion", "choices": choices, "usage": h.usage[prompt]})
	case strings.HasSuffix(req.URL.Path, "/predict"):
		var body struct {
			Inputs [][2]string `json:"inputs"`
		}
		if json.NewDecoder(req.Body).Decode(&body) != nil || len(body.Inputs) != 1 {
			w.WriteHeader(http.StatusUnprocessableEntity)
			return
		}
		label, ok := h.nli[body.Inputs[0]]
		if !ok {
			w.WriteHeader(http.StatusNotFound)
			w.Write([]byte(`{"error":"no recorded verdict"}`))
			return
		}
		var scores []map[string]any
		for _, l := range []string{"entailment", "neutral", "contradiction"} {
			s := 0.0
			if l == label {
				s = 1
			}
			scores = append(scores, map[string]any{"label": l, "score": s})
		}
		json.NewEncoder(w).Encode([][]map[string]any{scores})
	default:
		http.NotFound(w, req)
	}
}
