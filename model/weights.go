package model

import (
	"encoding/json"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"weak"

	"github.com/autoif/autoif/atomicfile"
)

// Linear is a weight matrix stored as in torch's nn.Linear: Weight is [out, in] row-major, so
// y = x·Weightᵀ + Bias. Bias is nil when the layer has none.
type Linear struct {
	Weight *Tensor
	Bias   *Tensor
}

// Out and In are the matrix dimensions.
func (l Linear) Out() int { return l.Weight.Shape[0] }
func (l Linear) In() int  { return l.Weight.Shape[1] }

// Layer holds one decoder layer; each field is named after its checkpoint tensor
// model.layers.N.<field path>.
type Layer struct {
	InputLayernorm         *Tensor // input_layernorm.weight [hidden]
	QProj                  Linear  // self_attn.q_proj [heads*head_dim, hidden]
	KProj                  Linear  // self_attn.k_proj [kv_heads*head_dim, hidden]
	VProj                  Linear  // self_attn.v_proj [kv_heads*head_dim, hidden]
	OProj                  Linear  // self_attn.o_proj [hidden, heads*head_dim]
	PostAttentionLayernorm *Tensor // post_attention_layernorm.weight [hidden]
	GateProj               Linear  // mlp.gate_proj [intermediate, hidden]
	UpProj                 Linear  // mlp.up_proj [intermediate, hidden]
	DownProj               Linear  // mlp.down_proj [hidden, intermediate]
}

// Weights is a whole model in float32. With tied embeddings LMHead is EmbedTokens (the same
// pointer), so an update to one is an update to both, as in torch.
type Weights struct {
	Config      *Config
	EmbedTokens *Tensor // model.embed_tokens.weight [vocab, hidden]
	Layers      []Layer
	Norm        *Tensor // model.norm.weight [hidden]
	LMHead      *Tensor // lm_head.weight [vocab, hidden]
}

type namedTensor struct {
	name  string
	shape []int
	ptr   **Tensor
}

// slots lists every tensor the config calls for, by checkpoint name, with the pointer to fill.
func (w *Weights) slots() []namedTensor {
	c := w.Config
	h, inter, v := c.HiddenSize, c.IntermediateSize, c.VocabSize
	q, kv := c.NumAttentionHeads*c.HeadDim, c.NumKeyValueHeads*c.HeadDim
	s := []namedTensor{{"model.embed_tokens.weight", []int{v, h}, &w.EmbedTokens}}
	for i := range w.Layers {
		l := &w.Layers[i]
		p := fmt.Sprintf("model.layers.%d.", i)
		s = append(s,
			namedTensor{p + "input_layernorm.weight", []int{h}, &l.InputLayernorm},
			namedTensor{p + "self_attn.q_proj.weight", []int{q, h}, &l.QProj.Weight},
			namedTensor{p + "self_attn.k_proj.weight", []int{kv, h}, &l.KProj.Weight},
			namedTensor{p + "self_attn.v_proj.weight", []int{kv, h}, &l.VProj.Weight},
			namedTensor{p + "self_attn.o_proj.weight", []int{h, q}, &l.OProj.Weight},
		)
		if c.QKVBias {
			s = append(s,
				namedTensor{p + "self_attn.q_proj.bias", []int{q}, &l.QProj.Bias},
				namedTensor{p + "self_attn.k_proj.bias", []int{kv}, &l.KProj.Bias},
				namedTensor{p + "self_attn.v_proj.bias", []int{kv}, &l.VProj.Bias},
			)
		}
		if c.OBias {
			s = append(s, namedTensor{p + "self_attn.o_proj.bias", []int{h}, &l.OProj.Bias})
		}
		s = append(s,
			namedTensor{p + "post_attention_layernorm.weight", []int{h}, &l.PostAttentionLayernorm},
			namedTensor{p + "mlp.gate_proj.weight", []int{inter, h}, &l.GateProj.Weight},
			namedTensor{p + "mlp.up_proj.weight", []int{inter, h}, &l.UpProj.Weight},
			namedTensor{p + "mlp.down_proj.weight", []int{h, inter}, &l.DownProj.Weight},
		)
	}
	s = append(s, namedTensor{"model.norm.weight", []int{h}, &w.Norm})
	if !c.TieWordEmbeddings {
		s = append(s, namedTensor{"lm_head.weight", []int{v, h}, &w.LMHead})
	}
	return s
}

