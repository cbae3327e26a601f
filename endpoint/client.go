package endpoint

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/autoif/autoif/atomicfile"
)

// Message is one chat message.
type Message struct {
	Role    string `json:"role"`
	Content string `json:"content"`
}

// Request is one chat completion request; the model comes from the client.
type Request struct {
	Messages []Message
	// N is how many completions to sample (0: the server's default, one).
	N int
	// Temperature 0 is greedy; TopP 0 and MaxTokens 0 leave the server's defaults.
	Temperature float64
	TopP        float64
	MaxTokens   int
}

// UserRequest is a request of one user message.
func UserRequest(prompt string, n int, temperature, topP float64, maxTokens int) Request {
	return Request{Messages: []Message{{Role: "user", Content: prompt}}, N: n, Temperature: temperature, TopP: topP, MaxTokens: maxTokens}
}

// Usage is the token accounting a server reports.
type Usage struct {
	PromptTokens     int `json:"prompt_tokens"`
	CompletionTokens int `json:"completion_tokens"`
	TotalTokens      int `json:"total_tokens"`
}

// Result is the answer to one request.
type Result struct {
	Choices []string `json:"choices"`
	Usage   Usage    `json:"usage"`
	// Cached says the answer came from the on-disk cache, not the server.
	Cached bool `json:"-"`
	// Err is set by ChatAll when the request failed after its retries.
	Err error `json:"-"`
}

// ClientOptions configure a Client.
type ClientOptions struct {
	// URL is the server's base URL (".../v1") or its chat completions URL.
	URL string
	// Model is the served model's name.
	Model string
	// APIKey, when set, is sent as a bearer token.
	APIKey string
	// Concurrency bounds the requests ChatAll has in flight (default 8).
	Concurrency int
	// Timeout bounds one attempt (default 10 minutes).
	Timeout time.Duration
	// Retries is how many times a failed attempt is retried when the failure is transient
	// (429, 408, 5xx, a timeout, a cut connection, a reply that is not JSON). Negative: none.
	Retries int
	// Backoff is the first retry's wait, doubled each retry with full jitter and capped at
	// MaxBackoff (defaults 500 ms and 30 s). A Retry-After header overrides it.
	Backoff, MaxBackoff time.Duration
	// CacheDir, when set, holds one file per answered request, named by the request's hash:
	// a request found there is not sent, so a killed run resumes where it stopped.
	CacheDir string
	// Client is the HTTP client (default: one without a global timeout).
	Client *http.Client
	// Progress, when set, gets a progress line about once a second while ChatAll runs.
	Progress io.Writer
	// Label names the work on the progress line.
	Label string
}

// Stats count a client's work so far.
type Stats struct {
	Requests         int64 `json:"requests"` // answered, from the server or the cache
	Cached           int64 `json:"cached"`   // of those, from the cache
	Failures         int64 `json:"failures"` // requests that failed after their retries
	Retries          int64 `json:"retries"`  // attempts repeated after a transient failure
	PromptTokens     int64 `json:"prompt_tokens"`
	CompletionTokens int64 `json:"completion_tokens"`
}

// Client sends chat completion requests with retries and an on-disk cache. It is safe for
// concurrent use.
type Client struct {
	o                                           ClientOptions
	url                                         string
	requests, cached, failures, retries, pt, ct atomic.Int64
}

// APIKeyFromEnv is the key in AUTOIF_API_KEY, else OPENAI_API_KEY.
func APIKeyFromEnv() string {
	if k := os.Getenv("AUTOIF_API_KEY"); k != "" {
		return k
	}
	return os.Getenv("OPENAI_API_KEY")
}

// NewClient checks the options and fills in defaults.
func NewClient(o ClientOptions) (*Client, error) {
	if o.URL == "" || o.Model == "" {
		return nil, errors.New("endpoint: a URL and a model name are required")
	}
	if !strings.HasPrefix(o.URL, "http://") && !strings.HasPrefix(o.URL, "https://") {
		return nil, fmt.Errorf("endpoint: URL %q: want http:// or https://", o.URL)
	}
	if o.Concurrency <= 0 {
		o.Concurrency = 8
	}
	if o.Timeout <= 0 {
		o.Timeout = 10 * time.Minute
	}
	if o.Retries < 0 {
		o.Retries = 0
	}
	if o.Backoff <= 0 {
		o.Backoff = 500 * time.Millisecond
	}
	if o.MaxBackoff <= 0 {
		o.MaxBackoff = 30 * time.Second
	}
	if o.Client == nil {
		o.Client = &http.Client{}
	}
	return &Client{o: o, url: chatURL(o.URL)}, nil
}

