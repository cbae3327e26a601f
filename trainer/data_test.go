package trainer

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/autoif/autoif/model"
	"github.com/autoif/autoif/tokenizer"
)

func byteTokenizer(t *testing.T) *tokenizer.Tokenizer {
	t.Helper()
	files, err := tokenizer.NewByteLevelJSON(tokenizer.ByteLevelOptions{})
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := files.WriteDir(dir); err != nil {
		t.Fatal(err)
	}
	tok, err := tokenizer.Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func writeFile(t *testing.T, name, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// Every supported pairs format yields the same token ids for the same content.
func TestPairFormatsAgree(t *testing.T) {
	tok := byteTokenizer(t)
	o := TextOptions{Tokenizer: tok, Chat: true}
	prompt, _ := o.prompt("Answer in lowercase.")
	chosen, _ := o.response("yes")
	rejected, _ := o.response("YES")
	ids := func(v []int) string {
		b, _ := json.Marshal(v)
		return string(b)
	}
	files := map[string]string{
		"autoif": `{"instruction": "Answer in lowercase.", "positive": "yes", "negative": "YES"}`,
		"trl":    `{"prompt": "Answer in lowercase.", "chosen": "yes", "rejected": "YES"}`,
		"ids":    `{"prompt_ids": ` + ids(prompt) + `, "chosen_ids": ` + ids(chosen) + `, "rejected_ids": ` + ids(rejected) + `}`,
	}
	for name, content := range files {
		pairs, err := LoadPairs(writeFile(t, name+".jsonl", content+"\n\n"), o)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		p := pairs[0]
		if len(pairs) != 1 || !slices.Equal(p.Prompt, prompt) || !slices.Equal(p.Chosen, chosen) || !slices.Equal(p.Rejected, rejected) {
			t.Errorf("%s: got %+v", name, p)
		}
	}
	eos, _ := tok.EOS()
	if chosen[len(chosen)-1] != eos {
		t.Errorf("responses end with EOS like TRL's: %v", chosen)
	}
	if rendered, _ := tok.ApplyChatTemplate([]tokenizer.Message{{Role: "user", Content: "Answer in lowercase."}}, true); !slices.Equal(prompt, tok.Encode(rendered, false)) {
		t.Error("prompt is not the chat-templated user message")
	}
}

func TestMalformedPairLineIsAnErrorNamingTheLine(t *testing.T) {
	p := writeFile(t, "bad.jsonl", `{"prompt_ids":[1],"chosen_ids":[2],"rejected_ids":[3]}`+"\n"+`{"question": "?"}`+"\n")
	_, err := LoadPairs(p, TextOptions{})
	if err == nil || !strings.Contains(err.Error(), "line 2") {
		t.Fatalf("err %v, want one naming line 2", err)
	}
	p = writeFile(t, "text.jsonl", `{"prompt":"a","chosen":"b","rejected":"c"}`+"\n")
	if _, err := LoadPairs(p, TextOptions{}); err == nil || !strings.Contains(err.Error(), "tokenizer") {
		t.Fatalf("text without a tokenizer: err %v", err)
	}
}

func TestAlpacaSFTLoadsAndTrainingLowersTheLoss(t *testing.T) {
	tok := byteTokenizer(t)
	data := `[{"instruction": "Say hi.", "input": "", "output": "hi"},
	          {"instruction": "Repeat:", "input": "abc", "output": "abc"},
	          {"instruction": "Empty", "input": "", "output": ""}]`
	examples, err := LoadSFT(writeFile(t, "alpaca.json", data), TextOptions{Tokenizer: tok})
	if err != nil {
		t.Fatal(err)
	}
	if len(examples) != 3 || !slices.Equal(examples[1].Prompt, tok.Encode("Repeat:\n\nabc", true)) {
		t.Fatalf("examples %+v", examples)
	}
	cfg := tinyConfig(true, false, true)
	cfg.VocabSize = tok.VocabSize()
	w, err := model.Init(cfg, 3)
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(t.TempDir(), "start")
	if err := w.Save(dir, model.SaveOptions{}); err != nil {
		t.Fatal(err)
	}
	opts := DefaultOptions()
	opts.Optim.LR = 3e-2
	out := filepath.Join(t.TempDir(), "out")
	var losses []float64
	tr, _, err := RunSFT(context.Background(), RunOptions{ModelDir: dir, OutDir: out, Trainer: opts, Steps: 15, NoShuffle: true, Logger: quietLogger(),
		Progress: func(_, _ int, m Metrics) { losses = append(losses, m.Loss) }}, examples)
	if err != nil {
		t.Fatal(err)
	}
	if len(losses) != 15 || losses[14] > 0.5*losses[0] {
		t.Errorf("SFT losses %v: want 15 steps and the last at most half the first", losses)
	}
	if tr.Skipped[SkipEmptyResponse] != 15 {
		t.Errorf("the empty example is skipped and counted once per step: %v", tr.Skipped)
	}
}

// Training prompts are rendered by tokenizer.RenderPrompt, as the rollout workers, the
// held-out evaluation and `autoif generate` render theirs: the same ids for the same text.
func TestTrainingPromptsAreRenderPromptIDs(t *testing.T) {
	tok := byteTokenizer(t)
	for _, chat := range []bool{true, false} {
		got, err := TextOptions{Tokenizer: tok, Chat: chat}.prompt("Answer in lowercase.")
		if err != nil {
			t.Fatal(err)
		}
		want, _, _ := tok.RenderPrompt("Answer in lowercase.", chat)
		if !slices.Equal(got, want) {
			t.Errorf("chat=%v: training prompt %v, RenderPrompt %v", chat, got, want)
		}
	}
}
