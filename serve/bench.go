package serve

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"
)

// BenchOptions configures Bench.
type BenchOptions struct {
	// Clients is the concurrency of the concurrent phase.
	Clients int
	// Requests is how many requests each phase sends (default 2×Clients).
	Requests  int
	PromptLen int
	MaxTokens int
	Seed      uint64
}

// BenchPhase is one phase's figures: completion tokens per second of wall time, and time to
// first token as a streaming client sees it (request sent to first content chunk).
type BenchPhase struct {
	Clients      int     `json:"clients"`
	Requests     int     `json:"requests"`
	Tokens       int     `json:"tokens"`
	Seconds      float64 `json:"seconds"`
	TokensPerSec float64 `json:"tokens_per_s"`
	TTFTP50      float64 `json:"ttft_p50_ms"`
	TTFTP99      float64 `json:"ttft_p99_ms"`
}

// BenchResult compares the same requests sent one after another and by concurrent clients.
type BenchResult struct {
	Sequential BenchPhase `json:"sequential"`
	Concurrent BenchPhase `json:"concurrent"`
	Speedup    float64    `json:"speedup"`
}

// Bench serves s on a loopback port and sends it the same streaming completion requests
// twice: one after another, then from opts.Clients concurrent clients, so what continuous
// batching buys is measured on one server in one run. Requests are random token-id prompts
// with ignore_eos, so every request decodes exactly MaxTokens tokens.
func Bench(ctx context.Context, s *Server, opts BenchOptions) (*BenchResult, error) {
	if opts.Clients < 1 || opts.PromptLen < 1 || opts.MaxTokens < 1 {
		return nil, fmt.Errorf("bench serve: clients %d, prompt length %d, max tokens %d: want at least 1 each", opts.Clients, opts.PromptLen, opts.MaxTokens)
	}
	if opts.Requests == 0 {
		opts.Requests = 2 * opts.Clients
	}
	if opts.PromptLen+opts.MaxTokens > s.opts.MaxLen {
		return nil, fmt.Errorf("bench serve: %d prompt + %d completion tokens exceed the context of %d", opts.PromptLen, opts.MaxTokens, s.opts.MaxLen)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("bench serve: %w", err)
	}
	sctx, stop := context.WithCancel(ctx)
	served := make(chan error, 1)
	go func() { served <- s.Serve(sctx, ln) }()
	defer func() { stop(); <-served }()

	url := "http://" + ln.Addr().String() + "/v1/completions"
	rng := rand.New(rand.NewPCG(opts.Seed, 0))
	vocab := min(s.tok.VocabSize(), s.Policy().Model.Config.VocabSize)
	bodies := make([][]byte, opts.Requests)
	for i := range bodies {
		prompt := make([]int, opts.PromptLen)
		for j := range prompt {
			prompt[j] = rng.IntN(vocab)
		}
		bodies[i], _ = json.Marshal(map[string]any{"model": s.opts.ModelName, "prompt": prompt, "max_tokens": opts.MaxTokens,
			"ignore_eos": true, "seed": i, "stream": true, "stream_options": map[string]any{"include_usage": true}})
	}
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: opts.Clients}}
	// Warm up: the first request pays for page faults and connection set-up.
	if _, _, err := benchRequest(ctx, client, url, bodies[0]); err != nil {
		return nil, err
	}
	seq, err := benchPhase(ctx, client, url, bodies, 1)
	if err != nil {
		return nil, err
	}
	conc, err := benchPhase(ctx, client, url, bodies, opts.Clients)
	if err != nil {
		return nil, err
	}
	return &BenchResult{Sequential: seq, Concurrent: conc, Speedup: round(conc.TokensPerSec/seq.TokensPerSec, 2)}, nil
}

// round keeps the bench's JSON short.
func round(x float64, digits int) float64 {
	p := math.Pow(10, float64(digits))
	return math.Round(x*p) / p
}

func benchPhase(ctx context.Context, client *http.Client, url string, bodies [][]byte, clients int) (BenchPhase, error) {
	var mu sync.Mutex
	var ttfts []float64
	tokens := 0
	var firstErr error
	next := make(chan []byte, len(bodies))
	for _, b := range bodies {
		next <- b
	}
	close(next)
	start := time.Now()
	var wg sync.WaitGroup
	for range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for b := range next {
				ttft, n, err := benchRequest(ctx, client, url, b)
				mu.Lock()
				if err != nil && firstErr == nil {
					firstErr = err
				}
				ttfts = append(ttfts, ttft.Seconds()*1000)
				tokens += n
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	secs := time.Since(start).Seconds()
	if firstErr != nil {
		return BenchPhase{}, firstErr
	}
	slices.Sort(ttfts)
	return BenchPhase{
		Clients: clients, Requests: len(bodies), Tokens: tokens, Seconds: round(secs, 3), TokensPerSec: round(float64(tokens)/secs, 1),
		TTFTP50: round(percentile(ttfts, 0.50), 2), TTFTP99: round(percentile(ttfts, 0.99), 2),
	}, nil
}

// percentile of sorted values, nearest rank.
func percentile(sorted []float64, p float64) float64 {
	if len(sorted) == 0 {
		return 0
	}
	i := int(p*float64(len(sorted))+0.5) - 1
	return sorted[min(max(i, 0), len(sorted)-1)]
}

// benchRequest sends one streaming request and returns the time to its first chunk and the
// completion tokens its usage chunk reports.
func benchRequest(ctx context.Context, client *http.Client, url string, body []byte) (time.Duration, int, error) {
	req, err := http.NewRequestWithContext(ctx, "POST", url, bytes.NewReader(body))
	if err != nil {
		return 0, 0, err
	}
	start := time.Now()
	resp, err := client.Do(req)
	if err != nil {
		return 0, 0, fmt.Errorf("bench serve: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return 0, 0, fmt.Errorf("bench serve: status %d", resp.StatusCode)
	}
	var ttft time.Duration
	tokens := -1
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		data, ok := strings.CutPrefix(sc.Text(), "data: ")
		if !ok || data == "[DONE]" {
			continue
		}
		if ttft == 0 {
			ttft = time.Since(start)
		}
		var chunk struct {
			Usage *usage `json:"usage"`
		}
		if err := json.Unmarshal([]byte(data), &chunk); err != nil {
			return 0, 0, fmt.Errorf("bench serve: %w", err)
		}
		if chunk.Usage != nil {
			tokens = chunk.Usage.CompletionTokens
		}
	}
	if err := sc.Err(); err != nil {
		return 0, 0, fmt.Errorf("bench serve: %w", err)
	}
	if tokens < 0 {
		return 0, 0, errors.New("bench serve: a stream ended without its usage chunk")
	}
	return ttft, tokens, nil
}
