package proto

import "testing"

func TestRunIDsThatWouldBreakSubjectsAreRejected(t *testing.T) {
	for _, id := range []string{"", "a.b", "a*", "a>", "has space", "ünï", string(make([]byte, 65))} {
		if _, err := NewRun(id); err == nil {
			t.Errorf("run id %q accepted", id)
		}
	}
}

func TestRunNamesAreNamespacedByRunID(t *testing.T) {
	r, err := NewRun("exp-1")
	if err != nil {
		t.Fatal(err)
	}
	for got, want := range map[string]string{
		r.Prompts():                          "autoif.exp-1.prompts",
		r.Pairs():                            "autoif.exp-1.pairs",
		r.Metrics():                          "autoif.exp-1.metrics",
		r.PairsStream():                      "AUTOIF_EXP_1_PAIRS",
		r.PromptsStream():                    "AUTOIF_EXP_1_PROMPTS",
		r.PolicyBucket():                     "autoif_exp-1_policy",
		r.CheckpointBucket():                 "autoif_exp-1_checkpoints",
		r.CheckpointObject(3, "config.json"): "v00000003/config.json",
	} {
		if got != want {
			t.Errorf("got %q, want %q", got, want)
		}
	}
}
