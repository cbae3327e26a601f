package orchestrator

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/autoif/autoif/ifeval"
)

// "ifeval:FILE" makes one unit per IFEval row, each constraint a native verification function;
// "ifeval:" is the bundled official prompts; both mix with the AutoIF sources.
func TestLoadPromptsReadsIFEvalRows(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.jsonl")
	os.WriteFile(bad, []byte(`{"key": 9, "prompt": "p", "instruction_id_list": ["keywords:frequency"], "kwargs": [{"keyword": "a", "frequency": 1, "relation": "at most"}]}`+"\n"), 0o644)
	if _, err := LoadPrompts([]string{"ifeval:" + bad}, 0); err == nil || !strings.Contains(err.Error(), "bad.jsonl:1: keywords:frequency: relation must be") {
		t.Errorf("bad row: %v", err)
	}

	set, err := LoadPrompts([]string{"ifeval:", "tinyif"}, 0)
	if err != nil {
		t.Fatal(err)
	}
	ifevalUnits, constraints := 0, 0
	for _, u := range set.Units {
		if !strings.HasPrefix(u.PromptID, "ifeval:") {
			continue
		}
		ifevalUnits++
		for _, fn := range u.Functions {
			if !ifeval.IsConstraintFunction(fn) {
				t.Fatalf("unit %s: function %.40q is not a constraint", u.PromptID, fn)
			}
			constraints++
		}
	}
	if ifevalUnits != 541 || constraints != 834 || len(set.Units) <= 541 {
		t.Errorf("%d IFEval units with %d constraints among %d units, want 541 with 834 and the tinyif ones", ifevalUnits, constraints, len(set.Units))
	}
}

// open-instruct's RLVR rows (messages + ground_truth) are IFEval rows too: the prompt is the
// user message and each constraint a native verification function.
func TestLoadPromptsReadsRLVRRows(t *testing.T) {
	set, err := LoadPrompts([]string{"ifeval:../ifeval/testdata/rlvr_ifeval.jsonl"}, 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(set.Units) != 6 {
		t.Fatalf("%d units, want one per row (6)", len(set.Units))
	}
	u := set.Units[5]
	if u.Prompt != "Write a short note to a neighbour. Do not use any commas. Wrap your entire response with double quotation marks." ||
		len(u.Functions) != 2 || ifeval.ConstraintID(u.Functions[1]) != "startend:quotation" {
		t.Errorf("last row: prompt %q, functions %q", u.Prompt, u.Functions)
	}
}