// Tensors returns every parameter in checkpoint order, each once (a tied lm_head is not
// listed: it is model.embed_tokens.weight). The trainer can build its graph from these.
func (w *Weights) Tensors() []*Tensor {
	var out []*Tensor
	for _, s := range w.slots() {
		out = append(out, *s.ptr)
	}
	return out
}

// Clone returns a deep copy (a tied head stays tied to the copy's embedding): the trainer's
// frozen reference policy, or a snapshot to publish while training continues.
func (w *Weights) Clone() *Weights {
	cfg := *w.Config
	out := &Weights{Config: &cfg, Layers: make([]Layer, len(w.Layers))}
	src, dst := w.slots(), out.slots()
	for i := range src {
		t := *src[i].ptr
		*dst[i].ptr = &Tensor{Name: t.Name, Shape: append([]int(nil), t.Shape...), Data: append([]float32(nil), t.Data...)}
	}
	if cfg.TieWordEmbeddings {
		out.LMHead = out.EmbedTokens
	}
	return out
}

// FromTensors builds Weights from checkpoint tensors, checking that every tensor the config
// calls for is present with the right shape and finite values, and that none is left over.
// source names the file each tensor came from, for errors; it may be nil.
func FromTensors(cfg *Config, tensors map[string]*Tensor, source map[string]string) (*Weights, error) {
	w := &Weights{Config: cfg, Layers: make([]Layer, cfg.NumHiddenLayers)}
	where := func(name string) string {
		if f := source[name]; f != "" {
			return f + ": "
		}
		return ""
	}
	used := map[string]bool{}
	for _, s := range w.slots() {
		t, ok := tensors[s.name]
		if !ok {
			return nil, fmt.Errorf("tensor %s missing (config %s, %d layers)", s.name, cfg.Architecture, cfg.NumHiddenLayers)
		}
		if !slices.Equal(t.Shape, s.shape) {
			return nil, fmt.Errorf("%stensor %s has shape %v, config wants %v", where(s.name), s.name, t.Shape, s.shape)
		}
		for i := range t.Len() {
			if v := t.at(i); math.IsNaN(float64(v)) || math.IsInf(float64(v), 0) {
				return nil, fmt.Errorf("%stensor %s: non-finite value %v at element %d", where(s.name), s.name, v, i)
			}
		}
		t.Name = s.name
		*s.ptr = t
		used[s.name] = true
	}
	if cfg.TieWordEmbeddings {
		w.LMHead = w.EmbedTokens
		// Some exporters save the tied head anyway; it must be the embedding to be ignorable.
		if t, ok := tensors["lm_head.weight"]; ok {
			if !slices.Equal(t.Shape, w.EmbedTokens.Shape) || !sameValues(t, w.EmbedTokens) {
				return nil, fmt.Errorf("%stensor lm_head.weight differs from model.embed_tokens.weight but tie_word_embeddings is true", where("lm_head.weight"))
			}
			used["lm_head.weight"] = true
		}
	}
	for name := range tensors {
		// Old Llama checkpoints carry the RoPE buffer; it is recomputed from rope_theta.
		if !used[name] && !strings.HasSuffix(name, "rotary_emb.inv_freq") {
			return nil, fmt.Errorf("%sunexpected tensor %s for %s with %d layers", where(name), name, cfg.Architecture, cfg.NumHiddenLayers)
		}
	}
	return w, nil
}

func sameValues(a, b *Tensor) bool {
	if a.Len() != b.Len() {
		return false
	}
	for i := range a.Len() {
		if a.at(i) != b.at(i) {
			return false
		}
	}
	return true
}

// Load reads a Hugging Face checkpoint directory (config.json and model.safetensors, or a
// sharded index) as float32 Weights, whatever dtype it was saved in: what the trainer keeps
// and updates. For sampling use LoadModel.
func Load(dir string) (*Weights, error) {
	return load(dir, false)
}

