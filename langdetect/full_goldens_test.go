//go:build fullgoldens

package langdetect

import (
	"os"
	"testing"
)

// TestFullGoldens compares against langdetect on every IFEval response, from goldens that
// `scripts/nlp_goldens.py --full` writes (not kept in testdata; the bundled goldens sample
// them). `make fullgoldens` writes them and runs this test.
func TestFullGoldens(t *testing.T) {
	path := os.Getenv("LANGDETECT_FULL_GOLDENS")
	if path == "" {
		t.Fatal("LANGDETECT_FULL_GOLDENS is not set: `make fullgoldens` writes the goldens and sets it")
	}
	gs := readGoldens(t, path)
	bad := agreement(t, gs)
	t.Logf("%d texts: Detect equals langdetect on %d", len(gs), len(gs)-bad)
}
