package endpoint

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// faultServer answers "echo: PROMPT" with usage, except for prompts naming a fault, which it
// injects on the first attempts of that prompt.
type faultServer struct {
	*httptest.Server
	mu       sync.Mutex
	attempts map[string]int // by prompt
	sends    map[string]int // by request hash
	delay    time.Duration
}

func newFaultServer(t *testing.T, delay time.Duration) *faultServer {
	fs := &faultServer{attempts: map[string]int{}, sends: map[string]int{}, delay: delay}
	fs.Server = httptest.NewServer(http.HandlerFunc(fs.handle))
	t.Cleanup(fs.Close)
	return fs
}

func (fs *faultServer) handle(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	var req wireRequest
	if json.Unmarshal(body, &req) != nil || len(req.Messages) == 0 {
		http.Error(w, `{"error":{"message":"bad request"}}`, http.StatusBadRequest)
		return
	}
	h := sha256.Sum256(body)
	prompt := req.Messages[0].Content
	fs.mu.Lock()
	fs.attempts[prompt]++
	n := fs.attempts[prompt]
	fs.sends[hex.EncodeToString(h[:])]++
	fs.mu.Unlock()
	time.Sleep(fs.delay)
	switch {
	case prompt == "rate-limited" && n == 1:
		w.Header().Set("Retry-After", "1")
		w.WriteHeader(http.StatusTooManyRequests)
		w.Write([]byte(`{"error":{"message":"slow down"}}`))
		return
	case prompt == "flaky" && n <= 2:
		w.WriteHeader(http.StatusInternalServerError)
		return
	case prompt == "always-500":
		w.WriteHeader(http.StatusBadGateway)
		return
	case prompt == "hangs" && n == 1:
		select {
		case <-r.Context().Done():
		case <-time.After(5 * time.Second):
		}
		return
	case prompt == "cut" && n == 1:
		// Promise a long body, send half a JSON object, and drop the connection.
		w.Header().Set("Content-Length", "1000")
		w.WriteHeader(http.StatusOK)
		w.Write([]byte(`{"choices":[{"message":{"role":"assis`))
		w.(http.Flusher).Flush()
		conn, _, err := w.(http.Hijacker).Hijack()
		if err == nil {
			conn.Close()
		}
		return
	case prompt == "malformed" && n == 1:
		w.Write([]byte(`{"choices": [ oops`))
		return
	case prompt == "bad-request":
		http.Error(w, `{"error":{"message":"context too long"}}`, http.StatusBadRequest)
		return
	}
	var choices []any
	for i := range max(req.N, 1) {
		choices = append(choices, map[string]any{"index": i, "message": map[string]any{"role": "assistant", "content": fmt.Sprintf("echo %d: %s", i, prompt)}})
	}
	json.NewEncoder(w).Encode(map[string]any{"choices": choices,
		"usage": map[string]int{"prompt_tokens": 10, "completion_tokens": 5 * len(choices), "total_tokens": 10 + 5*len(choices)}})
}

