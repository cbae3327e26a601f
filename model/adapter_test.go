package model

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// trainedAdapter is a fresh adapter with B drawn too, so it changes the model's output (a
// fresh PEFT adapter has B = 0 and changes nothing).
func trainedAdapter(t *testing.T, cfg *Config, lc LoRAConfig) *Adapter {
	t.Helper()
	a, err := NewAdapter(cfg, lc, 3)
	if err != nil {
		t.Fatal(err)
	}
	other, _ := NewAdapter(cfg, lc, 4)
	for i := range a.Layers {
		for tg, p := range a.Layers[i] {
			for j := range p.B.Data {
				p.B.Data[j] = other.Layers[i][tg].A.Data[j%len(other.Layers[i][tg].A.Data)]
			}
		}
	}
	return a
}

func allTargets(r int) LoRAConfig {
	return LoRAConfig{Rank: r, Alpha: 2 * float64(r), Targets: LoRATargets}
}

func TestFreshAdapterLeavesTheModelAsItWas(t *testing.T) {
	cfg := tinyConfig(ArchQwen2)
	w, _ := Init(cfg, 1)
	a, err := NewAdapter(cfg, allTargets(4), 1)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range a.Layers[0] {
		if slices.ContainsFunc(p.B.Data, func(v float32) bool { return v != 0 }) {
			t.Fatal("a fresh adapter's B must be zero, as PEFT initialises it")
		}
	}
	tokens := []int{1, 5, 9, 33}
	base := New(w)
	adapted, err := base.WithAdapter(a)
	if err != nil {
		t.Fatal(err)
	}
	want, _ := base.Forward(base.NewCache(1, 8), [][]int{tokens}, true)
	got, _ := adapted.Forward(adapted.NewCache(1, 8), [][]int{tokens}, true)
	if d := maxAbsDiff(got[0], want[0]); d != 0 {
		t.Errorf("fresh adapter changed the logits by %g", d)
	}
}

// A model run with an adapter equals the model whose weights have the adapter merged in
// (what `autoif model merge` writes), and the base model it came from is left untouched.
func TestAdapterForwardEqualsMergedWeights(t *testing.T) {
	for _, arch := range []string{ArchQwen2, ArchLlama} {
		t.Run(arch, func(t *testing.T) {
			cfg := tinyConfig(arch)
			cfg.InitializerRange = 0.3
			w, _ := Init(cfg, 2)
			a := trainedAdapter(t, cfg, LoRAConfig{Rank: 4, Alpha: 8, Targets: LoRATargets})
			tokens := []int{1, 5, 9, 33, 2, 17}
			base := New(w)
			before, _ := base.Forward(base.NewCache(1, 8), [][]int{tokens}, true)
			adapted, err := base.WithAdapter(a)
			if err != nil {
				t.Fatal(err)
			}
			got, _ := adapted.Forward(adapted.NewCache(1, 8), [][]int{tokens}, true)
			after, _ := base.Forward(base.NewCache(1, 8), [][]int{tokens}, true)
			if d := maxAbsDiff(before[0], after[0]); d != 0 {
				t.Fatalf("WithAdapter changed the base model's logits by %g", d)
			}
			if d := maxAbsDiff(got[0], before[0]); d < 1e-3 {
				t.Fatalf("the adapter changed the logits by only %g: the test would not see a wrong merge", d)
			}
			merged := w.Clone()
			if err := a.Merge(merged); err != nil {
				t.Fatal(err)
			}
			mm := New(merged)
			want, _ := mm.Forward(mm.NewCache(1, 8), [][]int{tokens}, true)
			if d := maxAbsDiff(got[0], want[0]); d > 1e-4 {
				t.Errorf("adapter forward and merged weights differ by %g", d)
			}
			// Batched decode with the adapter: each row as alone.
			kc := adapted.NewCache(2, 8)
			rows, _ := adapted.Forward(kc, [][]int{tokens[:3], tokens[:5]}, false)
			one, _ := adapted.Forward(adapted.NewCache(1, 8), [][]int{tokens[:5]}, false)
			if d := maxAbsDiff(rows[1], one[0]); d > 1e-5 {
				t.Errorf("batched adapter forward differs from the row alone by %g", d)
			}
		})
	}
}

