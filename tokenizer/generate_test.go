package tokenizer

import (
	"bytes"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

var trainingCorpus = []string{
	"The quick brown fox jumps over the lazy dog. The dog sleeps.",
	"Instruction following: answer in exactly three sentences. Then stop.",
	"def evaluate(response):\n    return len(response.split()) < 100\n",
	"the the the then there these those they them",
}

func TestGeneratedByteLevelTokenizerLoadsAndRoundTrips(t *testing.T) {
	files, err := NewByteLevelJSON(ByteLevelOptions{VocabSize: 280, Corpus: trainingCorpus})
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := files.WriteDir(dir); err != nil {
		t.Fatal(err)
	}
	tok, err := Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	if got := tok.VocabSize(); got != 280 {
		t.Errorf("VocabSize = %d, want 280", got)
	}
	for i, s := range []string{"<|endoftext|>", "<|im_start|>", "<|im_end|>"} {
		if id, ok := tok.TokenID(s); !ok || id != 277+i || !tok.IsSpecial(id) {
			t.Errorf("TokenID(%q) = %d, %v; want special id %d", s, id, ok, 277+i)
		}
	}
	if eos, ok := tok.EOS(); !ok || eos != 279 {
		t.Errorf("EOS = %d, %v; want <|im_end|> = 279", eos, ok)
	}
	text := "The quick dog: the end.\n"
	ids := tok.Encode(text, true)
	if len(ids) >= len(text) {
		t.Errorf("learned merges did not shorten %q: %d ids for %d bytes", text, len(ids), len(text))
	}
	if back, err := tok.Decode(ids); err != nil || back != text {
		t.Errorf("Decode(Encode(%q)) = %q, %v", text, back, err)
	}
	chat, err := tok.ApplyChatTemplate([]Message{{Role: "user", Content: "hi"}}, true)
	if err != nil {
		t.Fatal(err)
	}
	if want := "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"; chat != want {
		t.Errorf("chat = %q, want %q", chat, want)
	}
	if ids := tok.Encode(chat, false); ids[0] != 278 || countOf(ids, 279) != 1 {
		t.Errorf("chat ids %v lack <|im_start|>/<|im_end|>", ids)
	}
}

func TestGeneratedTokenizerWithoutCorpusIsPureBytes(t *testing.T) {
	files, err := NewByteLevelJSON(ByteLevelOptions{})
	if err != nil {
		t.Fatal(err)
	}
	tok, err := FromJSON(files.TokenizerJSON)
	if err != nil {
		t.Fatal(err)
	}
	ids := tok.Encode("hé", false)
	if want := []int{'h', 0xc3, 0xa9}; !slices.Equal(ids, want) {
		t.Fatalf("Encode = %v, want the bytes %v", ids, want)
	}
	if tok.VocabSize() != 259 {
		t.Fatalf("VocabSize = %d, want 256 bytes + 3 specials", tok.VocabSize())
	}
}

func TestGeneratedTokenizerIsDeterministicAndReadable(t *testing.T) {
	a, err := NewByteLevelJSON(ByteLevelOptions{VocabSize: 320, Corpus: trainingCorpus})
	if err != nil {
		t.Fatal(err)
	}
	b, err := NewByteLevelJSON(ByteLevelOptions{VocabSize: 320, Corpus: trainingCorpus})
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(a.TokenizerJSON, b.TokenizerJSON) || !bytes.Equal(a.TokenizerConfigJSON, b.TokenizerConfigJSON) {
		t.Fatal("two runs over the same corpus wrote different files")
	}
	var f struct {
		Model struct {
			Vocab  map[string]int `json:"vocab"`
			Merges []string       `json:"merges"`
		} `json:"model"`
	}
	if err := json.Unmarshal(a.TokenizerJSON, &f); err != nil {
		t.Fatal(err)
	}
	if f.Model.Vocab["Ġ"] != ' ' || f.Model.Vocab["a"] != 'a' || len(f.Model.Merges) == 0 {
		t.Fatalf("vocab/merges not in GPT-2 byte-level spelling: Ġ=%d a=%d merges=%d", f.Model.Vocab["Ġ"], f.Model.Vocab["a"], len(f.Model.Merges))
	}
	if !strings.Contains(string(a.TokenizerConfigJSON), `"eos_token": "<|im_end|>"`) {
		t.Fatalf("tokenizer_config.json lacks eos_token <|im_end|>:\n%s", a.TokenizerConfigJSON)
	}
}

func TestGeneratorRejectsImpossibleOptions(t *testing.T) {
	for name, opts := range map[string]ByteLevelOptions{
		"vocab below bytes+specials": {VocabSize: 100},
		"merges without corpus":      {VocabSize: 400},
		"repeated special":           {ExtraSpecialTokens: []string{"<|im_end|>"}},
	} {
		if _, err := NewByteLevelJSON(opts); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

func TestWriteDirLeavesNoTemporaryFiles(t *testing.T) {
	files, err := NewByteLevelJSON(ByteLevelOptions{})
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := files.WriteDir(dir); err != nil {
		t.Fatal(err)
	}
	entries, _ := os.ReadDir(dir)
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	if strings.Join(names, ",") != "tokenizer.json,tokenizer_config.json" {
		t.Fatalf("dir holds %v", names)
	}
	if err := files.WriteDir(filepath.Join(dir, "missing")); err == nil {
		t.Fatal("writing into a missing directory succeeded")
	}
}

func TestTrainerStopsWhenPairsAreRare(t *testing.T) {
	tokens, merges := trainBPE([]string{"abcd"}, 1000, 2)
	if len(merges) != 0 || len(tokens) != 256 {
		t.Fatalf("merged pairs seen once: %d merges", len(merges))
	}
	tokens, merges = trainBPE([]string{"abab abab"}, 1000, 2)
	if len(merges) == 0 || string(tokens[merges[0][0]])+string(tokens[merges[0][1]]) != "ab" {
		t.Fatalf("first merge of \"abab abab\" should be a+b, got %v", merges)
	}
}

var update = flag.Bool("update", false, "rewrite testdata/bytelevel from NewByteLevelJSON")

// The generator's output for a fixed corpus is pinned in testdata/bytelevel
// (regenerate with go test -run Golden -update, then rerun gen_vectors.py).
func TestGeneratedTokenizerMatchesGolden(t *testing.T) {
	corpus, err := os.ReadFile("testdata/bytelevel_corpus.txt")
	if err != nil {
		t.Fatal(err)
	}
	files, err := NewByteLevelJSON(ByteLevelOptions{VocabSize: 400, Corpus: []string{string(corpus)}})
	if err != nil {
		t.Fatal(err)
	}
	if *update {
		if err := os.MkdirAll("testdata/bytelevel", 0o755); err != nil {
			t.Fatal(err)
		}
		if err := files.WriteDir("testdata/bytelevel"); err != nil {
			t.Fatal(err)
		}
	}
	golden, err := os.ReadFile("testdata/bytelevel/tokenizer.json")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(files.TokenizerJSON, golden) {
		t.Fatal("NewByteLevelJSON output differs from testdata/bytelevel/tokenizer.json")
	}
}

// testdata/vectors.json "bytelevel": ids from gen_vectors.py's independent
// BPE over the vocab and merges of the generated tokenizer.json.
func TestGeneratedTokenizerEncodesLikeReferenceBPE(t *testing.T) {
	var file struct {
		ByteLevel []vector `json:"bytelevel"`
	}
	readJSONFile(t, "testdata/vectors.json", &file)
	if len(file.ByteLevel) == 0 {
		t.Fatal("no bytelevel vectors")
	}
	tok, err := Load("testdata/bytelevel")
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range file.ByteLevel {
		got := tok.Encode(v.Text, false)
		if !slices.Equal(got, v.IDs) {
			t.Errorf("%s: Encode(%q)\n got %v\nwant %v", v.Name, v.Text, got, v.IDs)
		}
	}
}
