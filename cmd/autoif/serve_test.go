package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/autoif/autoif/natsbus"
	"github.com/autoif/autoif/proto"
)

// Bad `autoif serve` flags are one clear error before anything listens.
func TestServeFlagErrors(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "policy")
	app := newApp()
	app.Writer = io.Discard
	if err := app.Run([]string{"autoif", "model", "init", "--layers", "1", "--hidden", "32", "--heads", "2",
		"--intermediate", "64", "--max-positions", "128", "--out", dir}); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{nil, "--model is required"},
		{[]string{"--model", dir, "--max-batch", "0"}, "--max-batch 0"},
		{[]string{"--model", dir, "--max-queue", "-1"}, "--max-queue -1"},
		{[]string{"--model", dir, "--max-model-len", "1000"}, "exceeds the model's 128 positions"},
		{[]string{"--model", dir, "--port", "70000"}, "--port 70000"},
		{[]string{"--model", dir, "--adapter", filepath.Join(dir, "nope")}, "nope"},
		{[]string{"--model", filepath.Join(dir, "nope")}, "nope"},
	} {
		app := newApp()
		app.Writer, app.ErrWriter = io.Discard, io.Discard
		err := app.Run(append([]string{"autoif", "serve"}, tc.args...))
		if err == nil || !strings.Contains(err.Error(), tc.want) || strings.Contains(err.Error(), "\n") {
			t.Errorf("%v: error %v, want one line containing %q", tc.args, err, tc.want)
		}
	}
	app = newApp()
	app.Writer, app.ErrWriter = io.Discard, io.Discard
	if err := app.Run([]string{"autoif", "--run", "r1", "serve"}); err == nil || !strings.Contains(err.Error(), "--run r1 needs --nats") {
		t.Errorf("--run without --nats: %v", err)
	}
}

// `autoif serve --run ID` serves the run's policy and swaps to a version published while
// clients keep asking: no request fails, each says which version answered, and every answer
// is that version's (one greedy answer per version, and the two differ).
func TestServeFollowsARunUnderLoad(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	root := t.TempDir()
	bus, err := natsbus.Connect(ctx, natsbus.Options{StoreDir: filepath.Join(root, "jetstream")})
	if err != nil {
		t.Fatal(err)
	}
	defer bus.Close()
	run, err := proto.NewRun("serve-follow")
	if err != nil {
		t.Fatal(err)
	}
	res, err := natsbus.EnsureRun(ctx, bus.JS, run, natsbus.RunOptions{Memory: true})
	if err != nil {
		t.Fatal(err)
	}
	v0 := writeTinyPolicy(t)
	v1 := filepath.Join(t.TempDir(), "v1")
	app := newApp()
	app.Writer = io.Discard
	if err := app.Run([]string{"autoif", "model", "init", "--layers", "1", "--hidden", "32", "--heads", "2",
		"--intermediate", "64", "--max-positions", "512", "--seed", "4", "--out", v1}); err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	sctx, stop := context.WithCancel(ctx)
	served := make(chan error, 1)
	go func() {
		app := newApp()
		app.Writer, app.ErrWriter = io.Discard, io.Discard
		served <- app.RunContext(sctx, []string{"autoif", "--nats", bus.URL(), "--run", run.ID, "--run-dir", root, "--log-level", "warn",
			"serve", "--memory", "--model", v0, "--port", strconv.Itoa(port), "--threads", "1"})
	}()
	url := fmt.Sprintf("http://127.0.0.1:%d", port)
	deadline := time.Now().Add(20 * time.Second)
	for {
		if resp, err := http.Get(url + "/health"); err == nil && resp.StatusCode == 200 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the server did not come up")
		}
		time.Sleep(20 * time.Millisecond)
	}
	// ask returns the answering version and the text, failing the test on any error.
	ask := func() (string, string) {
		resp, err := http.Post(url+"/v1/completions", "application/json", strings.NewReader(`{"model": "serve-follow", "prompt": "Hi", "max_tokens": 6, "temperature": 0, "ignore_eos": true, "logprobs": 0}`))
		if err != nil {
			t.Error(err)
			return "", ""
		}
		defer resp.Body.Close()
		var out struct {
			Choices []struct {
				Text     string `json:"text"`
				Logprobs struct {
					TokenLogprobs []float32 `json:"token_logprobs"`
				} `json:"logprobs"`
			} `json:"choices"`
		}
		if err := json.NewDecoder(resp.Body).Decode(&out); err != nil || resp.StatusCode != 200 || len(out.Choices) != 1 {
			t.Errorf("status %d, %v", resp.StatusCode, err)
			return "", ""
		}
		// The answer with its log-probs: two random tiny models may agree on greedy text.
		return resp.Header.Get("X-Autoif-Policy-Version"), fmt.Sprint(out.Choices[0].Text, out.Choices[0].Logprobs.TokenLogprobs)
	}
	_, text0 := ask()
	var mu sync.Mutex
	texts := map[string]map[string]bool{}
	var wg sync.WaitGroup
	loadCtx, stopLoad := context.WithCancel(ctx)
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for loadCtx.Err() == nil {
				v, text := ask()
				mu.Lock()
				if texts[v] == nil {
					texts[v] = map[string]bool{}
				}
				texts[v][text] = true
				mu.Unlock()
			}
		}()
	}
	time.Sleep(50 * time.Millisecond)
	entries, err := os.ReadDir(v1)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		f, err := os.Open(filepath.Join(v1, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		_, err = res.Checkpoints.Put(ctx, jetstream.ObjectMeta{Name: run.CheckpointObject(1, e.Name())}, f)
		f.Close()
		if err != nil {
			t.Fatal(err)
		}
	}
	if _, err := res.Policy.Put(ctx, proto.PolicyCurrentKey, []byte("1")); err != nil {
		t.Fatal(err)
	}
	for {
		mu.Lock()
		swapped := len(texts["1"]) > 0
		mu.Unlock()
		if swapped || time.Now().After(deadline.Add(20*time.Second)) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	stopLoad()
	wg.Wait()
	stop()
	if err := <-served; err != nil {
		t.Fatal(err)
	}
	if len(texts["0"]) != 1 || !texts["0"][text0] || len(texts["1"]) != 1 || texts["1"][text0] || len(texts) != 2 {
		t.Fatalf("answers by version: %v (v0 alone answered %q)", texts, text0)
	}
}

// `autoif bench serve` ends with its figures as JSON.
func TestBenchServeLastLineJSON(t *testing.T) {
	app := newApp()
	var out strings.Builder
	app.Writer = &out
	if err := app.Run([]string{"autoif", "bench", "serve", "--model", writeTinyPolicy(t), "--clients", "2", "--requests", "3", "--max-tokens", "4", "--threads", "1"}); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	var r struct {
		Sequential, Concurrent struct{ Tokens int }
		Speedup                float64
	}
	if err := json.Unmarshal([]byte(lines[len(lines)-1]), &r); err != nil || r.Sequential.Tokens != 12 || r.Concurrent.Tokens != 12 || r.Speedup <= 0 {
		t.Fatalf("last line %q: %+v %v", lines[len(lines)-1], r, err)
	}
}
