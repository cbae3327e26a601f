// Package model reads, runs and writes the decoder-only transformers autoif trains: the Llama
// (LlamaForCausalLM) and Qwen2 (Qwen2ForCausalLM) families in Hugging Face layout.
//
// The architecture is one implementation with flags (q/k/v bias, o_proj bias, tied
// embeddings, head_dim, llama3 RoPE scaling). Weights are float32 in memory whatever the file
// dtype (F32, F16, BF16), held in a Weights struct whose fields are named after the checkpoint
// tensors, so the trainer's graph and this package's KV-cache path read the same numbers.
//
// The forward pass, as both paths must compute it (HF transformers' definition):
//
//	x = embed_tokens[ids]
//	per layer:
//	  h = rmsnorm(x) · input_layernorm            rmsnorm(x) = x / sqrt(mean(x²) + eps)
//	  q, k, v = h·q_projᵀ (+bias), h·k_projᵀ (+bias), h·v_projᵀ (+bias)
//	  q, k = rope(q), rope(k)                       rotate_half: pairs (i, i+head_dim/2)
//	  a = softmax(q·kᵀ/√head_dim, causal) · v       query head j uses kv head j/(heads/kv_heads)
//	  x = x + a·o_projᵀ (+bias)
//	  h = rmsnorm(x) · post_attention_layernorm
//	  x = x + (silu(h·gate_projᵀ) ⊙ h·up_projᵀ)·down_projᵀ
//	logits = (rmsnorm(x) · norm)·lm_headᵀ          lm_head is embed_tokens when tied
//
// Model.LogProbs is the number the trainer's graph must reproduce for DPO: the sum over
// completion tokens of log-softmax(logits) at the token, temperature 1.
package model

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
)

// Architecture names as they appear in config.json "architectures".
const (
	ArchLlama = "LlamaForCausalLM"
	ArchQwen2 = "Qwen2ForCausalLM"
)

// RopeScaling is the subset of HF rope_scaling this package implements: "llama3" (Llama 3.1+).
// Any other type is rejected at load time rather than silently run unscaled.
type RopeScaling struct {
	Type                          string  `json:"rope_type"`
	Factor                        float64 `json:"factor"`
	LowFreqFactor                 float64 `json:"low_freq_factor"`
	HighFreqFactor                float64 `json:"high_freq_factor"`
	OriginalMaxPositionEmbeddings int     `json:"original_max_position_embeddings"`
}

// Config is the model shape read from config.json.
type Config struct {
	Architecture          string
	HiddenSize            int
	IntermediateSize      int
	NumHiddenLayers       int
	NumAttentionHeads     int
	NumKeyValueHeads      int
	HeadDim               int
	RMSNormEps            float64
	RopeTheta             float64
	RopeScaling           *RopeScaling
	VocabSize             int
	MaxPositionEmbeddings int
	TieWordEmbeddings     bool
	// QKVBias: q_proj, k_proj and v_proj carry a bias (always for Qwen2, attention_bias for Llama).
	QKVBias bool
	// OBias: o_proj carries a bias (Llama's attention_bias covers o_proj too; Qwen2 never).
	OBias       bool
	BOSTokenID  *int
	EOSTokenIDs []int
	TorchDType  string
	// InitializerRange is the std of HF's normal init; used by Init.
	InitializerRange float64
}

// rawConfig mirrors the config.json fields read. Pointers tell "absent" from zero so defaults
// match transformers'.
type rawConfig struct {
	Architectures         []string        `json:"architectures"`
	ModelType             string          `json:"model_type"`
	HiddenSize            int             `json:"hidden_size"`
	IntermediateSize      int             `json:"intermediate_size"`
	NumHiddenLayers       int             `json:"num_hidden_layers"`
	NumAttentionHeads     int             `json:"num_attention_heads"`
	NumKeyValueHeads      *int            `json:"num_key_value_heads"`
	HeadDim               *int            `json:"head_dim"`
	RMSNormEps            *float64        `json:"rms_norm_eps"`
	RopeTheta             *float64        `json:"rope_theta"`
	RopeScaling           json.RawMessage `json:"rope_scaling"`
	VocabSize             int             `json:"vocab_size"`
	MaxPositionEmbeddings int             `json:"max_position_embeddings"`
	TieWordEmbeddings     *bool           `json:"tie_word_embeddings"`
	AttentionBias         *bool           `json:"attention_bias"`
	MLPBias               *bool           `json:"mlp_bias"`
	HiddenAct             string          `json:"hidden_act"`
	UseSlidingWindow      *bool           `json:"use_sliding_window"`
	BOSTokenID            json.RawMessage `json:"bos_token_id"`
	EOSTokenID            json.RawMessage `json:"eos_token_id"`
	TorchDType            string          `json:"torch_dtype"`
	InitializerRange      *float64        `json:"initializer_range"`
}

// LoadConfig reads dir/config.json.
func LoadConfig(dir string) (*Config, error) {
	path := filepath.Join(dir, "config.json")
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("load config: %w", err)
	}
	cfg, err := ParseConfig(data)
	if err != nil {
		return nil, fmt.Errorf("load config %s: %w", path, err)
	}
	return cfg, nil
}

