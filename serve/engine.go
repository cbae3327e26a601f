package serve

import (
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"sort"
	"sync"

	"github.com/autoif/autoif/model"
)

// Policy is one version of the weights the server answers with.
type Policy struct {
	Model   *model.Model
	Version int64
}

// seq is one sequence (one choice of one request) as the engine decodes it. The handler
// that submitted it reads its events; cancelling ctx (client gone, stop string seen) makes
// the engine drop it at the next step and free its row.
type seq struct {
	ctx       context.Context
	policy    *Policy
	prompt    []int
	opts      model.SampleOptions
	rng       *rand.Rand
	maxTokens int
	eos       map[int]bool // nil with ignore_eos
	topN      int          // alternatives reported per token (top_logprobs)
	// events never blocks the engine: it holds every event the sequence can produce.
	events chan event

	row, generated, last int
}

// event is one decoded token, or the end of a sequence.
type event struct {
	Token   int
	LogProb float32
	Top     []tokenLogProb
	// EOS marks the end-of-sequence token: counted, never shown as text.
	EOS bool
	// Finish is "stop" or "length" on a sequence's last event.
	Finish string
	Err    error
}

type tokenLogProb struct {
	Token   int
	LogProb float32
}

// job is what one request submits: its sequences join the batch together.
type job struct{ seqs []*seq }

// abandoned reports whether every client of the job has gone: it need not wait for rows.
func (j *job) abandoned() bool {
	for _, s := range j.seqs {
		if s.ctx.Err() == nil {
			return false
		}
	}
	return true
}

var errQueueFull = errors.New("the server is at capacity: every batch slot is busy and the queue is full")

// engine decodes every running sequence in one batch over one KV cache: continuous
// batching. A sequence takes a free row at the next step (its prompt is prefilled in the
// same forward pass as the other rows' decode tokens) and leaves when it finishes or is
// cancelled, so a long request never holds back a short one.
type engine struct {
	maxBatch, maxQueue, maxLen int
	// queue holds submitted jobs; the one the loop has taken out and holds until rows free
	// up still counts against maxQueue (queued counts both).
	queue   chan *job
	sampler *model.Sampler

	// done is closed when run returns: a handler still waiting then stops waiting.
	done chan struct{}

	mu              sync.Mutex
	running, queued int // for Load and the metrics
	steps           func(batch int)
}

func newEngine(maxBatch, maxQueue, maxLen, vocab int) *engine {
	return &engine{
		maxBatch: maxBatch, maxQueue: maxQueue, maxLen: maxLen, queue: make(chan *job, maxQueue),
		sampler: model.NewSampler(vocab), done: make(chan struct{}),
	}
}