// LoadOptions controls LoadModel.
type LoadOptions struct {
	// Float32 widens BF16/F16 weight matrices at load, as Load does, instead of keeping them
	// as stored: twice the memory and the bytes a decode step reads, for comparison.
	Float32 bool
}

// LoadModel reads a checkpoint directory for inference. Its weights are shared with every
// other LoadModel or LoadWeights of the same checkpoint files in the process (see
// sharedLoad) and must not be changed. The weight matrices of a BF16 or
// F16 checkpoint stay in that dtype, widened exactly to float32 inside the kernels, so the
// logits equal those of Load's float32 weights up to float32 summation order; a float32
// checkpoint (what the trainer writes) loads as float32.
func LoadModel(dir string, opts LoadOptions) (*Model, error) {
	w, err := LoadWeights(dir, opts)
	if err != nil {
		return nil, err
	}
	return New(w), nil
}

// LoadWeights is Load keeping BF16/F16 weight matrices as stored unless opts.Float32 (see
// Tensor.Half): a frozen base that LoRA training reads but never updates. Like LoadModel's,
// the weights are shared and must not be changed; Load gives weights of one's own.
func LoadWeights(dir string, opts LoadOptions) (*Weights, error) {
	if opts.Float32 {
		return load(dir, false)
	}
	return sharedLoad(dir)
}

// shared holds the read-only weights LoadModel and LoadWeights handed out, by checkpoint
// files, for as long as someone holds them: a LoRA run's rollout worker (sampling) and
// trainer (the frozen base) then hold one copy of the base, not two (a gigabyte at the
// Qwen2.5-0.5B shape).
var shared struct {
	sync.Mutex
	m map[string]weak.Pointer[Weights]
}

// sharedLoad is load(dir, true) through the shared cache, keyed by the directory's files
// (names, sizes, modification times), so a checkpoint rewritten in place loads anew.
func sharedLoad(dir string) (*Weights, error) {
	key, err := filesKey(atomicfile.Resolve(dir))
	if err != nil {
		return load(dir, true) // load reports what is wrong with dir
	}
	shared.Lock()
	defer shared.Unlock()
	if w := shared.m[key].Value(); w != nil {
		return w, nil
	}
	w, err := load(dir, true)
	if err != nil {
		return nil, err
	}
	if shared.m == nil {
		shared.m = map[string]weak.Pointer[Weights]{}
	}
	wp := weak.Make(w)
	shared.m[key] = wp
	runtime.AddCleanup(w, func(key string) {
		shared.Lock()
		if shared.m[key] == wp {
			delete(shared.m, key)
		}
		shared.Unlock()
	}, key)
	return w, nil
}

func filesKey(dir string) (string, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return "", err
	}
	ents, err := os.ReadDir(abs)
	if err != nil {
		return "", err
	}
	var b strings.Builder
	b.WriteString(abs)
	for _, e := range ents {
		info, err := e.Info()
		if err != nil || !info.Mode().IsRegular() {
			continue
		}
		fmt.Fprintf(&b, "\x00%s:%d:%d", e.Name(), info.Size(), info.ModTime().UnixNano())
	}
	return b.String(), nil
}

// load is Load, with keepHalf keeping BF16/F16 matrices as stored: such Weights only feed New.
func load(dir string, keepHalf bool) (*Weights, error) {
	dir = atomicfile.Resolve(dir) // a crash mid-Save leaves the previous checkpoint aside
	cfg, err := LoadConfig(dir)
	if err != nil {
		return nil, fmt.Errorf("load checkpoint %s: %w", dir, err)
	}
	tensors, source, err := readTensors(dir, keepHalf)
	if err != nil {
		return nil, fmt.Errorf("load checkpoint %s: %w", dir, err)
	}
	w, err := FromTensors(cfg, tensors, source)
	if err != nil {
		return nil, fmt.Errorf("load checkpoint %s: %w", dir, err)
	}
	return w, nil
}

