package punkt

import (
	"testing"

	"github.com/autoif/autoif/internal/ifevaldata"
)

// The official checker's length_constraints:number_sentences verdicts (GPT-4 and the 17
// strict_results models) follow from Punkt's sentence count alone, so every one must come
// out the same.
func TestOfficialSentenceCountVerdicts(t *testing.T) {
	dir, err := ifevaldata.Dir()
	if err != nil {
		t.Fatal(err)
	}
	vs, err := ifevaldata.StrictVerdicts(dir, "length_constraints:number_sentences")
	if err != nil {
		t.Fatal(err)
	}
	if len(vs) < 900 {
		t.Fatalf("only %d verdicts", len(vs))
	}
	tok := English()
	agree := 0
	for _, v := range vs {
		n := len(tok.Sentences(v.Response))
		threshold, _ := v.Kwargs["num_sentences"].(float64)
		var ours bool
		switch v.Kwargs["relation"] {
		case "less than":
			ours = n < int(threshold)
		case "at least":
			ours = n >= int(threshold)
		default:
			t.Fatalf("%s key %d: relation %v", v.Source, v.Key, v.Kwargs["relation"])
		}
		if ours == v.Followed {
			agree++
		} else {
			t.Errorf("%s key %d: %d sentences, %v %v: official %v", v.Source, v.Key, n, v.Kwargs["relation"], threshold, v.Followed)
		}
	}
	t.Logf("number_sentences: %d of %d official verdicts reproduced", agree, len(vs))
}
