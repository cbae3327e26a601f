// Package endpoint samples responses from an OpenAI-compatible chat completions server (vLLM,
// SGLang, llama.cpp, TGI, OpenAI itself), for evaluating a model served elsewhere.
package endpoint

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
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
				text, err := complete(ctx, prompts[i], o)
				if err != nil {
					mu.Lock()
					if firstErr == nil {
						firstErr = fmt.Errorf("endpoint %s, prompt %d: %w", chatURL(o.URL), i+1, err)
					}
					mu.Unlock()
					cancel()
					continue
				}
				out[i] = text
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

type chatRequest struct {
	Model       string        `json:"model"`
	Messages    []chatMessage `json:"messages"`
	Temperature float64       `json:"temperature"`
	MaxTokens   int           `json:"max_tokens,omitempty"`
}

type chatMessage struct {
	Role    string `json:"role"`
	Content string `json:"content"`
}

type chatResponse struct {
	Choices []struct {
		Message chatMessage `json:"message"`
	} `json:"choices"`
	Error *struct {
		Message string `json:"message"`
	} `json:"error"`
}

func complete(ctx context.Context, prompt string, o Options) (string, error) {
	body, err := json.Marshal(chatRequest{Model: o.Model, Messages: []chatMessage{{Role: "user", Content: prompt}},
		Temperature: o.Temperature, MaxTokens: o.MaxTokens})
	if err != nil {
		return "", err
	}
	ctx, cancel := context.WithTimeout(ctx, o.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, chatURL(o.URL), bytes.NewReader(body))
	if err != nil {
		return "", err
	}
	req.Header.Set("Content-Type", "application/json")
	if o.APIKey != "" {
		req.Header.Set("Authorization", "Bearer "+o.APIKey)
	}
	resp, err := o.Client.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return "", err
	}
	var cr chatResponse
	jerr := json.Unmarshal(data, &cr)
	if resp.StatusCode/100 != 2 {
		msg := strings.TrimSpace(string(data))
		if jerr == nil && cr.Error != nil {
			msg = cr.Error.Message
		}
		if len(msg) > 200 {
			msg = msg[:200] + "..."
		}
		return "", fmt.Errorf("HTTP %d: %s", resp.StatusCode, msg)
	}
	if jerr != nil {
		return "", fmt.Errorf("reply is not JSON: %v", jerr)
	}
	if len(cr.Choices) == 0 {
		return "", errors.New("reply has no choices")
	}
	return cr.Choices[0].Message.Content, nil
}
