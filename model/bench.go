package model

import (
	"fmt"
	"math/rand/v2"
	"time"
)

// BenchConfig is the ~28M-parameter shape `autoif bench generate` measures: hidden 512,
// 8 layers, 8 heads over 4 KV heads, SwiGLU 1408, vocab 8192, tied embeddings.
func BenchConfig() *Config {
	bos := 1
	return &Config{
		Architecture: ArchLlama, HiddenSize: 512, IntermediateSize: 1408, NumHiddenLayers: 8,
		NumAttentionHeads: 8, NumKeyValueHeads: 4, HeadDim: 64, RMSNormEps: 1e-6, RopeTheta: 1e4,
		VocabSize: 8192, MaxPositionEmbeddings: 2048, TieWordEmbeddings: true,
		BOSTokenID: &bos, EOSTokenIDs: []int{2}, InitializerRange: 0.02,
	}
}

// DecodeResult is one decode measurement.
type DecodeResult struct {
	Batch        int
	NewTokens    int // per row
	Seconds      float64
	TokensPerSec float64 // new tokens per second over all rows
	// CPUSeconds is the process CPU time the decode took (0 where unmeasured);
	// TokensPerCPUSec is the throughput per CPU-second, the figure least moved by other load.
	CPUSeconds      float64
	TokensPerCPUSec float64
}

// BenchDecode prefills batch random prompts of promptLen tokens, then times newTokens
// KV-cache decode steps with temperature-1 sampling (no stop tokens, so every row runs the
// full length). Prefill is not timed.
func (m *Model) BenchDecode(batch, promptLen, newTokens int, seed uint64) (DecodeResult, error) {
	rng := rand.New(rand.NewPCG(seed, 1))
	prompts := make([][]int, batch)
	for i := range prompts {
		prompts[i] = make([]int, promptLen)
		for j := range prompts[i] {
			prompts[i][j] = rng.IntN(m.Config.VocabSize)
		}
	}
	kc := m.NewCache(batch, promptLen+newTokens)
	logits, err := m.Forward(kc, prompts, false)
	if err != nil {
		return DecodeResult{}, fmt.Errorf("bench decode: %w", err)
	}
	pool := m.samplerPool()
	opts := SampleOptions{Temperature: 1}
	rngs := make([]*rand.Rand, batch)
	for i := range rngs {
		rngs[i] = rand.New(rand.NewPCG(seed, uint64(i)))
	}
	next := make([][]int, batch)
	start, cpuStart := time.Now(), processCPUTime()
	for step := range newTokens {
		toks, _ := m.sampleRows(pool, logits, opts, rngs)
		for i := range next {
			next[i] = []int{toks[i]}
		}
		if step == newTokens-1 {
			break
		}
		if logits, err = m.Forward(kc, next, false); err != nil {
			return DecodeResult{}, fmt.Errorf("bench decode: %w", err)
		}
	}
	secs := time.Since(start).Seconds()
	cpu := (processCPUTime() - cpuStart).Seconds()
	// newTokens samples per row took newTokens-1 forward steps after the prefill's logits.
	toks := float64(batch * (newTokens - 1))
	r := DecodeResult{Batch: batch, NewTokens: newTokens, Seconds: secs, TokensPerSec: toks / secs, CPUSeconds: cpu}
	if cpu > 0 {
		r.TokensPerCPUSec = toks / cpu
	}
	return r, nil
}

// ReadGBPerSec measures how fast threads goroutines stream a buffer of size bytes through
// the decode's dot-product kernel against an L1-resident vector: a batch-1 decode's memory
// access with nothing else in it, so the ceiling for the weight read rate. Unlike a copy it
// writes nothing. It reports the best pass over minDur.
func ReadGBPerSec(size, threads int, minDur time.Duration) float64 {
	const k = 4096
	rows := max(1, size/4/k)
	buf := make([]float32, rows*k)
	for i := range buf {
		buf[i] = float32(i & 255) // touched, so no page is the shared zero page
	}
	x := make([]float32, k)
	sums := make([]float32, rows)
	readAll := func() {
		parallelFor(threads, rows, 16, func(lo, hi int) {
			for j := lo; j < hi; j++ {
				sums[j] = dot(buf[j*k:(j+1)*k], x)
			}
		})
	}
	readAll()
	// The best pass, not the mean: on a shared machine it is the figure least lowered by other
	// load, as the decode figures it is compared with are each the best of several rounds.
	var best float64
	start := time.Now()
	for n := 0; time.Since(start) < minDur || n < 3; n++ {
		t := time.Now()
		readAll()
		best = max(best, float64(rows*k*4)/time.Since(t).Seconds()/1e9)
	}
	return best
}

// MemcpyGBPerSec measures copy bandwidth over a buffer of size bytes, split across threads
// like the decode's matmuls, as the reference for weight_gb_per_s: it counts bytes read per
// second, as the weight figure does (a copy also writes as many).
func MemcpyGBPerSec(size, threads int, minDur time.Duration) float64 {
	src := make([]byte, size)
	dst := make([]byte, size)
	for i := range src {
		src[i] = byte(i)
	}
	copyAll := func() {
		parallelFor(threads, size, 1<<20, func(lo, hi int) { copy(dst[lo:hi], src[lo:hi]) })
	}
	copyAll()
	var n int
	start := time.Now()
	for time.Since(start) < minDur || n < 3 {
		copyAll()
		n++
	}
	return float64(size) * float64(n) / time.Since(start).Seconds() / 1e9
}
