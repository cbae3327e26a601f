// Package serve answers the OpenAI HTTP API (chat completions, completions, models) with the
// policy: the API that vLLM, llama.cpp, Ollama and SGLang serve and that every generation and
// evaluation tool already speaks. Concurrent requests share decode steps over one KV cache
// (continuous batching), and the policy can be swapped for a newer version while requests
// run: each finishes on the version it started with and says which one answered.
package serve

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/autoif/autoif/tokenizer"
)

// VersionHeader names the response header that carries the answering policy version.
const VersionHeader = "X-Autoif-Policy-Version"

// Options configures a Server. Zero values take the defaults.
type Options struct {
	// ModelName is the id clients address (`model`); required.
	ModelName string
	// MaxBatch bounds the sequences decoding together (default 8); a request's n choices
	// each take one.
	MaxBatch int
	// MaxQueue bounds the requests waiting for batch slots (default 64); past it, 503.
	MaxQueue int
	// MaxLen is the context length, prompt plus completion (default the model's
	// max_position_embeddings, at most 4096: the KV cache holds MaxBatch rows of it).
	MaxLen int
	// APIKey, when set, is required as "Authorization: Bearer KEY" on /v1/ endpoints.
	APIKey string
	// ShutdownTimeout bounds how long Serve waits for requests in flight once its context
	// ends (default 30s).
	ShutdownTimeout time.Duration
	Logger          *slog.Logger
}

// Server serves one model name. Create it with New, run it with Serve.
type Server struct {
	opts    Options
	tok     *tokenizer.Tokenizer
	eos     []int
	policy  atomic.Pointer[Policy]
	engine  *engine
	metrics *metrics
	log     *slog.Logger
	created int64
	served  atomic.Bool
}

// New prepares a server for the policy p with its tokenizer.
func New(p *Policy, tok *tokenizer.Tokenizer, opts Options) (*Server, error) {
	if p == nil || p.Model == nil {
		return nil, errors.New("serve: no policy")
	}
	if tok == nil {
		return nil, errors.New("serve: no tokenizer")
	}
	if opts.ModelName == "" {
		return nil, errors.New("serve: the served model name is empty")
	}
	cfg := p.Model.Config
	if opts.MaxBatch == 0 {
		opts.MaxBatch = 8
	}
	if opts.MaxQueue == 0 {
		opts.MaxQueue = 64
	}
	if opts.MaxLen == 0 {
		opts.MaxLen = min(cfg.MaxPositionEmbeddings, 4096)
	}
	if opts.ShutdownTimeout == 0 {
		opts.ShutdownTimeout = 30 * time.Second
	}
	if opts.MaxBatch < 1 || opts.MaxQueue < 1 || opts.MaxLen < 2 {
		return nil, fmt.Errorf("serve: max batch %d, max queue %d, max length %d: want at least 1, 1 and 2", opts.MaxBatch, opts.MaxQueue, opts.MaxLen)
	}
	if cfg.MaxPositionEmbeddings > 0 && opts.MaxLen > cfg.MaxPositionEmbeddings {
		return nil, fmt.Errorf("serve: max length %d exceeds the model's %d positions", opts.MaxLen, cfg.MaxPositionEmbeddings)
	}
	if tok.VocabSize() > cfg.VocabSize {
		return nil, fmt.Errorf("serve: the tokenizer has %d tokens, the model only %d embeddings", tok.VocabSize(), cfg.VocabSize)
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	s := &Server{
		opts: opts, tok: tok, log: opts.Logger, created: time.Now().Unix(),
		eos:    append(append([]int(nil), cfg.EOSTokenIDs...), tok.EOSIDs()...),
		engine: newEngine(opts.MaxBatch, opts.MaxQueue, opts.MaxLen, cfg.VocabSize),
	}
	s.metrics = newMetrics(s)
	s.engine.steps = s.metrics.observeStep
	s.policy.Store(p)
	s.metrics.policyVersion.Set(float64(p.Version))
	return s, nil
}

// SetPolicy makes p answer every request that starts from now on; requests already running
// finish on the version they started with. p must have the shape of the current policy (its
// rows share the KV cache).
func (s *Server) SetPolicy(p *Policy) error {
	cur := s.policy.Load()
	a, b := cur.Model.Config, p.Model.Config
	if a.NumHiddenLayers != b.NumHiddenLayers || a.NumKeyValueHeads != b.NumKeyValueHeads || a.HeadDim != b.HeadDim || a.VocabSize != b.VocabSize {
		return fmt.Errorf("serve: policy v%d does not have the shape of v%d (layers, kv heads, head dim, vocab)", p.Version, cur.Version)
	}
	s.policy.Store(p)
	s.metrics.policyVersion.Set(float64(p.Version))
	s.log.Info("serving policy", "version", p.Version)
	return nil
}

// Policy is the version new requests start on.
func (s *Server) Policy() *Policy { return s.policy.Load() }

// Load reports how many sequences are decoding and how many requests wait for batch slots.
func (s *Server) Load() (running, queued int) { return s.engine.load() }

// Serve answers HTTP on ln until ctx ends, then stops accepting, lets the requests in flight
// finish (up to ShutdownTimeout) and stops the decode loop. It may run once.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	if s.served.Swap(true) {
		return errors.New("serve: the server has already served")
	}
	engineCtx, stopEngine := context.WithCancel(context.Background())
	defer stopEngine()
	go s.engine.run(engineCtx, s.policy.Load().Model)
	hs := &http.Server{Handler: s.Handler(), ReadHeaderTimeout: 10 * time.Second, BaseContext: func(net.Listener) context.Context { return engineCtx }}
	errc := make(chan error, 1)
	go func() { errc <- hs.Serve(ln) }()
	s.log.Info("serving", "addr", ln.Addr().String(), "model", s.opts.ModelName, "policy_version", s.Policy().Version, "max_batch", s.opts.MaxBatch, "max_len", s.opts.MaxLen)
	select {
	case err := <-errc:
		return fmt.Errorf("serve: %w", err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), s.opts.ShutdownTimeout)
	defer cancel()
	err := hs.Shutdown(sctx)
	stopEngine()
	<-s.engine.done
	s.log.Info("stopped serving", "addr", ln.Addr().String())
	if err != nil {
		return fmt.Errorf("serve: shutdown: %w", err)
	}
	return nil
}

