package serve

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/autoif/autoif/model"
	"github.com/autoif/autoif/tokenizer"
)

// request is a validated completion request of either endpoint: prompts × n sequences.
type request struct {
	prompts      [][]int
	n            int
	opts         model.SampleOptions
	seed         uint64
	maxTokens    *int
	stop         []string
	ignoreEOS    bool
	topN         int // alternatives per token
	logprobs     bool
	stream       bool
	includeUsage bool
}

// maxTopLogprobs bounds the alternatives reported per token, as the OpenAI API does.
const maxTopLogprobs = 20

// parseSampling validates the parameters both endpoints share.
func (s *Server) parseSampling(p sampling, maxTokens *int, maxTokensParam string) (*request, *apiError) {
	rq := &request{n: 1, opts: model.SampleOptions{Temperature: 1, TopP: 1}, stop: p.Stop, ignoreEOS: p.IgnoreEOS, stream: p.Stream}
	if p.N != nil {
		rq.n = *p.N
		if rq.n < 1 || rq.n > s.opts.MaxBatch {
			return nil, invalid("n", "n is %d: want 1 to %d (the server's batch size)", rq.n, s.opts.MaxBatch)
		}
	}
	if p.Temperature != nil {
		rq.opts.Temperature = *p.Temperature
		if rq.opts.Temperature < 0 || rq.opts.Temperature > 2 {
			return nil, invalid("temperature", "temperature is %g: want 0 to 2", rq.opts.Temperature)
		}
	}
	if p.TopP != nil {
		rq.opts.TopP = *p.TopP
		if rq.opts.TopP <= 0 || rq.opts.TopP > 1 {
			return nil, invalid("top_p", "top_p is %g: want more than 0 and at most 1", rq.opts.TopP)
		}
	}
	if p.TopK != nil {
		switch k := *p.TopK; {
		case k == -1 || k == 0: // vLLM's -1 and 0 both keep every token
		case k > 0:
			rq.opts.TopK = k
		default:
			return nil, invalid("top_k", "top_k is %d: want -1 (all tokens) or a positive number", k)
		}
	}
	if maxTokens != nil {
		if *maxTokens < 1 {
			return nil, invalid(maxTokensParam, "%s is %d: want at least 1", maxTokensParam, *maxTokens)
		}
		rq.maxTokens = maxTokens
	}
	for _, st := range rq.stop {
		if st == "" {
			return nil, invalid("stop", "stop strings must not be empty")
		}
	}
	if p.Seed != nil {
		rq.seed = uint64(*p.Seed)
	} else {
		rq.seed = rand.Uint64()
	}
	if p.StreamOptions != nil {
		if !p.Stream {
			return nil, invalid("stream_options", "stream_options needs stream: true")
		}
		rq.includeUsage = p.StreamOptions.IncludeUsage
	}
	return rq, nil
}

// checkPrompts validates the prompts against the vocabulary and the context length.
func (s *Server) checkPrompts(rq *request, vocab int) *apiError {
	if len(rq.prompts)*rq.n > s.opts.MaxBatch {
		return invalid("n", "%d prompts × n %d sequences exceed the server's batch size %d", len(rq.prompts), rq.n, s.opts.MaxBatch)
	}
	for _, p := range rq.prompts {
		if len(p) == 0 {
			return invalid("prompt", "the prompt has no tokens")
		}
		for _, id := range p {
			if id < 0 || id >= vocab {
				return invalid("prompt", "token id %d is outside the vocabulary of %d", id, vocab)
			}
		}
		if len(p) >= s.opts.MaxLen {
			return withCode(invalid("messages", "the prompt has %d tokens; this model's maximum context length is %d tokens", len(p), s.opts.MaxLen), "context_length_exceeded")
		}
		if rq.maxTokens != nil && len(p)+*rq.maxTokens > s.opts.MaxLen {
			return withCode(invalid("max_tokens", "this model's maximum context length is %d tokens; the prompt has %d and %d completion tokens were requested", s.opts.MaxLen, len(p), *rq.maxTokens), "context_length_exceeded")
		}
	}
	return nil
}

