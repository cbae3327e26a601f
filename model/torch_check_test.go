package model

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
)

var torchPython = sync.OnceValue(func() string {
	// python3 on PATH may be a shim without torch; the system interpreter is the one apt
	// installs torch into.
	for _, p := range []string{"/usr/bin/python3", "python3"} {
		path, err := exec.LookPath(p)
		if err != nil {
			continue
		}
		if exec.Command(path, "-c", "import torch").Run() == nil {
			return path
		}
	}
	return ""
})

// Checkpoints this package writes must read back the same in an independent reader:
// scripts/torch_golden.py --check reads the directory and computes the logits with its own
// forward pass. Skipped where no Python has torch (CI reads only the committed goldens).
func TestSavedCheckpointMatchesTorchReader(t *testing.T) {
	py := torchPython()
	if py == "" {
		t.Skip("no Python with torch")
	}
	for _, tc := range []struct {
		name  string
		arch  string
		tied  bool
		dtype DType
	}{
		{"qwen2 tied bf16", ArchQwen2, true, BF16},
		{"llama untied f32", ArchLlama, false, F32},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := tinyConfig(tc.arch)
			cfg.TieWordEmbeddings = tc.tied
			cfg.InitializerRange = 0.5 // far from uniform logits, so errors show
			w, err := Init(cfg, 11)
			if err != nil {
				t.Fatal(err)
			}
			dir := filepath.Join(t.TempDir(), "ckpt")
			if err := w.Save(dir, SaveOptions{DType: tc.dtype}); err != nil {
				t.Fatal(err)
			}
			tokens := []int{1, 5, 9, 33, 2, 17, 0, 39}
			data, _ := json.Marshal(tokens)
			os.WriteFile(filepath.Join(dir, "tokens.json"), data, 0o644)
			cmd := exec.Command(py, filepath.Join("..", "scripts", "torch_golden.py"), "--check", dir)
			if out, err := cmd.CombinedOutput(); err != nil {
				t.Fatalf("%v: %s", err, out)
			}
			st, err := OpenSafetensors(filepath.Join(dir, "torch_logits.safetensors"))
			if err != nil {
				t.Fatal(err)
			}
			defer st.Close()
			want, _ := st.Read(st.Tensors[0])
			loaded, err := Load(dir)
			if err != nil {
				t.Fatal(err)
			}
			m := New(loaded)
			got, err := m.Forward(m.NewCache(1, len(tokens)), [][]int{tokens}, true)
			if err != nil {
				t.Fatal(err)
			}
			if d := maxAbsDiff(got[0], want); d > 1e-4 {
				t.Errorf("logits differ from torch's reading of the saved checkpoint by %g", d)
			}
		})
	}
}