// Handler routes the API. It needs Serve's decode loop running to answer completions.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /health", func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusOK) })
	mux.HandleFunc("GET /metrics", s.metrics.serveHTTP)
	mux.HandleFunc("GET /v1/models", s.auth(s.handleModels))
	mux.HandleFunc("POST /v1/chat/completions", s.auth(s.handleChat))
	mux.HandleFunc("POST /v1/completions", s.auth(s.handleCompletions))
	// Known paths with another method get a JSON 405 (a method pattern is more specific, so
	// these only see the methods the routes above do not take), unknown paths a JSON 404.
	for _, path := range []string{"/health", "/metrics", "/v1/models", "/v1/chat/completions", "/v1/completions"} {
		mux.HandleFunc(path, func(w http.ResponseWriter, r *http.Request) {
			writeError(w, &apiError{Status: http.StatusMethodNotAllowed, Message: fmt.Sprintf("%s does not take %s", r.URL.Path, r.Method), Type: "invalid_request_error"})
		})
	}
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, &apiError{Status: http.StatusNotFound, Message: fmt.Sprintf("no route %s %s", r.Method, r.URL.Path), Type: "invalid_request_error"})
	})
	return s.logRequests(mux)
}

func (s *Server) auth(h http.HandlerFunc) http.HandlerFunc {
	if s.opts.APIKey == "" {
		return h
	}
	want := "Bearer " + s.opts.APIKey
	return func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != want {
			writeError(w, withCode(&apiError{Status: http.StatusUnauthorized, Message: "missing or incorrect API key (send Authorization: Bearer KEY)", Type: "invalid_request_error"}, "invalid_api_key"))
			return
		}
		h(w, r)
	}
}

// statusWriter remembers the status for the request log.
type statusWriter struct {
	http.ResponseWriter
	status int
}

func (w *statusWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}

func (w *statusWriter) Flush() {
	if f, ok := w.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

func (s *Server) logRequests(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		sw := &statusWriter{ResponseWriter: w}
		h.ServeHTTP(sw, r)
		s.log.Info("request", "method", r.Method, "path", r.URL.Path, "status", sw.status, "duration", time.Since(start), "remote", r.RemoteAddr)
	})
}

func (s *Server) handleModels(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, modelList{Object: "list", Data: []modelCard{{ID: s.opts.ModelName, Object: "model", Created: s.created, OwnedBy: "autoif"}}})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func writeError(w http.ResponseWriter, e *apiError) {
	writeJSON(w, e.Status, map[string]*apiError{"error": e})
}

// decodeBody reads a JSON request body, at most 16 MiB.
func decodeBody(w http.ResponseWriter, r *http.Request, v any) *apiError {
	body := http.MaxBytesReader(w, r.Body, 16<<20)
	if err := json.NewDecoder(body).Decode(v); err != nil {
		return invalid("", "malformed JSON body: %v", err)
	}
	// Read to the end: only then does net/http watch the connection and cancel the
	// request's context when the client goes away, which frees its batch slot.
	_, _ = io.Copy(io.Discard, body)
	return nil
}

func (s *Server) checkModel(name string) *apiError {
	if name != s.opts.ModelName {
		return withCode(&apiError{Status: http.StatusNotFound, Message: fmt.Sprintf("the model %q does not exist; this server serves %q", name, s.opts.ModelName), Type: "invalid_request_error", Param: ptr("model")}, "model_not_found")
	}
	return nil
}

func ptr[T any](v T) *T { return &v }

func newID(prefix string) string {
	var b [12]byte
	_, _ = rand.Read(b[:])
	return prefix + hex.EncodeToString(b[:])
}

func fingerprint(version int64) string { return "autoif-policy-v" + strconv.FormatInt(version, 10) }

// decodeText is the tokenizer's Decode, which fails only on ids outside the vocabulary
// (the model's vocabulary may be padded past the tokenizer's).
func (s *Server) decodeText(ids []int) string {
	out, err := s.tok.Decode(ids)
	if err != nil {
		return "\ufffd"
	}
	return out
}