// Init returns weights drawn like transformers' _init_weights: Linear and Embedding weights
// normal(0, initializer_range), biases zero, RMSNorm weights one. The same seed gives the
// same weights.
func Init(cfg *Config, seed uint64) (*Weights, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	w := &Weights{Config: cfg, Layers: make([]Layer, cfg.NumHiddenLayers)}
	rng := rand.New(rand.NewPCG(seed, 0x5eed))
	std := cfg.InitializerRange
	for _, s := range w.slots() {
		n := 1
		for _, d := range s.shape {
			n *= d
		}
		t := &Tensor{Name: s.name, Shape: s.shape, Data: make([]float32, n)}
		switch {
		case strings.HasSuffix(s.name, "layernorm.weight") || s.name == "model.norm.weight":
			for i := range t.Data {
				t.Data[i] = 1
			}
		case strings.HasSuffix(s.name, ".bias"):
		default:
			for i := range t.Data {
				t.Data[i] = float32(rng.NormFloat64() * std)
			}
		}
		*s.ptr = t
	}
	if cfg.TieWordEmbeddings {
		w.LMHead = w.EmbedTokens
	}
	return w, nil
}

// SaveOptions controls Save.
type SaveOptions struct {
	// DType of model.safetensors: F32 (the default, what the trainer keeps) or BF16.
	DType DType
	// TokenizerDir, when set, is a directory whose tokenizer files are copied alongside.
	TokenizerDir string
	// Metadata goes into the safetensors header.
	Metadata map[string]string
}

// tokenizerFiles are copied from SaveOptions.TokenizerDir when present.
var tokenizerFiles = []string{"tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.json", "merges.txt", "tokenizer.model", "added_tokens.json", "chat_template.jinja"}

// Save writes an HF-layout checkpoint (config.json, generation_config.json, model.safetensors,
// tokenizer files) to dir as one atomic directory replace (atomicfile.ReplaceDir): a reader
// never sees a half-written checkpoint. An existing dir is replaced.
func (w *Weights) Save(dir string, opts SaveOptions) error {
	if err := atomicfile.ReplaceDir(dir, func(tmp string) error { return w.WriteFiles(tmp, opts) }); err != nil {
		return fmt.Errorf("save checkpoint %s: %w", dir, err)
	}
	return nil
}

// WriteFiles writes Save's files into the existing directory dir, each atomically, for callers
// that build a larger directory around them.
func (w *Weights) WriteFiles(dir string, opts SaveOptions) error {
	dtype := opts.DType
	if dtype == "" {
		dtype = F32
	}
	cfg := *w.Config
	cfg.TorchDType = map[DType]string{F32: "float32", BF16: "bfloat16"}[dtype]
	cj, err := json.Marshal(&cfg)
	if err != nil {
		return err
	}
	if err := atomicfile.WriteFile(filepath.Join(dir, "config.json"), append(cj, '\n'), 0o644); err != nil {
		return err
	}
	gen := map[string]any{"_from_model_config": true}
	if cfg.BOSTokenID != nil {
		gen["bos_token_id"] = *cfg.BOSTokenID
	}
	switch len(cfg.EOSTokenIDs) {
	case 0:
	case 1:
		gen["eos_token_id"] = cfg.EOSTokenIDs[0]
	default:
		gen["eos_token_id"] = cfg.EOSTokenIDs
	}
	gj, _ := json.MarshalIndent(gen, "", "  ")
	if err := atomicfile.WriteFile(filepath.Join(dir, "generation_config.json"), append(gj, '\n'), 0o644); err != nil {
		return err
	}
	meta := map[string]string{"format": "pt"}
	for k, v := range opts.Metadata {
		meta[k] = v
	}
	if err := WriteSafetensors(filepath.Join(dir, "model.safetensors"), w.Tensors(), dtype, meta); err != nil {
		return err
	}
	if opts.TokenizerDir != "" {
		for _, name := range tokenizerFiles {
			src := filepath.Join(opts.TokenizerDir, name)
			if _, err := os.Stat(src); err != nil {
				continue
			}
			if err := atomicfile.Copy(src, filepath.Join(dir, name), 0o644); err != nil {
				return err
			}
		}
	}
	return nil
}
