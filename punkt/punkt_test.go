package punkt

import (
	"bufio"
	"compress/gzip"
	"encoding/json"
	"os"
	"reflect"
	"testing"
)

// golden is one line of testdata/goldens.jsonl.gz, written by scripts/nlp_goldens.py with
// NLTK 3.8: tokenize(text) and word_tokenize(text).
type golden struct {
	Text      string   `json:"text"`
	Sentences []string `json:"sentences"`
	Words     []string `json:"words"`
}

func readGoldens(t testing.TB, path string) []golden {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	z, err := gzip.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	var out []golden
	sc := bufio.NewScanner(z)
	sc.Buffer(make([]byte, 1<<20), 1<<26)
	for sc.Scan() {
		var g golden
		if err := json.Unmarshal(sc.Bytes(), &g); err != nil {
			t.Fatal(err)
		}
		out = append(out, g)
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// nonNil makes an empty result compare equal to JSON's [].
func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

func TestSentencesMatchNLTKGoldens(t *testing.T) {
	gs := readGoldens(t, "testdata/goldens.jsonl.gz")
	if len(gs) < 500 {
		t.Fatalf("only %d goldens", len(gs))
	}
	tok := English()
	bad := 0
	for i, g := range gs {
		if got := nonNil(tok.Sentences(g.Text)); !reflect.DeepEqual(got, nonNil(g.Sentences)) {
			bad++
			if bad <= 5 {
				t.Errorf("golden %d %q:\n got %q\nwant %q", i, trunc(g.Text), got, g.Sentences)
			}
		}
	}
	if bad > 0 {
		t.Errorf("%d of %d goldens differ", bad, len(gs))
	}
}

func TestWordTokenizeMatchesNLTKGoldens(t *testing.T) {
	gs := readGoldens(t, "testdata/goldens.jsonl.gz")
	bad := 0
	for i, g := range gs {
		if got := nonNil(WordTokenize(g.Text)); !reflect.DeepEqual(got, nonNil(g.Words)) {
			bad++
			if bad <= 5 {
				t.Errorf("golden %d %q:\n got %q\nwant %q", i, trunc(g.Text), got, g.Words)
			}
		}
	}
	if bad > 0 {
		t.Errorf("%d of %d goldens differ", bad, len(gs))
	}
}

func trunc(s string) string {
	if len(s) > 300 {
		return s[:300] + "…"
	}
	return s
}