// ParseConfig parses the contents of a config.json.
func ParseConfig(data []byte) (*Config, error) {
	var r rawConfig
	if err := json.Unmarshal(data, &r); err != nil {
		return nil, err
	}
	if len(r.Architectures) != 1 {
		return nil, fmt.Errorf("architectures %q: want exactly one of %s, %s", r.Architectures, ArchLlama, ArchQwen2)
	}
	c := &Config{
		Architecture:          r.Architectures[0],
		HiddenSize:            r.HiddenSize,
		IntermediateSize:      r.IntermediateSize,
		NumHiddenLayers:       r.NumHiddenLayers,
		NumAttentionHeads:     r.NumAttentionHeads,
		VocabSize:             r.VocabSize,
		MaxPositionEmbeddings: r.MaxPositionEmbeddings,
		TorchDType:            r.TorchDType,
		RMSNormEps:            1e-6,
		RopeTheta:             10000,
		InitializerRange:      0.02,
	}
	switch c.Architecture {
	case ArchLlama:
		// transformers' LlamaConfig defaults: tied false, eps 1e-6, theta 1e4.
		if r.AttentionBias != nil && *r.AttentionBias {
			c.QKVBias, c.OBias = true, true
		}
		if r.MLPBias != nil && *r.MLPBias {
			return nil, errors.New("mlp_bias true is not supported")
		}
	case ArchQwen2:
		c.QKVBias = true
		if r.UseSlidingWindow != nil && *r.UseSlidingWindow {
			return nil, errors.New("use_sliding_window true is not supported")
		}
		// Qwen2Config defaults tie_word_embeddings to false as well.
	default:
		return nil, fmt.Errorf("unknown architecture %q: want %s or %s", c.Architecture, ArchLlama, ArchQwen2)
	}
	if r.HiddenAct != "" && r.HiddenAct != "silu" {
		return nil, fmt.Errorf("hidden_act %q is not supported: want silu", r.HiddenAct)
	}
	if r.NumKeyValueHeads != nil {
		c.NumKeyValueHeads = *r.NumKeyValueHeads
	} else {
		c.NumKeyValueHeads = c.NumAttentionHeads
	}
	if r.RMSNormEps != nil {
		c.RMSNormEps = *r.RMSNormEps
	}
	if r.RopeTheta != nil {
		c.RopeTheta = *r.RopeTheta
	}
	if r.TieWordEmbeddings != nil {
		c.TieWordEmbeddings = *r.TieWordEmbeddings
	}
	if r.InitializerRange != nil {
		c.InitializerRange = *r.InitializerRange
	}
	if r.HeadDim != nil && *r.HeadDim > 0 {
		c.HeadDim = *r.HeadDim
	} else if c.NumAttentionHeads > 0 {
		c.HeadDim = c.HiddenSize / c.NumAttentionHeads
	}
	if err := parseRopeScaling(r.RopeScaling, c); err != nil {
		return nil, err
	}
	var err error
	if c.BOSTokenID, err = parseOptionalID(r.BOSTokenID); err != nil {
		return nil, fmt.Errorf("bos_token_id: %w", err)
	}
	if c.EOSTokenIDs, err = parseIDList(r.EOSTokenID); err != nil {
		return nil, fmt.Errorf("eos_token_id: %w", err)
	}
	if err := c.Validate(); err != nil {
		return nil, err
	}
	return c, nil
}

func parseRopeScaling(raw json.RawMessage, c *Config) error {
	if len(raw) == 0 || string(raw) == "null" {
		return nil
	}
	var m map[string]any
	if err := json.Unmarshal(raw, &m); err != nil {
		return fmt.Errorf("rope_scaling: %w", err)
	}
	// Older configs spell the key "type".
	typ, _ := m["rope_type"].(string)
	if typ == "" {
		typ, _ = m["type"].(string)
	}
	switch typ {
	case "default":
		return nil
	case "llama3":
		var rs RopeScaling
		if err := json.Unmarshal(raw, &rs); err != nil {
			return fmt.Errorf("rope_scaling: %w", err)
		}
		rs.Type = typ
		if rs.Factor <= 0 || rs.LowFreqFactor <= 0 || rs.HighFreqFactor <= rs.LowFreqFactor || rs.OriginalMaxPositionEmbeddings <= 0 {
			return fmt.Errorf("rope_scaling llama3: factor, low_freq_factor < high_freq_factor and original_max_position_embeddings must be positive, got %s", raw)
		}
		c.RopeScaling = &rs
		return nil
	default:
		return fmt.Errorf("rope_scaling type %q is not supported: only llama3 is implemented", typ)
	}
}

func parseOptionalID(raw json.RawMessage) (*int, error) {
	ids, err := parseIDList(raw)
	if err != nil || len(ids) == 0 {
		return nil, err
	}
	return &ids[0], nil
}