// choice follows one sequence's output: text decoded so far, text already sent, and the
// logprob entries of the tokens behind the text.
type choice struct {
	index  int
	seq    *seq
	cancel context.CancelFunc
	dec    *tokenizer.StreamDecoder
	// prefix is the echoed prompt text, ahead of the completion.
	text       string
	sent       int
	tokens     []outToken
	sentTokens int
	finish     string
	generated  int
}

// outToken is one completion token with the offset of its text in the choice's text.
type outToken struct {
	event
	offset int
}

// add takes the sequence's next event and returns the text that may now be sent: everything
// decoded, less a tail that could still grow into a stop string; at a stop string the text
// is cut before it and the sequence is cancelled.
func (c *choice) add(ev event, stops []string, tok *tokenizer.Tokenizer) string {
	c.generated++
	if !ev.EOS {
		c.tokens = append(c.tokens, outToken{ev, len(c.text)})
		piece, err := c.dec.Add(ev.Token)
		if err != nil {
			piece = "\ufffd" // an id past the tokenizer's vocabulary (a padded embedding)
		}
		c.text += piece
	}
	if ev.Finish != "" {
		c.text += c.dec.Flush()
	}
	if cut := indexStop(c.text, stops, c.sent); cut >= 0 {
		c.text = c.text[:cut]
		for len(c.tokens) > 0 && c.tokens[len(c.tokens)-1].offset >= cut {
			c.tokens = c.tokens[:len(c.tokens)-1]
		}
		c.finish = "stop"
		c.cancel()
	} else if ev.Finish != "" {
		c.finish = ev.Finish
	}
	end := len(c.text)
	if c.finish == "" {
		end -= heldBack(c.text, stops)
	}
	out := c.text[c.sent:max(end, c.sent)]
	c.sent = max(end, c.sent)
	return out
}

// pendingTokens returns the tokens whose text has been sent and not yet reported.
func (c *choice) pendingTokens() []outToken {
	n := c.sentTokens
	for n < len(c.tokens) && (c.finish != "" || c.tokens[n].offset < c.sent) {
		n++
	}
	out := c.tokens[c.sentTokens:n]
	c.sentTokens = n
	return out
}

// indexStop returns where the first stop string starts in text, searching from about from
// (a stop string may straddle what was already sent only if it was held back), or -1.
func indexStop(text string, stops []string, from int) int {
	best := -1
	for _, st := range stops {
		lo := max(0, from-len(st)+1)
		if i := strings.Index(text[lo:], st); i >= 0 && (best < 0 || lo+i < best) {
			best = lo + i
		}
	}
	return best
}

// heldBack is the longest tail of text that is a proper prefix of a stop string: text that
// must wait, since the next token may complete the stop and it must not be sent.
func heldBack(text string, stops []string) int {
	n := 0
	for _, st := range stops {
		for k := min(len(st)-1, len(text)); k > n; k-- {
			if strings.HasSuffix(text, st[:k]) {
				n = k
				break
			}
		}
	}
	return n
}

// start submits the request's sequences on the current policy. The returned choices are
// ordered prompt-major (index = prompt·n + j), each sequence seeded with (seed, index).
func (s *Server) start(ctx context.Context, rq *request) (*Policy, []*choice, *apiError) {
	p := s.Policy()
	eos := map[int]bool{}
	if !rq.ignoreEOS {
		for _, id := range s.eos {
			eos[id] = true
		}
	}
	var choices []*choice
	j := &job{}
	for pi, prompt := range rq.prompts {
		maxTokens := s.opts.MaxLen - len(prompt)
		if rq.maxTokens != nil {
			maxTokens = *rq.maxTokens
		}
		for k := range rq.n {
			idx := pi*rq.n + k
			sctx, cancel := context.WithCancel(ctx)
			sq := &seq{
				ctx: sctx, policy: p, prompt: prompt, opts: rq.opts, maxTokens: maxTokens, eos: eos, topN: rq.topN,
				rng: rand.New(rand.NewPCG(rq.seed, uint64(idx))),
			}
			j.seqs = append(j.seqs, sq)
			choices = append(choices, &choice{index: idx, seq: sq, cancel: cancel, dec: s.tok.NewStreamDecoder()})
		}
	}
	if err := s.engine.submit(j); err != nil {
		for _, c := range choices {
			c.cancel()
		}
		s.metrics.rejected.Inc()
		return nil, nil, withCode(&apiError{Status: http.StatusServiceUnavailable, Message: err.Error(), Type: "server_error"}, "server_busy")
	}
	return p, choices, nil
}

