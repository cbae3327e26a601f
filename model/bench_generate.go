package model

import (
	"context"
	"fmt"
	"io"
	"strconv"
	"time"

	"github.com/autoif/autoif/torchref"
)

// GenerateBenchOptions configure BenchGenerate.
type GenerateBenchOptions struct {
	Dir     string // the checkpoint both sides load
	Float32 bool   // widen BF16/F16 weights at load (LoadOptions.Float32)
	Threads int
	// PromptLen tokens are prefilled (not timed), then NewTokens decoded per row.
	PromptLen, NewTokens int
	Seed                 uint64
	Rounds               int
	// Python is an interpreter with torch for the baseline (torchref.FindPython); "" skips it.
	Python string
	// Progress receives a line per round. Default io.Discard.
	Progress io.Writer
}

// GenerateBench is BenchGenerate's figures: the best round of each side, by batch size (1, 8).
type GenerateBench struct {
	Config      *Config
	WeightDType DType
	WeightBytes int64
	// Tokens per second of wall time and per CPU-second (all threads).
	GoTokensPerS, GoTokensPerCPUS       map[int]float64
	TorchTokensPerS, TorchTokensPerCPUS map[int]float64
	// TorchKernel is the dtype and linear kernel of torch's best round.
	TorchKernel map[int]string
	// Batch-1 decode reads every weight once per token: its rate against what a plain read
	// and memcpy stream on the same threads.
	WeightGBPerS, ReadGBPerS, MemcpyGBPerS float64
}

// BenchGenerateBatches are the batch sizes BenchGenerate measures.
var BenchGenerateBatches = []int{1, 8}

// torchGenerateResult is the last line scripts/torch_generate_bench.py prints.
type torchGenerateResult struct {
	TokensPerS    map[string]float64 `json:"tokens_per_s"`
	TokensPerCPUS map[string]float64 `json:"tokens_per_cpu_s"`
	DType         map[string]string  `json:"dtype"`
	LinearMode    map[string]string  `json:"linear_mode"`
}

// BenchGenerate measures KV-cache decode of the checkpoint at batch 1 and 8, against PyTorch
// eager on the same weights when o.Python is set. Go and torch alternate round by round and
// each keeps its best: on a shared machine the best of several runs is the figure least
// distorted by other load, and alternating exposes both sides to the same load.
func BenchGenerate(ctx context.Context, o GenerateBenchOptions) (*GenerateBench, error) {
	if o.Progress == nil {
		o.Progress = io.Discard
	}
	if o.NewTokens < 2 || o.PromptLen < 1 || o.Rounds < 1 || o.Threads < 1 {
		return nil, fmt.Errorf("bench generate: new tokens %d (at least 2), prompt length %d, rounds %d and threads %d must be positive", o.NewTokens, o.PromptLen, o.Rounds, o.Threads)
	}
	cfg, err := LoadConfig(o.Dir)
	if err != nil {
		return nil, err
	}
	maxBatch := BenchGenerateBatches[len(BenchGenerateBatches)-1]
	if err := cfg.CheckDecode(maxBatch, o.PromptLen+o.NewTokens); err != nil {
		return nil, fmt.Errorf("bench generate: prompt length %d and %d new tokens: %w", o.PromptLen, o.NewTokens, err)
	}
	m, err := LoadModel(o.Dir, LoadOptions{Float32: o.Float32})
	if err != nil {
		return nil, err
	}
	m.Threads = o.Threads
	r := &GenerateBench{Config: m.Config, WeightDType: m.WeightDType(), WeightBytes: m.WeightBytes(),
		GoTokensPerS: map[int]float64{}, GoTokensPerCPUS: map[int]float64{},
		TorchTokensPerS: map[int]float64{}, TorchTokensPerCPUS: map[int]float64{}, TorchKernel: map[int]string{}}
	if _, err := m.BenchDecode(1, o.PromptLen, 4, o.Seed); err != nil { // warm up
		return nil, err
	}
	for round := 1; round <= o.Rounds; round++ {
		for _, b := range BenchGenerateBatches {
			d, err := m.BenchDecode(b, o.PromptLen, o.NewTokens, o.Seed)
			if err != nil {
				return nil, err
			}
			r.GoTokensPerS[b] = max(r.GoTokensPerS[b], d.TokensPerSec)
			r.GoTokensPerCPUS[b] = max(r.GoTokensPerCPUS[b], d.TokensPerCPUSec)
			fmt.Fprintf(o.Progress, "round %d go    batch %d: %8.1f tokens/s\n", round, b, d.TokensPerSec)
		}
		if o.Python == "" {
			continue
		}
		var tt torchGenerateResult
		_, err := torchref.Run(ctx, o.Python, "torch_generate_bench.py", o.Threads, &tt, "--model", o.Dir, "--batches", "1,8",
			"--prompt-len", strconv.Itoa(o.PromptLen), "--new-tokens", strconv.Itoa(o.NewTokens),
			"--threads", strconv.Itoa(o.Threads), "--seed", strconv.FormatUint(o.Seed, 10))
		if err != nil {
			return nil, fmt.Errorf("torch baseline: %w", err)
		}
		for _, b := range BenchGenerateBatches {
			key := strconv.Itoa(b)
			t, kernel := tt.TokensPerS[key], tt.DType[key]+" "+tt.LinearMode[key]
			if t > r.TorchTokensPerS[b] {
				r.TorchTokensPerS[b], r.TorchKernel[b] = t, kernel
			}
			r.TorchTokensPerCPUS[b] = max(r.TorchTokensPerCPUS[b], tt.TokensPerCPUS[key])
			fmt.Fprintf(o.Progress, "round %d torch batch %d: %8.1f tokens/s (%s)\n", round, b, t, kernel)
		}
	}
	r.WeightGBPerS = float64(r.WeightBytes) * r.GoTokensPerS[1] / 1e9
	r.MemcpyGBPerS = MemcpyGBPerSec(256<<20, o.Threads, 500*time.Millisecond)
	r.ReadGBPerS = ReadGBPerSec(256<<20, o.Threads, 500*time.Millisecond)
	return r, nil
}