func TestAdapterSaveLoadUsesPEFTNames(t *testing.T) {
	cfg := tinyConfig(ArchQwen2)
	a := trainedAdapter(t, cfg, LoRAConfig{Rank: 2, Alpha: 16, Dropout: 0.05, Targets: []string{"v_proj", "q_proj", "down_proj"}})
	a.BaseModel = "Qwen/Qwen2.5-0.5B-Instruct"
	dir := filepath.Join(t.TempDir(), "adapter")
	if err := a.Save(dir); err != nil {
		t.Fatal(err)
	}
	if !IsAdapter(dir) {
		t.Fatal("IsAdapter false on a saved adapter")
	}
	raw, _ := os.ReadFile(filepath.Join(dir, AdapterConfigFile))
	var pc map[string]any
	if err := json.Unmarshal(raw, &pc); err != nil {
		t.Fatal(err)
	}
	for k, want := range map[string]any{"peft_type": "LORA", "task_type": "CAUSAL_LM", "r": 2.0, "lora_alpha": 16.0,
		"lora_dropout": 0.05, "bias": "none", "base_model_name_or_path": "Qwen/Qwen2.5-0.5B-Instruct"} {
		if pc[k] != want {
			t.Errorf("adapter_config.json %s = %v, want %v", k, pc[k], want)
		}
	}
	if got := pc["target_modules"]; !slices.Equal(toStrings(got), []string{"q_proj", "v_proj", "down_proj"}) {
		t.Errorf("target_modules = %v", got)
	}
	sf, err := OpenSafetensors(filepath.Join(dir, AdapterWeightsFile))
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, ti := range sf.Tensors {
		names = append(names, ti.Name)
	}
	sf.Close()
	for _, want := range []string{
		"base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight",
		"base_model.model.model.layers.1.self_attn.v_proj.lora_B.weight",
		"base_model.model.model.layers.1.mlp.down_proj.lora_A.weight",
	} {
		if !slices.Contains(names, want) {
			t.Errorf("tensor %s missing from %v", want, names)
		}
	}
	if len(names) != 2*3*cfg.NumHiddenLayers {
		t.Errorf("%d tensors, want %d", len(names), 2*3*cfg.NumHiddenLayers)
	}
	b, err := LoadAdapter(dir)
	if err != nil {
		t.Fatal(err)
	}
	if b.Config.Rank != 2 || b.Config.Alpha != 16 || b.Config.Dropout != 0.05 || b.Config.Scale() != 8 ||
		!slices.Equal(b.Config.Targets, []string{"q_proj", "v_proj", "down_proj"}) {
		t.Errorf("loaded config %+v", b.Config)
	}
	for i := range a.Layers {
		for tg, p := range a.Layers[i] {
			q := b.Layers[i][tg]
			if !slices.Equal(p.A.Data, q.A.Data) || !slices.Equal(p.B.Data, q.B.Data) {
				t.Fatalf("layer %d %s differs after a round trip", i, tg)
			}
		}
	}
}

func toStrings(v any) []string {
	var out []string
	for _, x := range v.([]any) {
		out = append(out, x.(string))
	}
	return out
}

