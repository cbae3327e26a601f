package model

import (
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"testing"
)

// goldenDirs are written by scripts/torch_golden.py, an independent PyTorch implementation:
// GQA and MHA, q/k/v (and o) bias on and off, tied and untied, rope_theta 1e4, 5e5 and 1e6,
// llama3 RoPE scaling, head_dim != hidden/heads, F32, BF16 and F16 files.
var goldenDirs = []string{
	"llama_mha_tied_f32",
	"llama_gqa_untied_bf16",
	"qwen2_gqa_bias_f32",
	"qwen2_mha_tied_bf16",
	"qwen2_gqa_untied_f16",
	"llama_bias_headdim_rope3_f32",
}

func loadGolden(t *testing.T, name string) (*Model, []int, []float32) {
	t.Helper()
	dir := filepath.Join("testdata", "golden", name)
	// The sampler's load: BF16 and F16 files keep their dtype, so the torch comparison checks
	// the half-precision kernels too.
	m, err := LoadModel(dir, LoadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(filepath.Join(dir, "tokens.json"))
	if err != nil {
		t.Fatal(err)
	}
	var tokens []int
	if err := json.Unmarshal(data, &tokens); err != nil {
		t.Fatal(err)
	}
	st, err := OpenSafetensors(filepath.Join(dir, "logits.safetensors"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	want, err := st.Read(st.Tensors[0])
	if err != nil {
		t.Fatal(err)
	}
	return m, tokens, want
}

func maxAbsDiff(a, b []float32) float64 {
	if len(a) != len(b) {
		return math.Inf(1)
	}
	var d float64
	for i := range a {
		d = max(d, math.Abs(float64(a[i]-b[i])))
	}
	return d
}

func TestForwardMatchesTorchGolden(t *testing.T) {
	for _, name := range goldenDirs {
		t.Run(name, func(t *testing.T) {
			m, tokens, want := loadGolden(t, name)
			kc := m.NewCache(1, len(tokens))
			got, err := m.Forward(kc, [][]int{tokens}, true)
			if err != nil {
				t.Fatal(err)
			}
			d := maxAbsDiff(got[0], want)
			t.Logf("max abs logit difference from torch: %g", d)
			if d > 1e-4 {
				t.Errorf("max abs logit difference from torch %g, want <= 1e-4", d)
			}
		})
	}
}

func TestKVCacheDecodeMatchesFullForward(t *testing.T) {
	for _, name := range goldenDirs {
		t.Run(name, func(t *testing.T) {
			m, tokens, want := loadGolden(t, name)
			v := m.Config.VocabSize
			// Prefill a few tokens, then one token at a time.
			kc := m.NewCache(1, len(tokens))
			const prefill = 5
			got, err := m.Forward(kc, [][]int{tokens[:prefill]}, true)
			if err != nil {
				t.Fatal(err)
			}
			all := append([]float32(nil), got[0]...)
			for _, tok := range tokens[prefill:] {
				got, err := m.Forward(kc, [][]int{{tok}}, false)
				if err != nil {
					t.Fatal(err)
				}
				all = append(all, got[0]...)
			}
			if len(all) != len(tokens)*v {
				t.Fatalf("got %d logits, want %d", len(all), len(tokens)*v)
			}
			if d := maxAbsDiff(all, want); d > 1e-4 {
				t.Errorf("step-by-step decode differs from torch full forward by %g", d)
			}
		})
	}
}

// Batched rows of different lengths need no padding: each row has its own positions.
func TestBatchedDecodeWithDifferentLengthsMatchesUnbatched(t *testing.T) {
	m, tokens, _ := loadGolden(t, "qwen2_gqa_bias_f32")
	prompts := [][]int{tokens[:3], tokens[2:12], tokens[5:6], tokens[:17]}
	steps := []int{7, 11, 13}

	batch := m.NewCache(len(prompts), 32)
	got, err := m.Forward(batch, prompts, false)
	if err != nil {
		t.Fatal(err)
	}
	batched := [][][]float32{got}
	for _, s := range steps {
		in := make([][]int, len(prompts))
		for i := range in {
			in[i] = []int{(s + i) % m.Config.VocabSize}
		}
		got, err := m.Forward(batch, in, false)
		if err != nil {
			t.Fatal(err)
		}
		batched = append(batched, got)
	}
	for i, p := range prompts {
		kc := m.NewCache(1, 32)
		got, err := m.Forward(kc, [][]int{p}, false)
		if err != nil {
			t.Fatal(err)
		}
		if d := maxAbsDiff(got[0], batched[0][i]); d > 1e-5 {
			t.Errorf("row %d prefill: batched differs from alone by %g", i, d)
		}
		for k, s := range steps {
			got, err := m.Forward(kc, [][]int{{(s + i) % m.Config.VocabSize}}, false)
			if err != nil {
				t.Fatal(err)
			}
			if d := maxAbsDiff(got[0], batched[k+1][i]); d > 1e-5 {
				t.Errorf("row %d step %d: batched differs from alone by %g", i, k, d)
			}
		}
	}
}
