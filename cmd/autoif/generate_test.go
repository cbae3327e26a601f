package main

import (
	"bytes"
	"encoding/json"
	"io"
	"math"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/autoif/autoif/tokenizer"
)

// `autoif generate` renders its prompt with tokenizer.RenderPrompt, as the trainer and the
// rollout workers do, and decodes the same greedy tokens from a BF16 checkpoint whether its
// weights are kept as stored or widened to float32 (--float32).
func TestGeneratePromptIsRenderPromptIDs(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "policy")
	app := newApp()
	app.Writer = io.Discard
	if err := app.Run([]string{"autoif", "model", "init", "--layers", "1", "--hidden", "64", "--heads", "2",
		"--intermediate", "128", "--max-positions", "512", "--seed", "3", "--dtype", "bf16", "--out", dir}); err != nil {
		t.Fatal(err)
	}
	tok, err := tokenizer.Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, chat := range []bool{true, false} {
		var tokens [][]int
		var logprobs [][]float64
		for _, float32 := range []bool{false, true} {
			args := []string{"autoif", "generate", "--model", dir, "--prompt", "Answer in lowercase.", "--temperature", "0",
				"--max-new-tokens", "4", "--json", "--chat=" + map[bool]string{true: "true", false: "false"}[chat]}
			if float32 {
				args = append(args, "--float32")
			}
			app := newApp()
			var out bytes.Buffer
			app.Writer, app.ErrWriter = &out, &out
			if err := app.Run(args); err != nil {
				t.Fatalf("%v: %v\n%s", args, err, out.String())
			}
			var got struct {
				PromptTokens []int     `json:"prompt_tokens"`
				Tokens       []int     `json:"tokens"`
				LogProbs     []float64 `json:"logprobs"`
			}
			if err := json.Unmarshal([]byte(strings.TrimSpace(out.String())), &got); err != nil {
				t.Fatalf("output %q: %v", out.String(), err)
			}
			want, _, _ := tok.RenderPrompt("Answer in lowercase.", chat)
			if !slices.Equal(got.PromptTokens, want) {
				t.Errorf("chat=%v: generate's prompt %v, RenderPrompt %v", chat, got.PromptTokens, want)
			}
			tokens, logprobs = append(tokens, got.Tokens), append(logprobs, got.LogProbs)
		}
		// The same weights summed in another order: the same tokens, log-probs to rounding.
		if !slices.Equal(tokens[0], tokens[1]) {
			t.Errorf("chat=%v: BF16 greedy tokens %v, --float32 %v", chat, tokens[0], tokens[1])
		}
		for i := range logprobs[0] {
			if math.Abs(logprobs[0][i]-logprobs[1][i]) > 1e-5 {
				t.Errorf("chat=%v: log-probs %v vs --float32 %v", chat, logprobs[0], logprobs[1])
				break
			}
		}
	}
}