// Adapters autoif cannot apply exactly are refused with the reason, not applied wrongly.
func TestLoadAdapterRefusesWhatItCannotApply(t *testing.T) {
	cfg := tinyConfig(ArchQwen2)
	a := trainedAdapter(t, cfg, LoRAConfig{Rank: 2, Alpha: 4, Targets: []string{"q_proj", "v_proj"}})
	edit := func(t *testing.T, key string, val any) string {
		dir := filepath.Join(t.TempDir(), "a")
		if err := a.Save(dir); err != nil {
			t.Fatal(err)
		}
		p := filepath.Join(dir, AdapterConfigFile)
		raw, _ := os.ReadFile(p)
		var m map[string]any
		json.Unmarshal(raw, &m)
		m[key] = val
		raw, _ = json.Marshal(m)
		os.WriteFile(p, raw, 0o644)
		return dir
	}
	for _, tc := range []struct {
		key  string
		val  any
		want string
	}{
		{"use_dora", true, "DoRA"},
		{"peft_type", "PREFIX_TUNING", "only LORA"},
		{"bias", "all", "bias"},
		{"modules_to_save", []string{"lm_head"}, "modules_to_save"},
		{"rank_pattern", map[string]int{"q_proj": 8}, "per-module ranks"},
		{"target_modules", []string{"q_proj"}, "v_proj is not among target_modules"},
		{"r", 3, "rank r=3"},
		{"target_modules", "(", "target_modules"},
	} {
		t.Run(tc.key, func(t *testing.T) {
			_, err := LoadAdapter(edit(t, tc.key, tc.val))
			if err == nil || !strings.Contains(err.Error(), tc.want) || strings.Contains(err.Error(), "\n") {
				t.Errorf("err = %v, want one line naming %q", err, tc.want)
			}
		})
	}
	// PEFT's other spellings of target_modules select the same modules.
	for _, tm := range []any{"all-linear", `.*\.(q_proj|v_proj)`, []string{"self_attn.q_proj", "v_proj"}} {
		if _, err := LoadAdapter(edit(t, "target_modules", tm)); err != nil {
			t.Errorf("target_modules %v: %v", tm, err)
		}
	}
	// An adapter for another shape.
	other := tinyConfig(ArchQwen2)
	other.HiddenSize *= 2
	other.HeadDim *= 2
	if err := a.Fits(other); err == nil || !strings.Contains(err.Error(), "needs A") {
		t.Errorf("Fits on another shape: %v", err)
	}
	if _, err := New(func() *Weights { w, _ := Init(other, 1); return w }()).WithAdapter(a); err == nil {
		t.Error("WithAdapter accepted an adapter of another shape")
	}
	if _, err := NewAdapter(cfg, LoRAConfig{Rank: 4, Alpha: 8, Targets: []string{"lm_head"}}, 1); err == nil {
		t.Error("NewAdapter accepted target lm_head")
	}
}

// An adapter written here, applied by PEFT's naming rules in an independent PyTorch forward
// (scripts/torch_golden.py --check with DIR/adapter), gives the same logits.
func TestAdapterMatchesTorchPEFTRule(t *testing.T) {
	py := torchPython()
	if py == "" {
		t.Skip("no Python with torch")
	}
	cfg := tinyConfig(ArchQwen2)
	cfg.InitializerRange = 0.3
	w, _ := Init(cfg, 5)
	dir := filepath.Join(t.TempDir(), "ckpt")
	if err := w.Save(dir, SaveOptions{DType: BF16}); err != nil {
		t.Fatal(err)
	}
	a := trainedAdapter(t, cfg, LoRAConfig{Rank: 4, Alpha: 8, Targets: LoRATargets, RSLoRA: true})
	if err := a.Save(filepath.Join(dir, "adapter")); err != nil {
		t.Fatal(err)
	}
	tokens := []int{1, 5, 9, 33, 2, 17, 0, 39}
	data, _ := json.Marshal(tokens)
	os.WriteFile(filepath.Join(dir, "tokens.json"), data, 0o644)
	if out, err := exec.Command(py, filepath.Join("..", "scripts", "torch_golden.py"), "--check", dir).CombinedOutput(); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	st, err := OpenSafetensors(filepath.Join(dir, "torch_logits.safetensors"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	want, _ := st.Read(st.Tensors[0])
	m, err := LoadModel(dir, LoadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	ad, err := LoadAdapter(filepath.Join(dir, "adapter"))
	if err != nil {
		t.Fatal(err)
	}
	if m, err = m.WithAdapter(ad); err != nil {
		t.Fatal(err)
	}
	got, _ := m.Forward(m.NewCache(1, len(tokens)), [][]int{tokens}, true)
	if d := maxAbsDiff(got[0], want); d > 1e-4 {
		t.Errorf("logits with the adapter differ from torch's PEFT rule by %g", d)
	}
}
