package model

import (
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func tinyConfig(arch string) *Config {
	eos := 2
	return &Config{
		Architecture: arch, HiddenSize: 16, IntermediateSize: 24, NumHiddenLayers: 2,
		NumAttentionHeads: 4, NumKeyValueHeads: 2, HeadDim: 4, RMSNormEps: 1e-6, RopeTheta: 1e4,
		VocabSize: 40, MaxPositionEmbeddings: 64, QKVBias: arch == ArchQwen2,
		EOSTokenIDs: []int{eos}, InitializerRange: 0.02,
	}
}

func TestSaveLoadRoundTrip(t *testing.T) {
	for _, tc := range []struct {
		name  string
		arch  string
		tied  bool
		dtype DType
	}{
		{"llama untied f32", ArchLlama, false, F32},
		{"qwen2 tied bf16", ArchQwen2, true, BF16},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := tinyConfig(tc.arch)
			cfg.TieWordEmbeddings = tc.tied
			w, err := Init(cfg, 7)
			if err != nil {
				t.Fatal(err)
			}
			dir := filepath.Join(t.TempDir(), "ckpt")
			if err := w.Save(dir, SaveOptions{DType: tc.dtype}); err != nil {
				t.Fatal(err)
			}
			got, err := Load(dir)
			if err != nil {
				t.Fatal(err)
			}
			if got.Config.Architecture != tc.arch || got.Config.TieWordEmbeddings != tc.tied || got.Config.QKVBias != cfg.QKVBias {
				t.Errorf("config came back as %+v", got.Config)
			}
			if tc.tied != (got.LMHead == got.EmbedTokens) {
				t.Errorf("tied %v but lm_head shares embedding: %v", tc.tied, got.LMHead == got.EmbedTokens)
			}
			want := w.Tensors()
			for i, g := range got.Tensors() {
				if g.Name != want[i].Name {
					t.Fatalf("tensor %d is %s, want %s", i, g.Name, want[i].Name)
				}
				for j := range g.Data {
					tol := 0.0
					if tc.dtype == BF16 {
						tol = math.Abs(float64(want[i].Data[j])) / 128
					}
					if math.Abs(float64(g.Data[j]-want[i].Data[j])) > tol {
						t.Fatalf("%s[%d] = %v, want %v", g.Name, j, g.Data[j], want[i].Data[j])
					}
				}
			}
			for _, f := range []string{"config.json", "generation_config.json", "model.safetensors"} {
				if _, err := os.Stat(filepath.Join(dir, f)); err != nil {
					t.Error(err)
				}
			}
		})
	}
}

func TestSaveReplacesExistingCheckpointAndLeavesNoTempFiles(t *testing.T) {
	parent := t.TempDir()
	dir := filepath.Join(parent, "ckpt")
	tokDir := t.TempDir()
	os.WriteFile(filepath.Join(tokDir, "tokenizer.json"), []byte(`{"model":{}}`), 0o644)
	for seed := uint64(1); seed <= 2; seed++ {
		w, _ := Init(tinyConfig(ArchLlama), seed)
		if err := w.Save(dir, SaveOptions{TokenizerDir: tokDir}); err != nil {
			t.Fatal(err)
		}
	}
	entries, _ := os.ReadDir(parent)
	if len(entries) != 1 || entries[0].Name() != "ckpt" {
		t.Errorf("parent holds %v, want only ckpt", entries)
	}
	if _, err := os.Stat(filepath.Join(dir, "tokenizer.json")); err != nil {
		t.Error("tokenizer.json not copied:", err)
	}
	got, err := Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	w2, _ := Init(tinyConfig(ArchLlama), 2)
	if got.EmbedTokens.Data[0] != w2.EmbedTokens.Data[0] {
		t.Error("second save did not replace the first")
	}
}

func TestInitIsSeededLikeHF(t *testing.T) {
	cfg := tinyConfig(ArchQwen2)
	a, _ := Init(cfg, 1)
	b, _ := Init(cfg, 1)
	c, _ := Init(cfg, 2)
	if !slices.Equal(a.Layers[1].QProj.Weight.Data, b.Layers[1].QProj.Weight.Data) {
		t.Error("same seed gave different weights")
	}
	if slices.Equal(a.Layers[1].QProj.Weight.Data, c.Layers[1].QProj.Weight.Data) {
		t.Error("different seeds gave the same weights")
	}
	var sum, sq float64
	d := a.EmbedTokens.Data
	for _, v := range d {
		sum += float64(v)
		sq += float64(v) * float64(v)
	}
	std := math.Sqrt(sq/float64(len(d)) - (sum/float64(len(d)))*(sum/float64(len(d))))
	if math.Abs(std-0.02) > 0.003 {
		t.Errorf("embedding std %g, want about 0.02", std)
	}
	if a.Layers[0].InputLayernorm.Data[3] != 1 || a.Layers[0].QProj.Bias.Data[0] != 0 {
		t.Error("norms should start at one and biases at zero")
	}
}

