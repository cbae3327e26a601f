package tokenizer

import (
	"compress/gzip"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"sync"
	"testing"
)

// referenceDir is where the real GPT-2 and Qwen2 tokenizer files live in the repository
// (see testdata/reference/PROVENANCE.md): tokenizer.json gzip-compressed, the rest as published.
const referenceDir = "testdata/reference"

var (
	loadOnce   = map[string]*sync.Once{"gpt2": {}, "qwen2": {}}
	loaded     = map[string]*Tokenizer{}
	loadErrors = map[string]error{}
)

// reference returns the real GPT-2 or Qwen2 tokenizer, loaded once per test binary.
func reference(t testing.TB, name string) *Tokenizer {
	t.Helper()
	loadOnce[name].Do(func() { loaded[name], loadErrors[name] = loadReference(name) })
	if loadErrors[name] != nil {
		t.Fatalf("load reference tokenizer %s: %v", name, loadErrors[name])
	}
	return loaded[name]
}

// loadReference rebuilds the model directory as Hugging Face ships it (tokenizer.json beside its
// configs) in a temporary directory and loads that with Load, so the tests cover the real
// loading path; Load reads everything up front, so the directory goes away at once.
func loadReference(name string) (*Tokenizer, error) {
	src := filepath.Join(referenceDir, name)
	dir, err := os.MkdirTemp("", "autoif-tokenizer-"+name+"-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	entries, err := os.ReadDir(src)
	if err != nil {
		return nil, err
	}
	for _, e := range entries {
		switch filepath.Ext(e.Name()) {
		case ".json":
			err = copyFile(filepath.Join(src, e.Name()), filepath.Join(dir, e.Name()), false)
		case ".gz":
			err = copyFile(filepath.Join(src, e.Name()), filepath.Join(dir, e.Name()[:len(e.Name())-len(".gz")]), true)
		}
		if err != nil {
			return nil, err
		}
	}
	return Load(dir)
}

func copyFile(from, to string, gunzip bool) error {
	in, err := os.Open(from)
	if err != nil {
		return err
	}
	defer in.Close()
	var r io.Reader = in
	if gunzip {
		zr, err := gzip.NewReader(in)
		if err != nil {
			return err
		}
		r = zr
	}
	out, err := os.Create(to)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, r); err != nil {
		out.Close()
		return err
	}
	return out.Close()
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