// submit queues a job, or fails at once when the queue is full (the caller answers 503).
func (e *engine) submit(j *job) error {
	for _, s := range j.seqs {
		s.events = make(chan event, s.maxTokens+1)
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.queued >= e.maxQueue {
		return errQueueFull
	}
	e.queued++
	e.queue <- j // never blocks: the channel holds maxQueue jobs and at most that many wait
	return nil
}

// load is how many sequences are decoding and how many requests wait for rows.
func (e *engine) load() (running, queued int) {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.running, e.queued
}

// run decodes until ctx ends. The KV cache is the engine's alone: rows are handed out here
// and nowhere else.
func (e *engine) run(ctx context.Context, m *model.Model) {
	defer close(e.done)
	kc := m.NewCache(e.maxBatch, e.maxLen)
	rows := make([]*seq, e.maxBatch)
	var waiting *job
	for {
		active := e.reap(rows)
		// Admit waiting jobs while their sequences fit; block only when nothing runs.
		for {
			if waiting == nil {
				if active == 0 {
					select {
					case <-ctx.Done():
						e.abort(rows, ctx.Err())
						return
					case waiting = <-e.queue:
					}
				} else {
					select {
					case waiting = <-e.queue:
					default:
					}
				}
				if waiting == nil {
					break
				}
			}
			if e.maxBatch-active < len(waiting.seqs) && !waiting.abandoned() {
				break
			}
			e.mu.Lock()
			e.queued--
			e.mu.Unlock()
			for _, s := range waiting.seqs {
				if s.ctx.Err() != nil {
					continue // the client left while queued
				}
				r := freeRow(rows)
				rows[r], s.row, s.generated = s, r, 0
				kc.Len[r] = 0
				active++
			}
			waiting = nil
		}
		if ctx.Err() != nil {
			e.abort(rows, ctx.Err())
			return
		}
		e.mu.Lock()
		e.running = active
		e.mu.Unlock()
		if active == 0 {
			continue
		}
		e.step(kc, rows)
		e.mu.Lock()
		e.running = e.maxBatch - countNil(rows)
		e.mu.Unlock()
	}
}

func countNil(rows []*seq) int {
	n := 0
	for _, s := range rows {
		if s == nil {
			n++
		}
	}
	return n
}

func freeRow(rows []*seq) int {
	for i, s := range rows {
		if s == nil {
			return i
		}
	}
	panic("serve: no free row") // admission counts rows first
}

// reap frees the rows of cancelled sequences and returns how many rows stay busy.
func (e *engine) reap(rows []*seq) int {
	n := 0
	for r, s := range rows {
		if s == nil {
			continue
		}
		if s.ctx.Err() != nil {
			rows[r] = nil
			continue
		}
		n++
	}
	e.mu.Lock()
	e.running = n
	e.mu.Unlock()
	return n
}

func (e *engine) abort(rows []*seq, err error) {
	for r, s := range rows {
		if s != nil {
			s.events <- event{Err: err}
			rows[r] = nil
		}
	}
	e.mu.Lock()
	e.running = 0
	e.mu.Unlock()
}

// step runs one forward pass per policy version present (rows of a version started before a
// hot-swap finish on it; all versions share the cache's shape) and samples every row.
func (e *engine) step(kc *model.Cache, rows []*seq) {
	var policies []*Policy
	for _, s := range rows {
		if s != nil && !containsPolicy(policies, s.policy) {
			policies = append(policies, s.policy)
		}
	}
	batch := 0
	for _, p := range policies {
		tokens := make([][]int, len(rows))
		for r, s := range rows {
			if s == nil || s.policy != p {
				continue
			}
			if s.generated == 0 {
				tokens[r] = s.prompt
			} else {
				tokens[r] = []int{s.last}
			}
			batch++
		}
		logits, err := p.Model.Forward(kc, tokens, false)
		if err != nil {
			for r, s := range rows {
				if s != nil && s.policy == p {
					s.events <- event{Err: fmt.Errorf("decode: %w", err)}
					rows[r] = nil
				}
			}
			continue
		}
		for r, lg := range logits {
			if lg != nil {
				e.advance(kc, rows, r, lg)
			}
		}
	}
	if e.steps != nil {
		e.steps(batch)
	}
}

// advance samples row r's next token from its logits and sends it; a finished sequence
// leaves its row.
func (e *engine) advance(kc *model.Cache, rows []*seq, r int, logits []float32) {
	s := rows[r]
	tok, lp := e.sampler.Sample(logits, s.opts, s.rng)
	ev := event{Token: tok, LogProb: lp}
	if s.topN > 0 {
		ev.Top = topLogProbs(logits, s.topN)
	}
	s.generated++
	s.last = tok
	switch {
	case s.eos[tok]:
		ev.EOS, ev.Finish = true, "stop"
	case s.generated >= s.maxTokens || kc.Len[r] >= kc.MaxLen:
		ev.Finish = "length"
	}
	s.events <- ev
	if ev.Finish != "" {
		rows[r] = nil
	}
}

func containsPolicy(ps []*Policy, p *Policy) bool {
	for _, q := range ps {
		if q == p {
			return true
		}
	}
	return false
}

// topLogProbs returns the n most likely tokens with their temperature-1 log-probs (the
// scale the sampled token's log-prob is on), most likely first, ties by token id.
func topLogProbs(logits []float32, n int) []tokenLogProb {
	mx := math.Inf(-1)
	for _, v := range logits {
		mx = max(mx, float64(v))
	}
	var z float64
	for _, v := range logits {
		z += math.Exp(float64(v) - mx)
	}
	logZ := mx + math.Log(z)
	n = min(n, len(logits))
	// A running top-n: n is at most 20, far below any vocabulary.
	top := make([]int, 0, n+1)
	better := func(a, b int) bool { return logits[a] > logits[b] || (logits[a] == logits[b] && a < b) }
	for i := range logits {
		if len(top) == n && !better(i, top[n-1]) {
			continue
		}
		at := sort.Search(len(top), func(k int) bool { return better(i, top[k]) })
		top = append(top, 0)
		copy(top[at+1:], top[at:])
		top[at] = i
		if len(top) > n {
			top = top[:n]
		}
	}
	out := make([]tokenLogProb, len(top))
	for k, id := range top {
		out[k] = tokenLogProb{id, float32(float64(logits[id]) - logZ)}
	}
	return out
}
