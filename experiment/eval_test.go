package experiment

import (
	"context"
	"path/filepath"
	"slices"
	"testing"

	"github.com/autoif/autoif/model"
	"github.com/autoif/autoif/proto"
	"github.com/autoif/autoif/reward"
	"github.com/autoif/autoif/tokenizer"
)

// constScorer passes every response: the test is about the prompts, not the scores.
type constScorer struct{}

func (constScorer) Score(_ context.Context, _ []string, responses []string) (*reward.Result, error) {
	return &reward.Result{Scores: make([]reward.ResponseScore, len(responses))}, nil
}

// Held-out prompts are rendered by tokenizer.RenderPrompt, as the rollout workers and the
// trainer render theirs, so an evaluation measures the policy on the prompts it trained on.
func TestEvalPromptsAreRenderPromptIDs(t *testing.T) {
	tokDir, dir := t.TempDir(), filepath.Join(t.TempDir(), "policy")
	files, err := tokenizer.NewByteLevelJSON(tokenizer.ByteLevelOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if err := files.WriteDir(tokDir); err != nil {
		t.Fatal(err)
	}
	tok, err := tokenizer.Load(tokDir)
	if err != nil {
		t.Fatal(err)
	}
	w, err := model.Init(&model.Config{
		Architecture: model.ArchLlama, HiddenSize: 16, IntermediateSize: 32, NumHiddenLayers: 1,
		NumAttentionHeads: 2, NumKeyValueHeads: 2, HeadDim: 8, RMSNormEps: 1e-6, RopeTheta: 1e4,
		VocabSize: tok.VocabSize(), MaxPositionEmbeddings: 128, TieWordEmbeddings: true,
		EOSTokenIDs: tok.EOSIDs(), InitializerRange: 0.02,
	}, 1)
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Save(dir, model.SaveOptions{TokenizerDir: tokDir}); err != nil {
		t.Fatal(err)
	}
	units := []proto.PromptUnit{{PromptID: "p", InstructionID: "i", Prompt: "Answer in lowercase."}}
	for _, chat := range []bool{true, false} {
		out, err := sampleAndScore(context.Background(), dir, units, constScorer{}, SampleOptions{MaxNewTokens: 2, ChatTemplate: chat, Threads: 1})
		if err != nil {
			t.Fatal(err)
		}
		want, _, _ := tok.RenderPrompt(units[0].Prompt, chat)
		if !slices.Equal(out[0].promptIDs, want) {
			t.Errorf("chat=%v: eval prompt %v, RenderPrompt %v", chat, out[0].promptIDs, want)
		}
	}
}
