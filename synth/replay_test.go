package synth

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/autoif/autoif/reward"
)

// replay is a real HTTP server speaking the OpenAI chat completions API and Hugging Face
// TEI's /predict, answering from the completions real models gave to the same prompts in the
// reference pipelines' recorded files (testdata/, see PROVENANCE.md). A prompt that was never
// recorded gets a 404, as a server without the model would answer.
type replay struct {
	*httptest.Server
	chat  map[string][]string // prompt -> recorded completions
	usage map[string]map[string]int
	nli   map[[2]string]string // (instruction, back-translation) -> recorded NLI label

	mu       sync.Mutex
	answered map[string]int // prompt -> times answered
	unknown  int
	fault    func(prompt string, attempt int, w http.ResponseWriter) bool
	attempts map[string]int
}

func readLines(t *testing.T, path string) []json.RawMessage {
	t.Helper()
	rows, err := ReadJSONL[json.RawMessage](path)
	if err != nil {
		t.Fatal(err)
	}
	return rows
}

func newReplay(t *testing.T) *replay {
	t.Helper()
	r := &replay{chat: map[string][]string{}, usage: map[string]map[string]int{}, nli: map[[2]string]string{},
		answered: map[string]int{}, attempts: map[string]int{}}
	// The flywheel records each call as [request, response, the row it was made for].
	for _, f := range []string{"2_eval_func_rft_prompts_results", "4_backtranslate_prompt_results",
		"6_instruction_filtered_query_prompt_results", "7_query_need_quality_score_prompt_results"} {
		for _, raw := range readLines(t, "testdata/autoif-flywheel/"+f+".jsonl") {
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
			if json.Unmarshal(raw, &rec) != nil || len(rec) < 2 || json.Unmarshal(rec[0], &req) != nil || json.Unmarshal(rec[1], &resp) != nil {
				t.Fatalf("%s: not a [request, response, ...] record", f)
			}
			prompt := req.Messages[len(req.Messages)-1].Content
			for _, c := range resp.Choices {
				r.chat[prompt] = append(r.chat[prompt], c.Message.Content)
			}
			r.usage[prompt] = resp.Usage
		}
	}
	for _, raw := range readLines(t, "testdata/autoif-flywheel/5_back_trans_fliter.jsonl") {
		var row BackTransRow
		if err := json.Unmarshal(raw, &row); err != nil {
			t.Fatal(err)
		}
		for i, b := range row.BackInstruction {
			r.nli[[2]string{row.Instruction, b}] = row.NLIScores[i]
		}
	}
	// The AutoIF sample data keeps each prompt with its completions.
	for _, raw := range readLines(t, "testdata/autoif/eval_func_rft.jsonl") {
		var row struct {
			Prompt string   `json:"prompt"`
			Answer []string `json:"gpt-answer"`
		}
		json.Unmarshal(raw, &row)
		r.chat[row.Prompt] = row.Answer
	}
	for _, raw := range readLines(t, "testdata/autoif-flywheel/8_query_score_filter.jsonl") {
		var row struct {
			Prompt string   `json:"prompt"`
			Gen    []string `json:"gen"`
		}
		json.Unmarshal(raw, &row)
		r.chat[row.Prompt] = row.Gen
	}
	for _, raw := range readLines(t, "testdata/autoif/query_rft_score.jsonl") {
		var row struct {
			Prompt string   `json:"prompt"`
			Gen    []string `json:"gen"`
		}
		json.Unmarshal(raw, &row)
		r.chat[row.Prompt] = row.Gen
	}
	r.Server = httptest.NewServer(http.HandlerFunc(r.handle))
	t.Cleanup(r.Close)
	return r
}

func (r *replay) handle(w http.ResponseWriter, req *http.Request) {
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
		r.mu.Lock()
		r.attempts[prompt]++
		attempt := r.attempts[prompt]
		fault := r.fault
		r.mu.Unlock()
		if fault != nil && fault(prompt, attempt, w) {
			return
		}
		got, ok := r.chat[prompt]
		r.mu.Lock()
		if ok {
			r.answered[prompt]++
		} else {
			r.unknown++
		}
		r.mu.Unlock()
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
		json.NewEncoder(w).Encode(map[string]any{"object": "chat.completion", "choices": choices, "usage": r.usage[prompt]})
	case strings.HasSuffix(req.URL.Path, "/predict"):
		var body struct {
			Inputs [][2]string `json:"inputs"`
		}
		if json.NewDecoder(req.Body).Decode(&body) != nil || len(body.Inputs) != 1 {
			w.WriteHeader(http.StatusUnprocessableEntity)
			return
		}
		label, ok := r.nli[body.Inputs[0]]
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

var (
	poolOnce sync.Once
	pool     *reward.Pool
	poolErr  error
)

func testPool(t *testing.T) *reward.Pool {
	t.Helper()
	poolOnce.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		pool, poolErr = reward.NewPool(ctx, reward.Options{Workers: 2, Deadline: 5 * time.Second})
	})
	if poolErr != nil {
		t.Fatalf("start reward pool (python3 is required): %v", poolErr)
	}
	return pool
}

// runConfig runs a pipeline config given as YAML (paths relative to testdata) into a fresh
// directory, against the replay server.
func runConfig(t *testing.T, srv *replay, yamlText string) (string, *Funnel) {
	t.Helper()
	dir := t.TempDir()
	cfgPath := filepath.Join(dir, "config.yaml")
	text := strings.ReplaceAll(yamlText, "REPLAY", srv.URL)
	text = strings.ReplaceAll(text, "TESTDATA", mustAbs(t, "testdata"))
	text = strings.ReplaceAll(text, "TMP", dir)
	if err := os.WriteFile(cfgPath, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg, err := LoadConfig(cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "out")
	f, err := Run(context.Background(), cfg, out, RunOptions{Sandbox: testPool(t)})
	if err != nil {
		t.Fatal(err)
	}
	checkFunnel(t, f)
	return out, f
}

func mustAbs(t *testing.T, p string) string {
	a, err := filepath.Abs(p)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// Every stage's line adds up: what came in was kept or dropped for a named reason.
func checkFunnel(t *testing.T, f *Funnel) {
	t.Helper()
	for _, s := range f.Stages {
		if s.In != s.Kept+s.DroppedTotal() {
			t.Errorf("funnel %s: in %d != kept %d + dropped %d (%v)", s.Stage, s.In, s.Kept, s.DroppedTotal(), s.Dropped)
		}
	}
}

func writeRows[T any](t *testing.T, path string, rows []T) string {
	t.Helper()
	if err := WriteJSONL(path, rows); err != nil {
		t.Fatal(err)
	}
	return path
}
