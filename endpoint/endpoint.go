// Package endpoint samples responses from an OpenAI-compatible chat completions server (vLLM,
// SGLang, llama.cpp, TGI, OpenAI itself), for evaluating a model served elsewhere.
package endpoint

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"time"
)

// Options say how to sample.
type Options struct {
	// URL is the server's base URL (".../v1") or its chat completions URL.
	URL string
	// Model is the served model's name.
	Model string
	// APIKey, when set, is sent as a bearer token.
	APIKey string
	// Temperature 0 is greedy; MaxTokens caps each response (0: the server's default).
	Temperature float64
	MaxTokens   int
	// Concurrency is how many requests are in flight at once (default 4).
	Concurrency int
	// Timeout bounds one request (default 10 minutes).
	Timeout time.Duration
	// Client is the HTTP client (default http.DefaultClient).
	Client *http.Client
	// Retries is how many times a transient failure (429, 5xx, a cut connection) is retried
	// before it stops the run (default 0: evaluation fails fast).
	Retries int
}

// chatURL is the chat completions URL of a base or full URL.
func chatURL(u string) string {
	u = strings.TrimRight(u, "/")
	if strings.HasSuffix(u, "/chat/completions") {
		return u
	}
	return u + "/chat/completions"
}

// Complete sends each prompt as one user message and returns the responses in prompt order.
// The first failure stops the rest and is returned, naming the prompt's index.
func Complete(ctx context.Context, prompts []string, o Options) ([]string, error) {
	if o.URL == "" || o.Model == "" {
		return nil, errors.New("endpoint: a URL and a model name are required")
	}
	if o.Concurrency <= 0 {
		o.Concurrency = 4
	}
	if o.Timeout <= 0 {
		o.Timeout = 10 * time.Minute
	}
	if o.Client == nil {
		o.Client = http.DefaultClient
	}
	client, err := NewClient(ClientOptions{URL: o.URL, Model: o.Model, APIKey: o.APIKey, Timeout: o.Timeout,
		Retries: o.Retries, Client: o.Client})
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	out := make([]string, len(prompts))
	var (
		mu       sync.Mutex
		firstErr error
		wg       sync.WaitGroup
	)
	next := make(chan int)
	for range min(o.Concurrency, len(prompts)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				res, err := client.Chat(ctx, UserRequest(prompts[i], 0, o.Temperature, 0, o.MaxTokens))
				if err != nil {
					mu.Lock()
					if firstErr == nil {
						firstErr = fmt.Errorf("endpoint %s, prompt %d: %w", chatURL(o.URL), i+1, err)
					}
					mu.Unlock()
					cancel()
					continue
				}
				out[i] = res.Choices[0]
			}
		}()
	}
feed:
	for i := range prompts {
		select {
		case next <- i:
		case <-ctx.Done():
			break feed
		}
	}
	close(next)
	wg.Wait()
	if firstErr != nil {
		return nil, firstErr
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	return out, nil
}
