package tokenizer

import (
	"encoding/json"
	"os"
	"path/filepath"
	"sync"
	"testing"
)

// sharedTokenizerDir finds the project's reference tokenizer files, which
// live next to the repository (../shared/data relative to its root) or, on
// machines that carry them inside the checkout, under shared/data.
func sharedTokenizerDir(t testing.TB, name string) string {
	t.Helper()
	for _, root := range []string{os.Getenv("AUTOIF_SHARED_DATA"), "../../shared/data", "../shared/data"} {
		if root == "" {
			continue
		}
		dir := filepath.Join(root, "tokenizers", name)
		if _, err := os.Stat(filepath.Join(dir, "tokenizer.json")); err == nil {
			return dir
		}
	}
	// Optional data: a public clone has no ../shared (bringing these files into the
	// repository is issue #16's).
	t.Skipf("reference tokenizer %q not found under ../shared/data/tokenizers (set AUTOIF_SHARED_DATA to a data directory holding tokenizers/%s)", name, name)
	return ""
}

var (
	loadOnce   = map[string]*sync.Once{"gpt2": {}, "qwen2": {}}
	loaded     = map[string]*Tokenizer{}
	loadErrors = map[string]error{}
)

// reference returns the real GPT-2 or Qwen2 tokenizer, loaded once per test binary.
func reference(t testing.TB, name string) *Tokenizer {
	t.Helper()
	dir := sharedTokenizerDir(t, name)
	loadOnce[name].Do(func() { loaded[name], loadErrors[name] = Load(dir) })
	if loadErrors[name] != nil {
		t.Fatalf("Load(%s): %v", dir, loadErrors[name])
	}
	return loaded[name]
}

func readJSONFile(t testing.TB, path string, v any) {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(data, v); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
}
