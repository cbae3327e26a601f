//go:build fullgoldens

package punkt

import (
	"os"
	"reflect"
	"testing"
)

// TestFullGoldens compares against NLTK on every IFEval response, from goldens that
// `scripts/nlp_goldens.py --full` writes (about 10 MB, so not kept in testdata; the bundled
// goldens sample them). `make fullgoldens` writes them and runs this test.
func TestFullGoldens(t *testing.T) {
	path := os.Getenv("PUNKT_FULL_GOLDENS")
	if path == "" {
		t.Fatal("PUNKT_FULL_GOLDENS is not set: `make fullgoldens` writes the goldens and sets it")
	}
	gs := readGoldens(t, path)
	tok := English()
	badS, badW := 0, 0
	for i, g := range gs {
		if got := nonNil(tok.Sentences(g.Text)); !reflect.DeepEqual(got, nonNil(g.Sentences)) {
			badS++
			if badS <= 3 {
				t.Errorf("sentences %d %q:\n got %q\nwant %q", i, trunc(g.Text), got, g.Sentences)
			}
		}
		if got := nonNil(WordTokenize(g.Text)); !reflect.DeepEqual(got, nonNil(g.Words)) {
			badW++
			if badW <= 3 {
				t.Errorf("words %d %q:\n got %q\nwant %q", i, trunc(g.Text), got, g.Words)
			}
		}
	}
	t.Logf("%d texts: Sentences equal on %d, WordTokenize equal on %d", len(gs), len(gs)-badS, len(gs)-badW)
}
