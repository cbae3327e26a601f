package synth

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

// NLI judges premise/hypothesis pairs: "entailment", "neutral" or "contradiction". A pair
// it cannot judge has an error and no label.
type NLI interface {
	Classify(ctx context.Context, pairs [][2]string) (labels []string, errs []error)
}

// LLMNLI judges pairs with an NLI prompt to a chat model.
type LLMNLI struct {
	LLM      LLM
	Sampling Sampling
	Prompts  Prompts
}

func (n LLMNLI) Classify(ctx context.Context, pairs [][2]string) ([]string, []error) {
	p := n.Prompts.withDefaults()
	prompts := make([]string, len(pairs))
	for i, pr := range pairs {
		prompts[i] = fill(p.NLI, "premise", pr[0], "hypothesis", pr[1])
	}
	labels, errs := make([]string, len(pairs)), make([]error, len(pairs))
	for i, res := range askAll(ctx, n.LLM, n.Sampling, prompts) {
		if res.Err != nil {
			errs[i] = res.Err
			continue
		}
		// With several samples the majority label wins; ties go to the first seen.
		count := map[string]int{}
		best := ""
		for _, c := range res.Choices {
			if l, ok := ParseNLILabel(c); ok {
				count[l]++
				if best == "" || count[l] > count[best] {
					best = l
				}
			}
		}
		if best == "" {
			errs[i] = errors.New("no NLI label in the completion")
			continue
		}
		labels[i] = best
	}
	return labels, errs
}

// TEINLI judges pairs with a text-classification server serving an NLI model, speaking
// Hugging Face text-embeddings-inference's /predict API: {"inputs": [[premise, hypothesis]]}
// answered by [[{"label", "score"}...]]. The label scored highest wins.
type TEINLI struct {
	// URL is the server's base URL or its /predict URL.
	URL         string
	APIKey      string
	Concurrency int
	Timeout     time.Duration
	Retries     int
	Client      *http.Client
}

func (t TEINLI) Classify(ctx context.Context, pairs [][2]string) ([]string, []error) {
	url := strings.TrimRight(t.URL, "/")
	if !strings.HasSuffix(url, "/predict") {
		url += "/predict"
	}
	if t.Concurrency <= 0 {
		t.Concurrency = 8
	}
	if t.Timeout <= 0 {
		t.Timeout = time.Minute
	}
	if t.Retries <= 0 {
		t.Retries = 3
	}
	if t.Client == nil {
		t.Client = &http.Client{}
	}
	labels, errs := make([]string, len(pairs)), make([]error, len(pairs))
	sem := make(chan struct{}, t.Concurrency)
	var wg sync.WaitGroup
	for i, p := range pairs {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			for attempt := 0; ; attempt++ {
				var retry bool
				labels[i], retry, errs[i] = t.one(ctx, url, p)
				if errs[i] == nil || !retry || attempt >= t.Retries || ctx.Err() != nil {
					return
				}
				select {
				case <-ctx.Done():
					return
				case <-time.After(time.Duration(250<<attempt) * time.Millisecond):
				}
			}
		}()
	}
	wg.Wait()
	return labels, errs
}

func (t TEINLI) one(ctx context.Context, url string, p [2]string) (label string, retry bool, err error) {
	body, _ := json.Marshal(map[string]any{"inputs": [][2]string{p}})
	ctx, cancel := context.WithTimeout(ctx, t.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return "", false, err
	}
	req.Header.Set("Content-Type", "application/json")
	if t.APIKey != "" {
		req.Header.Set("Authorization", "Bearer "+t.APIKey)
	}
	resp, err := t.Client.Do(req)
	if err != nil {
		return "", true, err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return "", true, err
	}
	if resp.StatusCode/100 != 2 {
		return "", resp.StatusCode == 429 || resp.StatusCode >= 500, fmt.Errorf("NLI server: HTTP %d: %s", resp.StatusCode, clip(strings.TrimSpace(string(data)), 200))
	}
	type scored struct {
		Label string  `json:"label"`
		Score float64 `json:"score"`
	}
	var batch [][]scored
	if json.Unmarshal(data, &batch) != nil || len(batch) != 1 {
		var single []scored
		if err := json.Unmarshal(data, &single); err != nil {
			return "", true, fmt.Errorf("NLI server: reply is not a list of labels: %v", err)
		}
		batch = [][]scored{single}
	}
	best := -1.0
	for _, s := range batch[0] {
		if s.Score > best {
			best, label = s.Score, strings.ToLower(s.Label)
		}
	}
	switch label {
	case "entailment", "neutral", "contradiction":
		return label, false, nil
	}
	return "", false, fmt.Errorf("NLI server: label %q is not entailment, neutral or contradiction", label)
}
