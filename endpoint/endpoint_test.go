package endpoint

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
)

// A server speaking the chat completions protocol: it answers each user message reversed,
// and checks the request carries the model, the temperature, the token cap and the key.
func chatServer(t *testing.T, fail string) (*httptest.Server, *atomic.Int32) {
	var calls atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		calls.Add(1)
		var req wireRequest
		if r.URL.Path != "/v1/chat/completions" || json.NewDecoder(r.Body).Decode(&req) != nil {
			http.Error(w, `{"error": {"message": "bad request"}}`, http.StatusBadRequest)
			return
		}
		if req.Model != "m" || req.Temperature != 0 || req.MaxTokens != 16 || r.Header.Get("Authorization") != "Bearer k" || len(req.Messages) != 1 {
			t.Errorf("request %+v, auth %q", req, r.Header.Get("Authorization"))
		}
		if fail != "" && req.Messages[0].Content == fail {
			w.WriteHeader(http.StatusTooManyRequests)
			w.Write([]byte(`{"error": {"message": "rate limited"}}`))
			return
		}
		rs := []rune(req.Messages[0].Content)
		for i, j := 0, len(rs)-1; i < j; i, j = i+1, j-1 {
			rs[i], rs[j] = rs[j], rs[i]
		}
		json.NewEncoder(w).Encode(map[string]any{"choices": []any{map[string]any{"message": map[string]any{"role": "assistant", "content": string(rs)}}}})
	}))
	t.Cleanup(srv.Close)
	return srv, &calls
}

func TestCompleteReturnsResponsesInPromptOrder(t *testing.T) {
	srv, _ := chatServer(t, "")
	prompts := []string{"abc", "héllo", "", "1 2 3", "xyz"}
	got, err := Complete(context.Background(), prompts, Options{URL: srv.URL + "/v1/", Model: "m", APIKey: "k", MaxTokens: 16, Concurrency: 3})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"cba", "olléh", "", "3 2 1", "zyx"}
	if strings.Join(got, "|") != strings.Join(want, "|") {
		t.Errorf("got %q, want %q", got, want)
	}
}

// A failing request is one error naming the prompt and the server's message; the other
// prompts are not all sent.
func TestCompleteStopsAtTheFirstFailure(t *testing.T) {
	srv, calls := chatServer(t, "p2")
	prompts := make([]string, 50)
	for i := range prompts {
		prompts[i] = "p" + string(rune('0'+i%10))
	}
	_, err := Complete(context.Background(), prompts, Options{URL: srv.URL + "/v1/chat/completions", Model: "m", APIKey: "k", MaxTokens: 16, Concurrency: 1})
	if err == nil || !strings.Contains(err.Error(), "prompt 3: HTTP 429: rate limited") {
		t.Errorf("error %v", err)
	}
	if n := calls.Load(); n != 3 {
		t.Errorf("%d requests sent, want 3 (stop at the failure)", n)
	}
	if _, err := Complete(context.Background(), prompts, Options{URL: srv.URL + "/wrong", Model: "m"}); err == nil || !strings.Contains(err.Error(), "HTTP 400: bad request") {
		t.Errorf("wrong path: %v", err)
	}
}
