package langdetect

import (
	"bufio"
	"compress/gzip"
	"encoding/json"
	"errors"
	"math"
	"os"
	"testing"
)

// The numbers CPython 3.11 draws after random.Random(0) (printed by /usr/bin/python3).
func TestPyRandomDrawsWhatCPythonDraws(t *testing.T) {
	r := newPyRandom(0)
	for i, want := range []uint32{3626764237, 1654615998, 3255389356} {
		if got := r.getrandbits(32); got != want {
			t.Errorf("getrandbits(32) #%d = %d, want %d", i, got, want)
		}
	}
	r = newPyRandom(0)
	for i, want := range []float64{0.8444218515250481, 0.7579544029403025} {
		if got := r.random(); got != want {
			t.Errorf("random() #%d = %v, want %v", i, got, want)
		}
	}
	// gauss draws a Box-Muller pair and returns its second half on the next call. Its
	// inputs are CPython's bit for bit, but Go's math.Log, Cos and Sin may round the last
	// bit differently from glibc's (here the second value is one ulp away), so the values
	// may differ by an ulp or two and no more.
	r = newPyRandom(0)
	for i, want := range []float64{0.9417154046806644, -1.3965781047011498, -0.6797144480784211, 0.3705035674606598} {
		if got := r.gauss(0, 1); ulps(got, want) > 2 {
			t.Errorf("gauss() #%d = %v, want %v", i, got, want)
		}
	}
	r = newPyRandom(0)
	for i, want := range []int{864, 394, 776, 911, 430} {
		if got := r.below(1000); got != want {
			t.Errorf("choice(range(1000)) #%d = %d, want %d", i, got, want)
		}
	}
	for i, want := range []int{0, 2, 4, 3, 3} {
		if got := r.below(7); got != want {
			t.Errorf("choice(range(7)) #%d = %d, want %d", i, got, want)
		}
	}
}

// golden is one line of testdata/goldens.jsonl.gz, written by scripts/nlp_goldens.py:
// langdetect.detect(text) with DetectorFactory.seed = 0, or "error: <message>".
type golden struct {
	Text  string             `json:"text"`
	Lang  string             `json:"lang"`
	Probs map[string]float64 `json:"probs"` // every language above 1e-4
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

// detectAsPython renders Detect's result the way the golden file records langdetect's.
func detectAsPython(text string) string {
	lang, err := Detect(text)
	if errors.Is(err, ErrNoFeatures) {
		return "error: No features in text."
	}
	if err != nil {
		return "error: " + err.Error()
	}
	return lang
}

func agreement(t *testing.T, gs []golden) (bad int) {
	for i, g := range gs {
		if got := detectAsPython(g.Text); got != g.Lang {
			bad++
			if bad <= 5 {
				t.Errorf("golden %d %q: got %q, want %q", i, trunc(g.Text), got, g.Lang)
			}
		}
	}
	return bad
}

func TestDetectMatchesLangdetectGoldens(t *testing.T) {
	gs := readGoldens(t, "testdata/goldens.jsonl.gz")
	if len(gs) < 1000 {
		t.Fatalf("only %d goldens", len(gs))
	}
	if bad := agreement(t, gs); bad > 0 {
		t.Errorf("%d of %d goldens differ", bad, len(gs))
	}
}

// The averaged probabilities depend on every n-gram the trials drew, so equal probabilities
// mean the ported random stream chose the same n-grams as Python's. They may differ in the
// last bits only: Python adds them up in os.listdir order, this port in name order.
func TestProbabilitiesMatchLangdetectGoldens(t *testing.T) {
	m := defaultModel()
	gs := readGoldens(t, "testdata/goldens.jsonl.gz")
	checked := 0
	for i, g := range gs {
		probs, err := m.probabilities(g.Text)
		if err != nil {
			if len(g.Probs) != 0 {
				t.Errorf("golden %d: %v, want probabilities %v", i, err, g.Probs)
			}
			continue
		}
		for j, lang := range m.langs {
			want := g.Probs[lang] // 0 when langdetect gave 1e-4 or less
			if want == 0 && probs[j] <= 1e-4 {
				continue
			}
			if math.Abs(probs[j]-want) > 1e-12 {
				t.Errorf("golden %d %q: p(%s) = %v, want %v", i, trunc(g.Text), lang, probs[j], want)
			}
		}
		checked++
	}
	if checked < 1000 {
		t.Errorf("only %d goldens with probabilities", checked)
	}
}

func trunc(s string) string {
	if len(s) > 200 {
		return s[:200] + "…"
	}
	return s
}

// ulps is the distance between two finite floats of the same sign in units in the last place.
func ulps(a, b float64) uint64 {
	x, y := math.Float64bits(a), math.Float64bits(b)
	if x > y {
		return x - y
	}
	return y - x
}