// Stats returns the counts so far.
func (c *Client) Stats() Stats {
	return Stats{Requests: c.requests.Load(), Cached: c.cached.Load(), Failures: c.failures.Load(),
		Retries: c.retries.Load(), PromptTokens: c.pt.Load(), CompletionTokens: c.ct.Load()}
}

type wireRequest struct {
	Model       string    `json:"model"`
	Messages    []Message `json:"messages"`
	N           int       `json:"n,omitempty"`
	Temperature float64   `json:"temperature"`
	TopP        float64   `json:"top_p,omitempty"`
	MaxTokens   int       `json:"max_tokens,omitempty"`
}

type wireResponse struct {
	Choices []struct {
		Message Message `json:"message"`
	} `json:"choices"`
	Usage Usage `json:"usage"`
	Error *struct {
		Message string `json:"message"`
	} `json:"error"`
}

// Key is the cache key of a request: the hash of what is sent, less the URL, so a cache
// survives moving the server but not changing the model or the sampling.
func (c *Client) Key(r Request) string {
	b, _ := json.Marshal(c.wire(r))
	h := sha256.Sum256(b)
	return hex.EncodeToString(h[:])
}

func (c *Client) wire(r Request) wireRequest {
	return wireRequest{Model: c.o.Model, Messages: r.Messages, N: r.N, Temperature: r.Temperature, TopP: r.TopP, MaxTokens: r.MaxTokens}
}

func (c *Client) cachePath(key string) string {
	return filepath.Join(c.o.CacheDir, key[:2], key+".json")
}

// Chat answers one request from the cache or the server, retrying transient failures.
func (c *Client) Chat(ctx context.Context, r Request) (Result, error) {
	res, err := c.chat(ctx, r)
	if err != nil {
		c.failures.Add(1)
		return Result{}, err
	}
	c.requests.Add(1)
	if res.Cached {
		c.cached.Add(1)
	} else {
		c.pt.Add(int64(res.Usage.PromptTokens))
		c.ct.Add(int64(res.Usage.CompletionTokens))
	}
	return res, nil
}

func (c *Client) chat(ctx context.Context, r Request) (Result, error) {
	key := ""
	if c.o.CacheDir != "" {
		key = c.Key(r)
		if data, err := os.ReadFile(c.cachePath(key)); err == nil {
			var res Result
			if json.Unmarshal(data, &res) == nil {
				res.Cached = true
				return res, nil
			}
		}
	}
	body, err := json.Marshal(c.wire(r))
	if err != nil {
		return Result{}, err
	}
	for attempt := 0; ; attempt++ {
		res, retryAfter, err := c.attempt(ctx, body)
		if err == nil {
			if key != "" {
				data, _ := json.Marshal(res)
				if err := os.MkdirAll(filepath.Dir(c.cachePath(key)), 0o755); err != nil {
					return Result{}, err
				}
				if err := atomicfile.WriteFile(c.cachePath(key), data, 0o644); err != nil {
					return Result{}, err
				}
			}
			return res, nil
		}
		var te transient
		if !errors.As(err, &te) || attempt >= c.o.Retries || ctx.Err() != nil {
			if ctx.Err() != nil {
				return Result{}, ctx.Err()
			}
			return Result{}, err
		}
		c.retries.Add(1)
		wait := retryAfter
		if wait <= 0 {
			ceil := min(c.o.MaxBackoff, c.o.Backoff<<min(attempt, 20))
			wait = time.Duration(rand.Int64N(int64(ceil))) + time.Millisecond
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return Result{}, ctx.Err()
		case <-t.C:
		}
	}
}

// transient marks a failure worth retrying.
type transient struct{ error }

func (t transient) Unwrap() error { return t.error }