// Every kind of transient fault is retried until answered, honouring Retry-After; a request
// that keeps failing or that the server refuses outright is one failure, and the rest finish.
func TestChatAllRetriesTransientFaultsAndCountsFailures(t *testing.T) {
	srv := newFaultServer(t, 0)
	c, err := NewClient(ClientOptions{URL: srv.URL + "/v1", Model: "m", Concurrency: 4, Retries: 3,
		Backoff: 10 * time.Millisecond, MaxBackoff: 50 * time.Millisecond, Timeout: 300 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	prompts := []string{"ok", "rate-limited", "flaky", "hangs", "cut", "malformed", "always-500", "bad-request"}
	var reqs []Request
	for _, p := range prompts {
		reqs = append(reqs, UserRequest(p, 2, 0.7, 0.9, 64))
	}
	start := time.Now()
	res := c.ChatAll(context.Background(), reqs)
	for i, p := range prompts {
		switch p {
		case "always-500", "bad-request":
			if res[i].Err == nil {
				t.Errorf("%s: no error", p)
			}
		default:
			if res[i].Err != nil || len(res[i].Choices) != 2 || res[i].Choices[1] != "echo 1: "+p {
				t.Errorf("%s: %+v", p, res[i])
			}
		}
	}
	if d := time.Since(start); d < time.Second {
		t.Errorf("finished in %s: the 429's Retry-After of 1 s was not honoured", d)
	}
	st := c.Stats()
	if st.Failures != 2 || st.Requests != 6 || st.PromptTokens != 60 || st.CompletionTokens != 60 {
		t.Errorf("stats %+v", st)
	}
	if srv.attempts["always-500"] != 4 || srv.attempts["bad-request"] != 1 || srv.attempts["flaky"] != 3 {
		t.Errorf("attempts %v: want 4 for always-500 (1+3 retries), 1 for a 400, 3 for flaky", srv.attempts)
	}
}

// A finished run's requests are answered from the cache on a rerun: nothing is sent.
func TestCachedRerunSendsNothing(t *testing.T) {
	srv := newFaultServer(t, 0)
	dir := t.TempDir()
	var reqs []Request
	for i := range 20 {
		reqs = append(reqs, UserRequest("p"+strconv.Itoa(i), 1, 0, 0, 0))
	}
	for run := range 2 {
		c, err := NewClient(ClientOptions{URL: srv.URL, Model: "m", CacheDir: dir})
		if err != nil {
			t.Fatal(err)
		}
		for i, r := range c.ChatAll(context.Background(), reqs) {
			if r.Err != nil || r.Choices[0] != "echo 0: p"+strconv.Itoa(i) || r.Cached != (run == 1) {
				t.Fatalf("run %d, request %d: %+v", run, i, r)
			}
		}
	}
	if n := len(srv.sends); n != 20 {
		t.Errorf("%d distinct requests sent, want 20", n)
	}
	for k, n := range srv.sends {
		if n != 1 {
			t.Errorf("request %s sent %d times", k[:8], n)
		}
	}
}

const killChildEnv = "ENDPOINT_KILL_CHILD_URL"

// TestMain runs the child that TestKilledRunResumesWithoutResending kills when this test
// binary is started as one.
func TestMain(m *testing.M) {
	if url := os.Getenv(killChildEnv); url != "" {
		os.Exit(killChild(url))
	}
	os.Exit(m.Run())
}

// killChild is the run that TestKilledRunResumesWithoutResending kills: it answers 200
// requests through a cache.
func killChild(url string) int {
	c, err := NewClient(ClientOptions{URL: url, Model: "m", Concurrency: 8, CacheDir: os.Getenv("ENDPOINT_KILL_CHILD_CACHE")})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	for _, r := range c.ChatAll(context.Background(), killRequests()) {
		if r.Err != nil {
			fmt.Fprintln(os.Stderr, r.Err)
			return 1
		}
	}
	return 0
}

func killRequests() []Request {
	var reqs []Request
	for i := range 200 {
		reqs = append(reqs, UserRequest("question "+strconv.Itoa(i), 1, 0.5, 0, 32))
	}
	return reqs
}

// A run killed with SIGKILL at a random point and started again sends no request twice whose
// answer it had stored, and ends with every request answered.
func TestKilledRunResumesWithoutResending(t *testing.T) {
	srv := newFaultServer(t, 20*time.Millisecond)
	cache := t.TempDir()
	child := func() *exec.Cmd {
		cmd := exec.Command(os.Args[0])
		cmd.Env = append(os.Environ(), killChildEnv+"="+srv.URL, "ENDPOINT_KILL_CHILD_CACHE="+cache)
		return cmd
	}
	first := child()
	if err := first.Start(); err != nil {
		t.Fatal(err)
	}
	// Kill at a random point: once a random number of answers has reached the cache.
	countStored := func() map[string]bool {
		stored := map[string]bool{}
		filepath.Walk(cache, func(p string, info os.FileInfo, err error) error {
			if err == nil && strings.HasSuffix(p, ".json") {
				stored[strings.TrimSuffix(filepath.Base(p), ".json")] = true
			}
			return nil
		})
		return stored
	}
	target := 10 + rand.IntN(150)
	for deadline := time.Now().Add(30 * time.Second); len(countStored()) < target && time.Now().Before(deadline); {
		time.Sleep(5 * time.Millisecond)
	}
	first.Process.Signal(syscall.SIGKILL)
	first.Wait()
	stored := countStored()
	srv.mu.Lock()
	before := len(srv.sends)
	srv.mu.Unlock()
	if len(stored) == 0 || len(stored) == 200 {
		t.Fatalf("the kill came at %d of 200 answers stored; want a point in the middle", len(stored))
	}
	if out, err := child().CombinedOutput(); err != nil {
		t.Fatalf("rerun: %v\n%s", err, out)
	}
	if len(srv.sends) != 200 {
		t.Errorf("%d distinct requests reached the server, want 200", len(srv.sends))
	}
	for k := range stored {
		if srv.sends[k] != 1 {
			t.Errorf("request %s, answered and stored before the kill, was sent %d times", k[:8], srv.sends[k])
		}
	}
	resent := 0
	for _, n := range srv.sends {
		resent += n - 1
	}
	// Only requests in flight at the kill (at most the concurrency, 8) may be sent again.
	if resent > 8 {
		t.Errorf("%d requests sent twice", resent)
	}
	t.Logf("killed after %d sent, %d stored; %d resent", before, len(stored), resent)
}

// With a server that takes 200 ms per answer, 32 requests in flight finish at least 20 times
// sooner than one at a time.
func TestConcurrencyThroughput(t *testing.T) {
	srv := newFaultServer(t, 200*time.Millisecond)
	elapsed := func(conc int, tag string) time.Duration {
		c, err := NewClient(ClientOptions{URL: srv.URL, Model: "m", Concurrency: conc})
		if err != nil {
			t.Fatal(err)
		}
		var reqs []Request
		for i := range 32 {
			reqs = append(reqs, UserRequest(tag+strconv.Itoa(i), 1, 0, 0, 0))
		}
		start := time.Now()
		for _, r := range c.ChatAll(context.Background(), reqs) {
			if r.Err != nil {
				t.Fatal(r.Err)
			}
		}
		return time.Since(start)
	}
	serial, parallel := elapsed(1, "s"), elapsed(32, "p")
	if ratio := float64(serial) / float64(parallel); ratio < 20 {
		t.Errorf("concurrency 1: %s, 32: %s; %.1fx, want >= 20x", serial, parallel, ratio)
	} else {
		t.Logf("concurrency 1: %s, 32: %s; %.1fx", serial, parallel, ratio)
	}
}

func TestRetryAfterHeader(t *testing.T) {
	if d := retryAfter("2"); d != 2*time.Second {
		t.Errorf("seconds: %s", d)
	}
	if d := retryAfter(time.Now().Add(3 * time.Second).UTC().Format(http.TimeFormat)); d < time.Second || d > 3*time.Second {
		t.Errorf("date: %s", d)
	}
	if d := retryAfter("soon"); d != 0 {
		t.Errorf("garbage: %s", d)
	}
}