// parseIDList accepts null, an integer or a list of integers (Llama 3 lists several EOS ids).
func parseIDList(raw json.RawMessage) ([]int, error) {
	if len(raw) == 0 || string(raw) == "null" {
		return nil, nil
	}
	var one int
	if err := json.Unmarshal(raw, &one); err == nil {
		return []int{one}, nil
	}
	var many []int
	if err := json.Unmarshal(raw, &many); err != nil {
		return nil, fmt.Errorf("want an integer or a list of integers, got %s", raw)
	}
	return many, nil
}

// Validate checks that the shape is one the forward pass can run.
func (c *Config) Validate() error {
	pos := map[string]int{
		"hidden_size":             c.HiddenSize,
		"intermediate_size":       c.IntermediateSize,
		"num_hidden_layers":       c.NumHiddenLayers,
		"num_attention_heads":     c.NumAttentionHeads,
		"num_key_value_heads":     c.NumKeyValueHeads,
		"head_dim":                c.HeadDim,
		"vocab_size":              c.VocabSize,
		"max_position_embeddings": c.MaxPositionEmbeddings,
	}
	for _, k := range []string{"hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads", "head_dim", "vocab_size", "max_position_embeddings"} {
		if pos[k] <= 0 {
			return fmt.Errorf("%s must be positive, got %d", k, pos[k])
		}
	}
	if c.NumAttentionHeads%c.NumKeyValueHeads != 0 {
		return fmt.Errorf("num_attention_heads %d is not a multiple of num_key_value_heads %d", c.NumAttentionHeads, c.NumKeyValueHeads)
	}
	if c.HeadDim%2 != 0 {
		return fmt.Errorf("head_dim %d must be even for RoPE", c.HeadDim)
	}
	if !(c.RMSNormEps > 0) || !(c.RopeTheta > 0) || math.IsInf(c.RopeTheta, 0) {
		return fmt.Errorf("rms_norm_eps %g and rope_theta %g must be positive", c.RMSNormEps, c.RopeTheta)
	}
	for _, id := range c.EOSTokenIDs {
		if id < 0 || id >= c.VocabSize {
			return fmt.Errorf("eos_token_id %d outside vocab of %d", id, c.VocabSize)
		}
	}
	if c.BOSTokenID != nil && (*c.BOSTokenID < 0 || *c.BOSTokenID >= c.VocabSize) {
		return fmt.Errorf("bos_token_id %d outside vocab of %d", *c.BOSTokenID, c.VocabSize)
	}
	return nil
}

// ModelType is config.json's model_type for the architecture.
func (c *Config) ModelType() string {
	if c.Architecture == ArchQwen2 {
		return "qwen2"
	}
	return "llama"
}

// MarshalJSON writes an HF config.json that transformers loads with the same shape.
func (c *Config) MarshalJSON() ([]byte, error) {
	m := map[string]any{
		"architectures":           []string{c.Architecture},
		"model_type":              c.ModelType(),
		"hidden_size":             c.HiddenSize,
		"intermediate_size":       c.IntermediateSize,
		"num_hidden_layers":       c.NumHiddenLayers,
		"num_attention_heads":     c.NumAttentionHeads,
		"num_key_value_heads":     c.NumKeyValueHeads,
		"head_dim":                c.HeadDim,
		"rms_norm_eps":            c.RMSNormEps,
		"rope_theta":              c.RopeTheta,
		"vocab_size":              c.VocabSize,
		"max_position_embeddings": c.MaxPositionEmbeddings,
		"tie_word_embeddings":     c.TieWordEmbeddings,
		"hidden_act":              "silu",
		"initializer_range":       c.InitializerRange,
		"use_cache":               true,
	}
	if c.TorchDType != "" {
		m["torch_dtype"] = c.TorchDType
	}
	switch c.Architecture {
	case ArchLlama:
		m["attention_bias"] = c.QKVBias
		m["mlp_bias"] = false
	case ArchQwen2:
		m["use_sliding_window"] = false
	}
	if c.RopeScaling != nil {
		m["rope_scaling"] = c.RopeScaling
	} else {
		m["rope_scaling"] = nil
	}
	if c.BOSTokenID != nil {
		m["bos_token_id"] = *c.BOSTokenID
	}
	switch len(c.EOSTokenIDs) {
	case 0:
	case 1:
		m["eos_token_id"] = c.EOSTokenIDs[0]
	default:
		m["eos_token_id"] = c.EOSTokenIDs
	}
	return json.MarshalIndent(m, "", "  ")
}

// NumParams counts parameters, counting a tied embedding once.
func (c *Config) NumParams() int64 {
	h, i, v := int64(c.HiddenSize), int64(c.IntermediateSize), int64(c.VocabSize)
	q := int64(c.NumAttentionHeads * c.HeadDim)
	kv := int64(c.NumKeyValueHeads * c.HeadDim)
	layer := h*q + 2*h*kv + q*h + 3*h*i + 2*h
	if c.QKVBias {
		layer += q + 2*kv
	}
	if c.OBias {
		layer += h
	}
	n := v*h + int64(c.NumHiddenLayers)*layer + h
	if !c.TieWordEmbeddings {
		n += v * h
	}
	return n
}
