package rollout

import (
	"path/filepath"
	"slices"
	"testing"
)

// Sampled prompts are rendered by tokenizer.RenderPrompt, as the trainer's text rows are:
// the policy is trained on exactly the ids it sampled from.
func TestPolicyPromptsAreRenderPromptIDs(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "policy")
	writeTinyModel(t, dir, 1)
	p, err := LoadPolicy(dir, 1, 1, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, chat := range []bool{true, false} {
		ids, text, err := p.encodePrompt("Answer in lowercase.", chat)
		if err != nil {
			t.Fatal(err)
		}
		want, wantText, _ := p.Tok.RenderPrompt("Answer in lowercase.", chat)
		if !slices.Equal(ids, want) || text != wantText {
			t.Errorf("chat=%v: policy prompt %v %q, RenderPrompt %v %q", chat, ids, text, want, wantText)
		}
	}
}