// writeCheckpoint saves tensors (possibly tampered with) next to a config.
func writeCheckpoint(t *testing.T, cfg *Config, tensors []*Tensor) string {
	t.Helper()
	dir := t.TempDir()
	cj, _ := json.Marshal(cfg)
	os.WriteFile(filepath.Join(dir, "config.json"), cj, 0o644)
	if err := WriteSafetensors(filepath.Join(dir, "model.safetensors"), tensors, F32, nil); err != nil {
		t.Fatal(err)
	}
	return dir
}

func TestLoadRejectsCheckpointsThatDisagreeWithConfig(t *testing.T) {
	cases := []struct {
		name    string
		tamper  func(ts []*Tensor) []*Tensor
		wantErr string
	}{
		{"missing tensor", func(ts []*Tensor) []*Tensor {
			var out []*Tensor
			for _, x := range ts {
				if x.Name != "model.layers.1.mlp.up_proj.weight" {
					out = append(out, x)
				}
			}
			return out
		}, "model.layers.1.mlp.up_proj.weight missing"},
		{"wrong shape", func(ts []*Tensor) []*Tensor {
			for _, x := range ts {
				if x.Name == "model.layers.0.self_attn.k_proj.weight" {
					x.Shape = []int{x.Shape[1], x.Shape[0]}
				}
			}
			return ts
		}, "model.layers.0.self_attn.k_proj.weight has shape"},
		{"NaN weight", func(ts []*Tensor) []*Tensor {
			for _, x := range ts {
				if x.Name == "model.norm.weight" {
					x.Data[3] = float32(math.NaN())
				}
			}
			return ts
		}, "model.norm.weight: non-finite"},
		{"extra layer", func(ts []*Tensor) []*Tensor {
			return append(ts, &Tensor{Name: "model.layers.9.input_layernorm.weight", Shape: []int{16}, Data: make([]float32, 16)})
		}, "unexpected tensor model.layers.9.input_layernorm.weight"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cfg := tinyConfig(ArchLlama)
			w, _ := Init(cfg, 3)
			var ts []*Tensor
			for _, x := range w.Tensors() {
				c := *x
				c.Data = append([]float32(nil), x.Data...)
				ts = append(ts, &c)
			}
			dir := writeCheckpoint(t, cfg, tc.tamper(ts))
			_, err := Load(dir)
			if err == nil {
				t.Fatal("loaded without error")
			}
			if !strings.Contains(err.Error(), tc.wantErr) || !strings.Contains(err.Error(), dir) {
				t.Errorf("error %q should name %s and say %q", err, dir, tc.wantErr)
			}
		})
	}
}