// attempt sends one request. It returns the server's Retry-After on a 429 or 503.
func (c *Client) attempt(ctx context.Context, body []byte) (Result, time.Duration, error) {
	actx, cancel := context.WithTimeout(ctx, c.o.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(actx, http.MethodPost, c.url, bytes.NewReader(body))
	if err != nil {
		return Result{}, 0, err
	}
	req.Header.Set("Content-Type", "application/json")
	if c.o.APIKey != "" {
		req.Header.Set("Authorization", "Bearer "+c.o.APIKey)
	}
	resp, err := c.o.Client.Do(req)
	if err != nil {
		return Result{}, 0, transient{err}
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return Result{}, 0, transient{fmt.Errorf("reading the reply: %w", err)}
	}
	var wr wireResponse
	jerr := json.Unmarshal(data, &wr)
	if resp.StatusCode/100 != 2 {
		msg := strings.TrimSpace(string(data))
		if jerr == nil && wr.Error != nil {
			msg = wr.Error.Message
		}
		if len(msg) > 200 {
			msg = msg[:200] + "..."
		}
		err := fmt.Errorf("HTTP %d: %s", resp.StatusCode, msg)
		if resp.StatusCode == http.StatusTooManyRequests || resp.StatusCode == http.StatusRequestTimeout || resp.StatusCode >= 500 {
			return Result{}, min(retryAfter(resp.Header.Get("Retry-After")), 5*time.Minute), transient{err}
		}
		return Result{}, 0, err
	}
	if jerr != nil {
		// A proxy cutting a reply short or a server bug; asking again usually helps.
		return Result{}, 0, transient{fmt.Errorf("reply is not JSON: %v", jerr)}
	}
	if len(wr.Choices) == 0 {
		return Result{}, 0, transient{errors.New("reply has no choices")}
	}
	res := Result{Usage: wr.Usage}
	for _, ch := range wr.Choices {
		res.Choices = append(res.Choices, ch.Message.Content)
	}
	return res, 0, nil
}

// retryAfter reads a Retry-After header: seconds or an HTTP date.
func retryAfter(h string) time.Duration {
	h = strings.TrimSpace(h)
	if h == "" {
		return 0
	}
	if s, err := strconv.ParseFloat(h, 64); err == nil && s >= 0 {
		return time.Duration(s * float64(time.Second))
	}
	if t, err := http.ParseTime(h); err == nil {
		return max(time.Until(t), 0)
	}
	return 0
}

// ChatAll answers every request with at most Concurrency in flight. A request that fails
// after its retries has Err set in its result; the others go on. It stops early only when
// ctx ends, leaving the unsent requests with ctx's error.
func (c *Client) ChatAll(ctx context.Context, reqs []Request) []Result {
	out := make([]Result, len(reqs))
	var done, failed atomic.Int64
	start := time.Now()
	stopProgress := c.progress(ctx, len(reqs), &done, &failed, start)
	defer stopProgress()
	next := make(chan int)
	var wg sync.WaitGroup
	for range min(c.o.Concurrency, len(reqs)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				res, err := c.Chat(ctx, reqs[i])
				if err != nil {
					res.Err = err
					failed.Add(1)
				}
				out[i] = res
				done.Add(1)
			}
		}()
	}
	sent := 0
feed:
	for ; sent < len(reqs); sent++ {
		select {
		case next <- sent:
		case <-ctx.Done():
			break feed
		}
	}
	close(next)
	wg.Wait()
	for i := sent; i < len(reqs); i++ {
		out[i].Err = ctx.Err()
	}
	return out
}

// progress prints a line about once a second until the returned func is called, which
// prints the final line.
func (c *Client) progress(ctx context.Context, total int, done, failed *atomic.Int64, start time.Time) func() {
	if c.o.Progress == nil || total == 0 {
		return func() {}
	}
	label := c.o.Label
	if label == "" {
		label = c.o.Model
	}
	line := func(end string) {
		d, f := done.Load(), failed.Load()
		eta := "?"
		if d > 0 {
			eta = (time.Since(start) / time.Duration(d) * time.Duration(int64(total)-d)).Round(time.Second).String()
		}
		s := c.Stats()
		fmt.Fprintf(c.o.Progress, "\r%s: %d/%d requests, %d failed, %d cached, %d+%d tokens, ETA %s%s", label, d, total, f,
			s.Cached, s.PromptTokens, s.CompletionTokens, eta, end)
	}
	ctx, cancel := context.WithCancel(ctx)
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		t := time.NewTicker(time.Second)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				line("")
			}
		}
	}()
	return func() {
		cancel()
		<-stopped
		line("\n")
	}
}