// update is one choice's progress: new text, the tokens behind it, and its finish reason
// once done.
type update struct {
	c      *choice
	text   string
	tokens []outToken
}

// follow delivers every choice's updates to fn, in arrival order, until all choices finish;
// an error ends it early (the client left, or the decode loop stopped).
func (s *Server) follow(ctx context.Context, rq *request, choices []*choice, fn func(update) error) error {
	// The forwarders end with follow, even those whose sequence had more to say after a stop.
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	merged := make(chan struct {
		c  *choice
		ev event
	})
	for _, c := range choices {
		go func() {
			for {
				select {
				case ev := <-c.seq.events:
					select {
					case merged <- struct {
						c  *choice
						ev event
					}{c, ev}:
					case <-ctx.Done():
						return
					}
					if ev.Finish != "" || ev.Err != nil {
						return
					}
				case <-ctx.Done():
					return
				case <-s.engine.done:
					return
				}
			}
		}()
	}
	start := time.Now()
	var last time.Time
	open := len(choices)
	for open > 0 {
		var m struct {
			c  *choice
			ev event
		}
		select {
		case m = <-merged:
		case <-ctx.Done():
			return ctx.Err()
		case <-s.engine.done:
			return errors.New("the server is shutting down")
		}
		if m.ev.Err != nil {
			return m.ev.Err
		}
		c := m.c
		if c.finish != "" {
			continue // tokens decoded before the engine saw the stop's cancel
		}
		now := time.Now()
		if last.IsZero() {
			s.metrics.ttft.Observe(now.Sub(start).Seconds())
		} else {
			s.metrics.itl.Observe(now.Sub(last).Seconds())
		}
		last = now
		text := c.add(m.ev, rq.stop, s.tok)
		if c.finish != "" {
			open--
			c.cancel()
		}
		if err := fn(update{c: c, text: text, tokens: c.pendingTokens()}); err != nil {
			return err
		}
	}
	return nil
}

// sse writes Server-Sent Events.
type sse struct {
	w http.ResponseWriter
	f http.Flusher
}

func newSSE(w http.ResponseWriter, version int64) *sse {
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-cache")
	h.Set(VersionHeader, strconv.FormatInt(version, 10))
	w.WriteHeader(http.StatusOK)
	f, _ := w.(http.Flusher)
	return &sse{w, f}
}

func (e *sse) send(v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	if _, err := fmt.Fprintf(e.w, "data: %s\n\n", b); err != nil {
		return err
	}
	if e.f != nil {
		e.f.Flush()
	}
	return nil
}

func (e *sse) done() {
	fmt.Fprint(e.w, "data: [DONE]\n\n")
	if e.f != nil {
		e.f.Flush()
	}
}

func (s *Server) tokenText(id int) string { return s.decodeText([]int{id}) }

func tokenBytes(t string) []int {
	out := make([]int, len(t))
	for i := range len(t) {
		out[i] = int(t[i])
	}
	return out
}

func (rq *request) usage(choices []*choice) *usage {
	u := &usage{}
	for _, p := range rq.prompts {
		u.PromptTokens += len(p)
	}
	for _, c := range choices {
		u.CompletionTokens += c.generated
	}
	u.TotalTokens = u.PromptTokens + u.CompletionTokens
	return u
}

// finishOf is a choice's finish_reason, null while it runs.
func finishOf(c *choice) *string {
	if c.finish == "" {
		return nil
	}
	return ptr(c.finish)
}

// streamError ends a stream that broke after its headers went out: an error event, as vLLM
// sends one, then [DONE].
func streamError(e *sse, err error) {
	_ = e.send(map[string]*apiError{"error": {Message: err.Error(), Type: "server_error"}})
	e.done()
}

// failed answers a request that failed before streaming began.
func failed(w http.ResponseWriter, ctx context.Context, err error) {
	if ctx.Err() != nil {
		return // the client is gone
	}
	writeError(w, &apiError{Status: http.StatusInternalServerError, Message: err.Error(), Type: "server_error"})
}
