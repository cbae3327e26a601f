package model

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"

	"github.com/autoif/autoif/atomicfile"
)

// LoRA adapters in PEFT's format (huggingface/peft, LoraConfig + get_peft_model_state_dict):
// a directory with adapter_config.json and adapter_model.safetensors whose tensors are named
//
//	base_model.model.model.layers.N.self_attn.q_proj.lora_A.weight   [r, in]
//	base_model.model.model.layers.N.self_attn.q_proj.lora_B.weight   [out, r]
//
// A projection's output becomes x·Wᵀ + b + scale·(x·Aᵀ)·Bᵀ with scale = alpha/r (alpha/√r
// with use_rslora), so PEFT loads what autoif writes and the reverse.

// LoRATargets are the projections an adapter may target, by their checkpoint names.
var LoRATargets = []string{"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}

// Adapter files.
const (
	AdapterConfigFile  = "adapter_config.json"
	AdapterWeightsFile = "adapter_model.safetensors"
)

// LoRAConfig is the part of PEFT's LoraConfig autoif reads and writes.
type LoRAConfig struct {
	Rank    int      // r
	Alpha   float64  // lora_alpha
	Dropout float64  // lora_dropout: applied to a projection's input on the adapter path, in training only
	Targets []string // target_modules, a subset of LoRATargets
	RSLoRA  bool     // use_rslora: scale alpha/√r instead of alpha/r
}

// Scale multiplies the adapter's product.
func (c LoRAConfig) Scale() float64 {
	if c.RSLoRA {
		return c.Alpha / math.Sqrt(float64(c.Rank))
	}
	return c.Alpha / float64(c.Rank)
}

// Validate checks the values PEFT would accept and autoif can run.
func (c LoRAConfig) Validate() error {
	if c.Rank < 1 || c.Rank > 4096 {
		return fmt.Errorf("lora rank %d: want 1..4096", c.Rank)
	}
	if !(c.Alpha > 0) || math.IsInf(c.Alpha, 0) {
		return fmt.Errorf("lora alpha %v: want > 0", c.Alpha)
	}
	if !(c.Dropout >= 0 && c.Dropout < 1) {
		return fmt.Errorf("lora dropout %v: want 0 <= p < 1", c.Dropout)
	}
	if len(c.Targets) == 0 {
		return fmt.Errorf("lora targets: none given; want some of %s", strings.Join(LoRATargets, ","))
	}
	seen := map[string]bool{}
	for _, t := range c.Targets {
		if !slices.Contains(LoRATargets, t) {
			return fmt.Errorf("lora target %q: want one of %s", t, strings.Join(LoRATargets, ","))
		}
		if seen[t] {
			return fmt.Errorf("lora target %q given twice", t)
		}
		seen[t] = true
	}
	return nil
}

// LoRA is one projection's adapter: A is [r, in], B is [out, r], float32.
type LoRA struct {
	A, B *Tensor
}

// Adapter is a LoRA adapter for every decoder layer of one base model.
type Adapter struct {
	Config LoRAConfig
	// BaseModel is adapter_config.json's base_model_name_or_path (informational).
	BaseModel string
	// Layers[i][target] is layer i's adapter on that projection.
	Layers []map[string]*LoRA
}

// Proj returns the layer's projection by its checkpoint name (q_proj ... down_proj), nil for
// another name.
func (l *Layer) Proj(name string) *Linear {
	switch name {
	case "q_proj":
		return &l.QProj
	case "k_proj":
		return &l.KProj
	case "v_proj":
		return &l.VProj
	case "o_proj":
		return &l.OProj
	case "gate_proj":
		return &l.GateProj
	case "up_proj":
		return &l.UpProj
	case "down_proj":
		return &l.DownProj
	}
	return nil
}

// projShape is the [out, in] of a target projection in a model of config c.
func projShape(c *Config, target string) (out, in int) {
	h, inter := c.HiddenSize, c.IntermediateSize
	q, kv := c.NumAttentionHeads*c.HeadDim, c.NumKeyValueHeads*c.HeadDim
	switch target {
	case "q_proj":
		return q, h
	case "k_proj", "v_proj":
		return kv, h
	case "o_proj":
		return h, q
	case "gate_proj", "up_proj":
		return inter, h
	case "down_proj":
		return h, inter
	}
	return 0, 0
}

// projModule is the module path of a target in layer i ("model.layers.3.self_attn.q_proj").
func projModule(i int, target string) string {
	part := "mlp"
	switch target {
	case "q_proj", "k_proj", "v_proj", "o_proj":
		part = "self_attn"
	}
	return fmt.Sprintf("model.layers.%d.%s.%s", i, part, target)
}

// peftName names a tensor as PEFT saves it.
func peftName(i int, target, which string) string {
	return "base_model.model." + projModule(i, target) + ".lora_" + which + ".weight"
}

// NewAdapter returns a fresh adapter for a model of config c, initialised as PEFT does by
// default (init_lora_weights=True): A from nn.Linear's kaiming_uniform(a=√5), that is
// U(-1/√in, 1/√in), and B zero, so the adapted model starts equal to the base.
func NewAdapter(c *Config, lc LoRAConfig, seed uint64) (*Adapter, error) {
	if err := lc.Validate(); err != nil {
		return nil, err
	}
	lc.Targets = slices.Clone(lc.Targets)
	a := &Adapter{Config: lc, Layers: make([]map[string]*LoRA, c.NumHiddenLayers)}
	rng := rand.New(rand.NewPCG(seed, 0x10ba))
	for i := range a.Layers {
		a.Layers[i] = map[string]*LoRA{}
		for _, t := range orderedTargets(lc.Targets) {
			out, in := projShape(c, t)
			A := &Tensor{Name: peftName(i, t, "A"), Shape: []int{lc.Rank, in}, Data: make([]float32, lc.Rank*in)}
			bound := 1 / math.Sqrt(float64(in))
			for j := range A.Data {
				A.Data[j] = float32((2*rng.Float64() - 1) * bound)
			}
			B := &Tensor{Name: peftName(i, t, "B"), Shape: []int{out, lc.Rank}, Data: make([]float32, out*lc.Rank)}
			a.Layers[i][t] = &LoRA{A: A, B: B}
		}
	}
	return a, nil
}

// orderedTargets lists targets in LoRATargets' order, so every walk over an adapter is
// deterministic.
func orderedTargets(targets []string) []string {
	var out []string
	for _, t := range LoRATargets {
		if slices.Contains(targets, t) {
			out = append(out, t)
		}
	}
	return out
}

// Tensors lists the adapter's tensors under PEFT's names, layer by layer.
func (a *Adapter) Tensors() []*Tensor {
	var out []*Tensor
	for i, l := range a.Layers {
		for _, t := range orderedTargets(a.Config.Targets) {
			if p := l[t]; p != nil {
				p.A.Name, p.B.Name = peftName(i, t, "A"), peftName(i, t, "B")
				out = append(out, p.A, p.B)
			}
		}
	}
	return out
}

// Params counts the adapter's trainable values.
func (a *Adapter) Params() int64 {
	var n int64
	for _, t := range a.Tensors() {
		n += int64(len(t.Data))
	}
	return n
}

// Clone returns a deep copy: a snapshot to publish while training goes on.
func (a *Adapter) Clone() *Adapter {
	out := &Adapter{Config: a.Config, BaseModel: a.BaseModel, Layers: make([]map[string]*LoRA, len(a.Layers))}
	out.Config.Targets = slices.Clone(a.Config.Targets)
	for i, l := range a.Layers {
		out.Layers[i] = map[string]*LoRA{}
		for t, p := range l {
			out.Layers[i][t] = &LoRA{A: cloneTensor(p.A), B: cloneTensor(p.B)}
		}
	}
	return out
}

func cloneTensor(t *Tensor) *Tensor {
	return &Tensor{Name: t.Name, Shape: slices.Clone(t.Shape), Data: slices.Clone(t.Data)}
}

// Fits checks that the adapter applies to a model of config c: as many layers, and every
// matrix of the shape the projection needs.
func (a *Adapter) Fits(c *Config) error {
	if len(a.Layers) != c.NumHiddenLayers {
		return fmt.Errorf("adapter has %d layers, the model %d", len(a.Layers), c.NumHiddenLayers)
	}
	for i, l := range a.Layers {
		for t, p := range l {
			out, in := projShape(c, t)
			r := a.Config.Rank
			if !slices.Equal(p.A.Shape, []int{r, in}) || !slices.Equal(p.B.Shape, []int{out, r}) {
				return fmt.Errorf("adapter %s is A %v, B %v; the model's %s needs A [%d %d], B [%d %d]",
					projModule(i, t), p.A.Shape, p.B.Shape, t, r, in, out, r)
			}
		}
	}
	return nil
}

// peftConfig is adapter_config.json as PEFT writes it for LoRA.
type peftConfig struct {
	PeftType          string             `json:"peft_type"`
	TaskType          string             `json:"task_type"`
	BaseModel         string             `json:"base_model_name_or_path"`
	R                 int                `json:"r"`
	LoraAlpha         float64            `json:"lora_alpha"`
	LoraDropout       float64            `json:"lora_dropout"`
	TargetModules     json.RawMessage    `json:"target_modules"`
	Bias              string             `json:"bias"`
	FanInFanOut       bool               `json:"fan_in_fan_out"`
	InferenceMode     bool               `json:"inference_mode"`
	InitLoraWeights   json.RawMessage    `json:"init_lora_weights"`
	UseRSLoRA         bool               `json:"use_rslora"`
	UseDoRA           bool               `json:"use_dora"`
	ModulesToSave     []string           `json:"modules_to_save"`
	LayersToTransform json.RawMessage    `json:"layers_to_transform"`
	LayersPattern     json.RawMessage    `json:"layers_pattern"`
	RankPattern       map[string]float64 `json:"rank_pattern"`
	AlphaPattern      map[string]float64 `json:"alpha_pattern"`
	Revision          *string            `json:"revision"`
}

// Save writes the adapter to dir in PEFT's layout (float32 tensors), replacing dir whole
// (atomicfile.ReplaceDir).
func (a *Adapter) Save(dir string) error {
	if err := atomicfile.ReplaceDir(dir, a.WriteFiles); err != nil {
		return fmt.Errorf("save adapter %s: %w", dir, err)
	}
	return nil
}

// WriteFiles writes Save's two files into the existing directory dir, each atomically, for
// callers that build a larger directory around them (a trainer checkpoint).
func (a *Adapter) WriteFiles(dir string) error {
	targets, _ := json.Marshal(orderedTargets(a.Config.Targets))
	pc := peftConfig{
		PeftType: "LORA", TaskType: "CAUSAL_LM", BaseModel: a.BaseModel, R: a.Config.Rank,
		LoraAlpha: a.Config.Alpha, LoraDropout: a.Config.Dropout, TargetModules: targets,
		Bias: "none", InferenceMode: true, InitLoraWeights: json.RawMessage("true"),
		UseRSLoRA: a.Config.RSLoRA, LayersToTransform: json.RawMessage("null"),
		LayersPattern: json.RawMessage("null"), RankPattern: map[string]float64{}, AlphaPattern: map[string]float64{},
	}
	cj, err := json.MarshalIndent(pc, "", "  ")
	if err != nil {
		return err
	}
	if err := atomicfile.WriteFile(filepath.Join(dir, AdapterConfigFile), append(cj, '\n'), 0o644); err != nil {
		return err
	}
	return WriteSafetensors(filepath.Join(dir, AdapterWeightsFile), a.Tensors(), F32, map[string]string{"format": "pt"})
}

// IsAdapter reports whether dir holds a PEFT adapter (rather than a whole checkpoint).
func IsAdapter(dir string) bool {
	_, err := os.Stat(filepath.Join(dir, AdapterConfigFile))
	return err == nil
}

var loraTensor = regexp.MustCompile(`^base_model\.model\.model\.layers\.(\d+)\.(self_attn|mlp)\.([a-z_]+)\.lora_([AB])(?:\.[A-Za-z0-9_-]+)?\.weight$`)

// LoadAdapter reads a PEFT LoRA adapter directory. Options autoif cannot apply exactly
// (DoRA, per-module ranks, bias training, extra saved modules) are refused by name.
func LoadAdapter(dir string) (*Adapter, error) {
	fail := func(format string, args ...any) (*Adapter, error) {
		return nil, fmt.Errorf("load adapter %s: %s", dir, fmt.Sprintf(format, args...))
	}
	raw, err := os.ReadFile(filepath.Join(dir, AdapterConfigFile))
	if err != nil {
		return nil, fmt.Errorf("load adapter %s: %w", dir, err)
	}
	var pc peftConfig
	if err := json.Unmarshal(raw, &pc); err != nil {
		return fail("%s: %v", AdapterConfigFile, err)
	}
	switch {
	case pc.PeftType != "LORA":
		return fail("peft_type %q: only LORA adapters are supported", pc.PeftType)
	case pc.UseDoRA:
		return fail("use_dora: DoRA adapters are not supported")
	case pc.Bias != "" && pc.Bias != "none":
		return fail("bias %q: only adapters without trained biases (bias \"none\") are supported", pc.Bias)
	case pc.FanInFanOut:
		return fail("fan_in_fan_out: only nn.Linear-layout adapters are supported")
	case len(pc.ModulesToSave) > 0:
		return fail("modules_to_save %v: adapters that save whole modules are not supported", pc.ModulesToSave)
	case len(pc.RankPattern) > 0 || len(pc.AlphaPattern) > 0:
		return fail("rank_pattern/alpha_pattern: per-module ranks are not supported")
	}
	lc := LoRAConfig{Rank: pc.R, Alpha: pc.LoraAlpha, Dropout: pc.LoraDropout, RSLoRA: pc.UseRSLoRA}
	// allowed matches a module path ("model.layers.3.self_attn.q_proj") as PEFT's
	// check_target_module_exists does: a list entry by the path or its dotted suffix, a string
	// by re.fullmatch over the path ("all-linear": every projection).
	var allowed func(module string) bool
	var list []string
	var pattern string
	switch {
	case json.Unmarshal(pc.TargetModules, &list) == nil && list != nil:
		allowed = func(module string) bool {
			return slices.ContainsFunc(list, func(e string) bool { return module == e || strings.HasSuffix(module, "."+e) })
		}
	case json.Unmarshal(pc.TargetModules, &pattern) == nil && pattern == "all-linear":
		allowed = func(string) bool { return true }
	case json.Unmarshal(pc.TargetModules, &pattern) == nil && pattern != "":
		re, err := regexp.Compile(`^(?:` + pattern + `)$`)
		if err != nil {
			return fail("target_modules %q: %v", pattern, err)
		}
		allowed = re.MatchString
	default:
		return fail("target_modules: want a list of module names or a pattern")
	}
	sf, err := OpenSafetensors(filepath.Join(dir, AdapterWeightsFile))
	if err != nil {
		return nil, fmt.Errorf("load adapter %s: %w", dir, err)
	}
	defer sf.Close()
	a := &Adapter{Config: lc, BaseModel: pc.BaseModel}
	seen := map[string]bool{}
	for _, info := range sf.Tensors {
		m := loraTensor.FindStringSubmatch(info.Name)
		if m == nil {
			return fail("unexpected tensor %s (want base_model.model.model.layers.N.<module>.lora_A|lora_B.weight)", info.Name)
		}
		layer, err := strconv.Atoi(m[1])
		if err != nil || layer > 1<<16 {
			return fail("tensor %s: bad layer number", info.Name)
		}
		target := m[3]
		if !slices.Contains(LoRATargets, target) || projModule(layer, target) != fmt.Sprintf("model.layers.%d.%s.%s", layer, m[2], target) {
			return fail("tensor %s: %s.%s is not a projection autoif can adapt (%s)", info.Name, m[2], target, strings.Join(LoRATargets, ","))
		}
		if !allowed(projModule(layer, target)) {
			return fail("tensor %s: %s is not among target_modules", info.Name, target)
		}
		key := fmt.Sprintf("%d.%s.%s", layer, target, m[4])
		if seen[key] {
			return fail("tensor %s appears twice", info.Name)
		}
		seen[key] = true
		if len(info.Shape) != 2 {
			return fail("tensor %s has shape %v, want a matrix", info.Name, info.Shape)
		}
		data, err := sf.Read(info)
		if err != nil {
			return nil, fmt.Errorf("load adapter %s: %w", dir, err)
		}
		for j, v := range data {
			if math.IsNaN(float64(v)) || math.IsInf(float64(v), 0) {
				return fail("tensor %s: non-finite value %v at element %d", info.Name, v, j)
			}
		}
		for len(a.Layers) <= layer {
			a.Layers = append(a.Layers, map[string]*LoRA{})
		}
		p := a.Layers[layer][target]
		if p == nil {
			p = &LoRA{}
			a.Layers[layer][target] = p
		}
		t := &Tensor{Name: info.Name, Shape: []int{int(info.Shape[0]), int(info.Shape[1])}, Data: data}
		if m[4] == "A" {
			p.A = t
		} else {
			p.B = t
		}
		if !slices.Contains(lc.Targets, target) {
			lc.Targets = append(lc.Targets, target)
		}
	}
	lc.Targets = orderedTargets(lc.Targets)
	a.Config = lc
	if len(a.Layers) == 0 {
		return fail("%s holds no LoRA tensors", AdapterWeightsFile)
	}
	if err := lc.Validate(); err != nil {
		return fail("%v", err)
	}
	for i, l := range a.Layers {
		for _, t := range lc.Targets {
			p := l[t]
			switch {
			case p == nil:
				return fail("layer %d has no %s adapter while other layers do", i, t)
			case p.A == nil || p.B == nil:
				return fail("%s has only one of lora_A and lora_B", projModule(i, t))
			case p.A.Shape[0] != lc.Rank || p.B.Shape[1] != lc.Rank:
				return fail("%s: lora_A %v and lora_B %v do not have rank r=%d", projModule(i, t), p.A.Shape, p.B.Shape, lc.Rank)
			}
		}
	}
	return a, nil
}

// ErrHalfWeights: merging needs float32 weights (Load's), not LoadModel's half-precision ones.
var ErrHalfWeights = errors.New("merge: weights are half-precision; load them with model.Load")

// Merge adds the adapter into w's projections: W += scale·B·A, in float64 sums rounded once,
// as PEFT's merge_and_unload does in the weights' dtype.
func (a *Adapter) Merge(w *Weights) error {
	if err := a.Fits(w.Config); err != nil {
		return fmt.Errorf("merge: %w", err)
	}
	scale := a.Config.Scale()
	r := a.Config.Rank
	for i, l := range a.Layers {
		for t, p := range l {
			lin := w.Layers[i].Proj(t)
			if lin.Weight.half != nil {
				return ErrHalfWeights
			}
			out, in := lin.Out(), lin.In()
			W := lin.Weight.Data
			parallelFor(runtime.GOMAXPROCS(0), out, 1, func(lo, hi int) {
				for o := lo; o < hi; o++ {
					brow := p.B.Data[o*r : (o+1)*r]
					for c := 0; c < in; c++ {
						var s float64
						for k, b := range brow {
							s += float64(b) * float64(p.A.Data[k*in+c])
						}
						W[o*in+c] += float32(scale * s)
					}
				}
			})
		}
	}
	return nil
}

// MergeOptions controls MergeDirs.
type MergeOptions struct {
	// DType of the merged model.safetensors; empty: the base checkpoint's own (BF16 for a
	// bfloat16 base, else F32), as PEFT's merge_and_unload keeps the base's dtype.
	DType DType
}

// MergeDirs writes to out a whole Hugging Face checkpoint: the base checkpoint in baseDir with
// the PEFT adapter in adapterDir merged into its weights, and the base's tokenizer files (the
// adapter directory's, when it has its own). out is written atomically.
func MergeDirs(baseDir, adapterDir, out string, opts MergeOptions) error {
	if filepath.Clean(out) == filepath.Clean(baseDir) {
		return fmt.Errorf("merge: the output %s is the base checkpoint; write the merged model elsewhere", out)
	}
	a, err := LoadAdapter(adapterDir)
	if err != nil {
		return err
	}
	w, err := Load(baseDir)
	if err != nil {
		return err
	}
	if err := a.Merge(w); err != nil {
		return fmt.Errorf("merge %s into %s: %w", adapterDir, baseDir, err)
	}
	dtype := opts.DType
	if dtype == "" {
		dtype = F32
		if w.Config.TorchDType == "bfloat16" {
			dtype = BF16
		}
	}
	tokDir := baseDir
	if _, err := os.Stat(filepath.Join(adapterDir, "tokenizer.json")); err == nil {
		tokDir = adapterDir
	}
	meta := map[string]string{"merged_adapter": filepath.Base(filepath.Clean(adapterDir))}
	return w.Save(out, SaveOptions{DType: dtype, TokenizerDir: tokDir, Metadata: meta})
}
