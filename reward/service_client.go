package reward

import (
	"context"
	crand "crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/autoif/autoif/proto"
)

// ClientOptions configure a Client. The zero value of every field means its default.
type ClientOptions struct {
	// Subject of the reward service. Default proto.RewardService.
	Subject string
	// Deadline is the per-evaluation deadline the servers run with, used to bound a request.
	// Default 2s, the pool's default.
	Deadline time.Duration
	// Slack is added to evaluations × Deadline to bound one attempt. Default 10s.
	Slack time.Duration
	// Timeout, when set, bounds every attempt instead of the bound derived above. An earlier
	// deadline of the caller's context always wins.
	Timeout time.Duration
	// Silence gives up on an attempt whose server has sent nothing (servers send a heartbeat
	// every second while they hold a request) for this long, and sends it again: the server
	// died or lost its connection. Default 5s.
	Silence time.Duration
	// Attempts is how many times a request is sent before the client gives up. Default 5.
	Attempts int
	// Backoff is the wait before the first retry; it doubles up to MaxBackoff, with jitter.
	// Defaults 100ms and 2s.
	Backoff, MaxBackoff time.Duration
	// Logger receives retries. Default slog.Default().
	Logger *slog.Logger
}

func (o ClientOptions) withDefaults() ClientOptions {
	if o.Subject == "" {
		o.Subject = proto.RewardService
	}
	if o.Deadline <= 0 {
		o.Deadline = 2 * time.Second
	}
	if o.Slack <= 0 {
		o.Slack = 10 * time.Second
	}
	if o.Silence <= 0 {
		o.Silence = 5 * time.Second
	}
	if o.Attempts <= 0 {
		o.Attempts = 5
	}
	if o.Backoff <= 0 {
		o.Backoff = 100 * time.Millisecond
	}
	if o.MaxBackoff <= 0 {
		o.MaxBackoff = 2 * time.Second
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	return o
}

var (
	// ErrNoServer: no reward server answered a request in all its attempts.
	ErrNoServer = errors.New("no reward server answered")
	// ErrTimeout: a server held the request (it kept sending heartbeats) but did not finish
	// it within the attempt's bound.
	ErrTimeout = errors.New("reward request timed out")
	// ErrClientClosed is returned by a Client used after Close.
	ErrClientClosed = errors.New("reward client closed")
)

// ServiceError is a reward server's refusal or failure of a whole request.
type ServiceError struct {
	Code    string // a proto.RewardCode* value
	Message string
}

func (e *ServiceError) Error() string { return "reward service error " + e.Code + ": " + e.Message }

// Retryable reports whether another attempt (perhaps on another server) may succeed.
func (e *ServiceError) Retryable() bool {
	return e.Code == proto.RewardCodeUnavailable || e.Code == proto.RewardCodeInternal
}

// ClientStats are a Client's running totals.
type ClientStats struct {
	Requests int64 `json:"requests"` // Do calls
	Replies  int64 `json:"replies"`  // Do calls answered with scores
	Failed   int64 `json:"failed"`   // Do calls that returned an error
	Attempts int64 `json:"attempts"` // request messages sent
	Retries  int64 `json:"retries"`  // attempts after the first
	// Why attempts were retried: the server went silent (died), no server was subscribed,
	// or a server refused or failed the request.
	Silent       int64 `json:"silent"`
	NoResponders int64 `json:"no_responders"`
	Refused      int64 `json:"refused"`
	// LateReplies answered a request through an attempt before the last one.
	LateReplies int64 `json:"late_replies"`
}

// Reply is a request as a server answered it.
type Reply struct {
	RequestID string
	// Server is the id of the server whose reply was taken.
	Server string
	// Attempts is how many times the request was sent.
	Attempts int
	// Elapsed is the server's scoring time.
	Elapsed time.Duration
	Result  *Result
}

// Client scores through the reward service: any number of servers in a queue group, found by
// NATS. It is safe for concurrent use; one Client multiplexes every request over one
// subscription.
//
// A request whose server dies is never answered, and NATS does not tell the requester. A
// per-request bound long enough for the slowest legitimate request (evaluations × deadline)
// would leave such a request hanging for minutes, so servers send a heartbeat while they hold
// a request and the client resends it after Silence without one. The bound still applies to a
// server that keeps beating but does not finish; that is not retried (it would only be slow
// again), nor is a request the server calls malformed.
type Client struct {
	opts   ClientOptions
	nc     *nats.Conn
	log    *slog.Logger
	prefix string
	sub    *nats.Subscription

	mu     sync.Mutex
	calls  map[string]route // by reply token: every attempt of a call has its own
	closed chan struct{}
	once   sync.Once

	idPrefix string
	next     atomic.Uint64
	stats    struct {
		requests, replies, failed, attempts, retries, silent, noResponders, refused, late atomic.Int64
	}
}

var _ Scorer = (*Client)(nil)

// call collects the messages of one request's attempts. Sends never block the subscription:
// each attempt has at most one final message, for which finals has room, and a heartbeat
// that finds beats full is redundant.
type call struct {
	finals chan attemptMsg
	beats  chan int
}

type route struct {
	cl      *call
	attempt int
}

type attemptMsg struct {
	attempt int
	msg     *nats.Msg
}

// NewClient subscribes to its reply subjects on nc. The client does not own nc.
func NewClient(nc *nats.Conn, opts ClientOptions) (*Client, error) {
	opts = opts.withDefaults()
	c := &Client{opts: opts, nc: nc, log: opts.Logger, prefix: nc.NewInbox(), calls: map[string]route{}, closed: make(chan struct{})}
	sub, err := nc.Subscribe(c.prefix+".*", c.dispatch)
	if err != nil {
		return nil, fmt.Errorf("reward client: subscribe to replies: %w", err)
	}
	// Replies of hundreds of concurrent requests may be waiting at once.
	if err := sub.SetPendingLimits(-1, 512<<20); err != nil {
		sub.Unsubscribe()
		return nil, fmt.Errorf("reward client: %w", err)
	}
	c.sub = sub
	var b [8]byte
	_, _ = crand.Read(b[:]) // never fails (crypto/rand panics rather)
	c.idPrefix = hex.EncodeToString(b[:])
	return c, nil
}

// Close stops the client; requests waiting on it return ErrClientClosed.
func (c *Client) Close() error {
	var err error
	c.once.Do(func() {
		close(c.closed)
		err = c.sub.Unsubscribe()
	})
	if errors.Is(err, nats.ErrConnectionClosed) {
		err = nil
	}
	return err
}

// Stats returns the client's totals so far.
func (c *Client) Stats() ClientStats {
	s := &c.stats
	return ClientStats{
		Requests: s.requests.Load(), Replies: s.replies.Load(), Failed: s.failed.Load(), Attempts: s.attempts.Load(),
		Retries: s.retries.Load(), Silent: s.silent.Load(), NoResponders: s.noResponders.Load(), Refused: s.refused.Load(),
		LateReplies: s.late.Load(),
	}
}

// Score runs every function on every response on some reward server.
func (c *Client) Score(ctx context.Context, funcs []string, responses []string) (*Result, error) {
	rep, err := c.Do(ctx, funcs, responses)
	if err != nil {
		return nil, err
	}
	return rep.Result, nil
}

// Do sends a score request and waits for its reply, sending it again when its server goes
// silent, when no server is subscribed, or when a server refuses it (overloaded, shutting
// down): scoring is deterministic, so a request answered twice is answered the same.
func (c *Client) Do(ctx context.Context, funcs []string, responses []string) (*Reply, error) {
	c.stats.requests.Add(1)
	rep, err := c.do(ctx, funcs, responses)
	if err != nil {
		c.stats.failed.Add(1)
		return nil, err
	}
	c.stats.replies.Add(1)
	return rep, nil
}

func (c *Client) do(ctx context.Context, funcs []string, responses []string) (*Reply, error) {
	id := c.idPrefix + "-" + strconv.FormatUint(c.next.Add(1), 36)
	timeout := c.opts.Timeout
	if timeout <= 0 {
		timeout = RequestTimeout(len(funcs)*len(responses), c.opts.Deadline, c.opts.Slack)
	}
	req := proto.ScoreRequest{RequestID: id, Functions: funcs, Responses: responses}
	cl := &call{finals: make(chan attemptMsg, c.opts.Attempts+1), beats: make(chan int, 4)}
	var tokens []string
	defer func() {
		c.mu.Lock()
		for _, t := range tokens {
			delete(c.calls, t)
		}
		c.mu.Unlock()
	}()

	var last error
	backoff := c.opts.Backoff
	for attempt := 1; attempt <= c.opts.Attempts; attempt++ {
		if attempt > 1 {
			c.stats.retries.Add(1)
			c.log.Debug("reward request retried", "request", id, "attempt", attempt, "after", last)
			// While backing off, an earlier attempt's server may still answer.
			wait := backoff/2 + rand.N(backoff/2+1)
			backoff = min(2*backoff, c.opts.MaxBackoff)
			if rep, done, err := c.await(ctx, cl, id, len(funcs), len(responses), 0, wait, 0, attempt-1); done {
				return rep, err
			}
		}
		t := timeout
		if dl, ok := ctx.Deadline(); ok {
			t = min(t, time.Until(dl))
		}
		if t <= 0 {
			return nil, fmt.Errorf("reward request %s: %w", id, context.DeadlineExceeded)
		}
		req.Timeout = t
		msg, err := proto.ScoreRequests.Msg(c.opts.Subject, "", []proto.ScoreRequest{req})
		if err != nil {
			return nil, fmt.Errorf("reward request %s: %w", id, err)
		}
		token := strconv.FormatUint(c.next.Add(1), 36)
		c.mu.Lock()
		c.calls[token] = route{cl, attempt}
		c.mu.Unlock()
		tokens = append(tokens, token)
		msg.Reply = c.prefix + "." + token
		c.stats.attempts.Add(1)
		if err := c.nc.PublishMsg(msg); err != nil {
			return nil, fmt.Errorf("reward request %s: publish: %w", id, err)
		}
		rep, done, err := c.await(ctx, cl, id, len(funcs), len(responses), attempt, t, c.opts.Silence, attempt)
		if done {
			return rep, err
		}
		last = err
	}
	return nil, fmt.Errorf("reward request %s on %s: %w after %d attempts (last: %w)", id, c.opts.Subject, ErrNoServer, c.opts.Attempts, last)
}

// await waits up to d for call's answer. The attempt numbered current (0: none, while backing
// off) is given up after silence without a message from its server; attempts is how many have
// been sent. done is false when the request should be sent again; err then says why.
func (c *Client) await(ctx context.Context, cl *call, id string, funcs, responses, current int, d, silence time.Duration, attempts int) (rep *Reply, done bool, err error) {
	total := time.NewTimer(d)
	defer total.Stop()
	var quiet <-chan time.Time
	var quietT *time.Timer
	if current > 0 {
		quietT = time.NewTimer(silence)
		defer quietT.Stop()
		quiet = quietT.C
	}
	for {
		select {
		case <-ctx.Done():
			return nil, true, fmt.Errorf("reward request %s: %w", id, ctx.Err())
		case <-c.closed:
			return nil, true, ErrClientClosed
		case <-total.C:
			if current == 0 {
				return nil, false, nil // backoff over
			}
			if dl, ok := ctx.Deadline(); ok && !time.Now().Before(dl) {
				// The bound was the caller's deadline (the timer cannot fire before it).
				return nil, true, fmt.Errorf("reward request %s: %w", id, context.DeadlineExceeded)
			}
			return nil, true, fmt.Errorf("reward request %s: %w after %v (%d functions × %d responses)", id, ErrTimeout, d.Round(time.Millisecond), funcs, responses)
		case <-quiet:
			c.stats.silent.Add(1)
			return nil, false, fmt.Errorf("server silent for %v", silence)
		case a := <-cl.beats:
			if a == current {
				quietT.Reset(silence)
			}
		case am := <-cl.finals:
			rep, retry, err := c.decode(am.msg, id, funcs, responses)
			if err == nil {
				if am.attempt != current {
					c.stats.late.Add(1)
				}
				rep.Attempts = attempts
				return rep, true, nil
			}
			if am.attempt != current {
				continue // an abandoned attempt's failure says nothing about the current one
			}
			return nil, !retry, err
		}
	}
}

// decode reads a final message; retry says whether sending the request again may help.
func (c *Client) decode(m *nats.Msg, id string, funcs, responses int) (rep *Reply, retry bool, err error) {
	if len(m.Data) == 0 && m.Header.Get("Status") == "503" {
		c.stats.noResponders.Add(1)
		return nil, true, nats.ErrNoResponders
	}
	if code := m.Header.Get(proto.HeaderServiceErrorCode); code != "" {
		se := &ServiceError{Code: code, Message: m.Header.Get(proto.HeaderServiceError)}
		if se.Retryable() {
			c.stats.refused.Add(1)
		}
		return nil, se.Retryable(), fmt.Errorf("reward request %s: %w", id, se)
	}
	rows, err := proto.ScoreReplies.DecodeMsg(m.Header, m.Data)
	if err != nil {
		return nil, true, fmt.Errorf("reward request %s: reply: %w", id, err)
	}
	if len(rows) != 1 {
		return nil, true, fmt.Errorf("reward request %s: reply has %d rows, want 1", id, len(rows))
	}
	r := &rows[0]
	if r.RequestID != id {
		return nil, true, fmt.Errorf("reward request %s: reply is for request %q", id, r.RequestID)
	}
	if r.Error != "" {
		return nil, false, fmt.Errorf("reward request %s: %w", id, &ServiceError{Code: proto.RewardCodeInternal, Message: r.Error})
	}
	if err := r.Check(funcs, responses); err != nil {
		return nil, true, fmt.Errorf("reward request %s: server %s: %w", id, r.Server, err)
	}
	return &Reply{RequestID: id, Server: r.Server, Elapsed: r.Elapsed, Result: ResultOf(r)}, false, nil
}

// dispatch routes a message on the reply subscription to its call.
func (c *Client) dispatch(m *nats.Msg) {
	token := m.Subject[len(c.prefix)+1:]
	c.mu.Lock()
	rt, ok := c.calls[token]
	c.mu.Unlock()
	if !ok {
		return // the call has returned
	}
	cl, attempt := rt.cl, rt.attempt
	if m.Header.Get(proto.HeaderRewardStatus) != "" {
		select {
		case cl.beats <- attempt:
		default:
		}
		return
	}
	select {
	case cl.finals <- attemptMsg{attempt, m}:
	default:
	}
}