func TestParseConfig(t *testing.T) {
	base := func(extra string) string {
		return `{"architectures":["LlamaForCausalLM"],"hidden_size":16,"intermediate_size":24,"num_hidden_layers":1,
			"num_attention_heads":4,"vocab_size":40,"max_position_embeddings":64` + extra + `}`
	}
	cases := []struct {
		name    string
		json    string
		wantErr string
		check   func(*Config) bool
	}{
		{"llama defaults", base(``), "", func(c *Config) bool {
			return c.NumKeyValueHeads == 4 && c.HeadDim == 4 && c.RopeTheta == 1e4 && !c.QKVBias && !c.TieWordEmbeddings
		}},
		{"llama attention_bias covers o_proj", base(`,"attention_bias":true`), "", func(c *Config) bool { return c.QKVBias && c.OBias }},
		{"qwen2 always has qkv bias", strings.Replace(base(``), "LlamaForCausalLM", "Qwen2ForCausalLM", 1), "", func(c *Config) bool { return c.QKVBias && !c.OBias }},
		{"eos list", base(`,"eos_token_id":[2,3],"bos_token_id":1`), "", func(c *Config) bool { return len(c.EOSTokenIDs) == 2 && *c.BOSTokenID == 1 }},
		{"explicit head_dim", base(`,"head_dim":8`), "", func(c *Config) bool { return c.HeadDim == 8 }},
		{"llama3 rope scaling", base(`,"rope_scaling":{"rope_type":"llama3","factor":8,"low_freq_factor":1,"high_freq_factor":4,"original_max_position_embeddings":8192}`), "", func(c *Config) bool {
			return c.RopeScaling != nil && c.RopeScaling.Factor == 8
		}},
		{"null rope scaling", base(`,"rope_scaling":null`), "", func(c *Config) bool { return c.RopeScaling == nil }},
		{"unknown architecture", strings.Replace(base(``), "LlamaForCausalLM", "MistralForCausalLM", 1), "unknown architecture", nil},
		{"yarn rope scaling", base(`,"rope_scaling":{"type":"yarn","factor":4}`), `rope_scaling type "yarn"`, nil},
		{"linear rope scaling", base(`,"rope_scaling":{"rope_type":"linear","factor":2}`), `rope_scaling type "linear"`, nil},
		{"sliding window", strings.Replace(base(`,"use_sliding_window":true`), "LlamaForCausalLM", "Qwen2ForCausalLM", 1), "use_sliding_window", nil},
		{"mlp bias", base(`,"mlp_bias":true`), "mlp_bias", nil},
		{"gelu", base(`,"hidden_act":"gelu"`), "hidden_act", nil},
		{"heads not multiple of kv heads", base(`,"num_key_value_heads":3`), "multiple", nil},
		{"eos outside vocab", base(`,"eos_token_id":40`), "eos_token_id", nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c, err := ParseConfig([]byte(tc.json))
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("error %v, want one mentioning %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !tc.check(c) {
				t.Errorf("parsed %+v", c)
			}
			// What we write must parse back to the same shape.
			out, _ := json.Marshal(c)
			c2, err := ParseConfig(out)
			if err != nil {
				t.Fatalf("re-parse of written config: %v\n%s", err, out)
			}
			if !tc.check(c2) {
				t.Errorf("written config re-parsed as %+v", c2)
			}
		})
	}
}

func TestCloneIsDeepAndKeepsTying(t *testing.T) {
	cfg := tinyConfig(ArchQwen2)
	cfg.TieWordEmbeddings = true
	w, _ := Init(cfg, 4)
	c := w.Clone()
	c.Layers[0].QProj.Bias.Data[0] = 5
	c.EmbedTokens.Data[0] = 7
	if w.Layers[0].QProj.Bias.Data[0] == 5 || w.EmbedTokens.Data[0] == 7 {
		t.Error("writing the clone changed the original")
	}
	if c.LMHead != c.EmbedTokens || c.LMHead.Data[0] != 7 {
		t.Error("the clone's lm_head is not tied to its own embedding")
	}
}

// LoadModel and LoadWeights of the same checkpoint files share one read-only copy (a LoRA
// run's sampler and trainer hold the base once); a checkpoint saved anew, or Load, gets its
// own.
func TestHalfLoadsOfOneCheckpointShareTheirWeights(t *testing.T) {
	cfg := tinyConfig(ArchQwen2)
	w, err := Init(cfg, 1)
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(t.TempDir(), "ckpt")
	if err := w.Save(dir, SaveOptions{DType: BF16}); err != nil {
		t.Fatal(err)
	}
	a, err := LoadWeights(dir, LoadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	m, err := LoadModel(dir, LoadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	bits, dt := a.Layers[0].QProj.Weight.Half()
	if dt != BF16 || bits == nil {
		t.Fatalf("LoadWeights kept %s, want BF16 bits", dt)
	}
	if &m.layers[0].q.w.half[0] != &bits[0] {
		t.Error("LoadModel and LoadWeights of one checkpoint hold two copies of its weights")
	}
	own, err := Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	if own.Layers[0].QProj.Weight.Data == nil {
		t.Error("Load must give float32 weights of its own")
	}
	w.Layers[0].QProj.Weight.Data[0] += 1
	if err := w.Save(dir, SaveOptions{DType: BF16}); err != nil {
		t.Fatal(err)
	}
	b, err := LoadWeights(dir, LoadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if nb, _ := b.Layers[0].QProj.Weight.Half(); &nb[0] == &bits[0] {
		t.Error("a checkpoint saved anew loaded as the old shared copy")
	}
}
