package reward

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"

	"github.com/autoif/autoif/proto"
)

// ServerOptions configure a Server. The zero value of every field means its default.
type ServerOptions struct {
	// Subject the service answers on. Default proto.RewardService.
	Subject string
	// QueueGroup shares requests among servers. Default proto.RewardQueueGroup.
	QueueGroup string
	// MaxConcurrent is how many requests are scored at once. Default the pool's worker count:
	// one request already spreads its functions over the workers.
	MaxConcurrent int
	// MaxQueued is how many accepted requests may wait for a turn; more are refused with
	// proto.RewardCodeUnavailable so the client tries again. Default 4096.
	MaxQueued int
	// MaxEvaluations refuses requests of more functions × responses. Default 1<<20.
	MaxEvaluations int
	// Heartbeat is how often a held request's client is told the server is alive. Default 1s.
	Heartbeat time.Duration
	// Slack is added to evaluations × the pool's deadline to bound a request that names no
	// timeout. Default 10s.
	Slack time.Duration
	// ShutdownGrace bounds how long Serve waits for requests being scored once asked to
	// stop. Default 1 minute.
	ShutdownGrace time.Duration
	// StatsInterval logs a stats line this often while serving; 0 never.
	StatsInterval time.Duration
	// Logger receives lifecycle events and stats lines. Default slog.Default().
	Logger *slog.Logger
}

func (o ServerOptions) withDefaults(workers int) ServerOptions {
	if o.Subject == "" {
		o.Subject = proto.RewardService
	}
	if o.QueueGroup == "" {
		o.QueueGroup = proto.RewardQueueGroup
	}
	if o.MaxConcurrent <= 0 {
		o.MaxConcurrent = max(workers, 1)
	}
	if o.MaxQueued <= 0 {
		o.MaxQueued = 4096
	}
	if o.MaxEvaluations <= 0 {
		o.MaxEvaluations = 1 << 20
	}
	if o.Heartbeat <= 0 {
		o.Heartbeat = time.Second
	}
	if o.Slack <= 0 {
		o.Slack = 10 * time.Second
	}
	if o.ShutdownGrace <= 0 {
		o.ShutdownGrace = time.Minute
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	return o
}

// ServerStats are a Server's running totals, served as the endpoint data of $SRV.STATS.
type ServerStats struct {
	Python   string        `json:"python"`
	Workers  int           `json:"workers"`
	Deadline time.Duration `json:"deadline_ns"`
	Uptime   time.Duration `json:"uptime_ns"`
	// Requests were accepted; Scored were scored (and answered, unless the reply could not
	// be published); Failed were answered with an error after being accepted; BadRequests could not be decoded or were out of bounds; Rejected were
	// refused unstarted (queue full, shutting down) for the client to send elsewhere.
	Requests    int64 `json:"requests"`
	Scored      int64 `json:"scored"`
	Failed      int64 `json:"failed"`
	BadRequests int64 `json:"bad_requests"`
	Rejected    int64 `json:"rejected"`
	InFlight    int64 `json:"in_flight"`
	Queued      int64 `json:"queued"`
	// EvalsPerSec is over the last minute (or since start, if shorter); EvalsPerSecTotal is
	// since start.
	EvalsPerSec      float64 `json:"evals_per_sec"`
	EvalsPerSecTotal float64 `json:"evals_per_sec_total"`
	// Reconnects counts the server's NATS connection's reconnections (a member of the cluster
	// lost, a network blip): requests in flight then are resent by their clients.
	Reconnects int64 `json:"nats_reconnects"`
	Pool       Stats `json:"pool"`
}

// Server answers proto.RewardService requests from a Pool, as one member of a queue group:
// start any number of them, anywhere, and NATS spreads the requests.
//
// The micro endpoint's handler runs on the subscription's goroutine, one message at a time,
// so it only decodes and queues; scoring runs on MaxConcurrent goroutines of the Server.
// Replies are published straight to the reply subject (not through micro.Request, whose
// error bookkeeping is not safe to touch after the handler returned); micro's own counters
// therefore count requests received and malformed, and ServerStats counts the rest.
type Server struct {
	opts ServerOptions
	nc   *nats.Conn
	pool *Pool
	log  *slog.Logger
	svc  micro.Service
	id   string // svc's id; asking svc takes the lock its stats handler runs under
	// ready is closed once id is set: a request can arrive before AddService returns.
	ready chan struct{}

	// mu orders accepting against stopping: accept holds it shared while it checks
	// stopping and queues, so once stop holds it exclusively no job can enter jobs.
	mu       sync.RWMutex
	stopping bool
	jobs     chan *job

	heldMu sync.Mutex
	held   map[*job]struct{} // queued or running: they get heartbeats

	started time.Time
	rate    rateWindow
	stats   struct {
		requests, scored, failed, bad, rejected, inFlight, queued atomic.Int64
	}
}

type job struct {
	req      proto.ScoreRequest
	reply    string
	received time.Time
	timeout  time.Duration
}

// NewServer registers the service on nc. Requests are taken until Serve's context ends.
// The server does not own pool or nc: close them after Serve returns.
func NewServer(nc *nats.Conn, pool *Pool, opts ServerOptions) (*Server, error) {
	po := pool.Options()
	opts = opts.withDefaults(po.Workers)
	s := &Server{
		opts: opts, nc: nc, pool: pool, log: opts.Logger,
		jobs:    make(chan *job, opts.MaxQueued),
		held:    map[*job]struct{}{},
		ready:   make(chan struct{}),
		started: time.Now(),
	}
	svc, err := micro.AddService(nc, micro.Config{
		Name:        proto.RewardServiceName,
		Version:     proto.RewardServiceVersion,
		Description: "AutoIF code-execution reward: runs verification functions on responses in a Python sandbox",
		QueueGroup:  opts.QueueGroup,
		Metadata: map[string]string{
			"workers":  fmt.Sprint(po.Workers),
			"deadline": po.Deadline.String(),
			"python":   pool.Python(),
		},
		Endpoint: &micro.EndpointConfig{
			Subject:    opts.Subject,
			Handler:    micro.HandlerFunc(s.accept),
			QueueGroup: opts.QueueGroup,
			Metadata:   map[string]string{"schema": proto.ScoreRequests.Name(), "reply_schema": proto.ScoreReplies.Name()},
		},
		StatsHandler: func(*micro.Endpoint) any { return s.Stats() },
		ErrorHandler: func(_ micro.Service, err *micro.NATSError) {
			s.log.Warn("reward service nats error", "subject", err.Subject, "err", err.Description)
		},
	})
	if err != nil {
		close(s.ready)
		return nil, fmt.Errorf("reward service on %s: %w", opts.Subject, err)
	}
	s.svc, s.id = svc, svc.Info().ID
	close(s.ready)
	// Subscriptions reach the NATS server asynchronously; a client that sends its first
	// request right after NewServer returns must find this server subscribed.
	if err := nc.FlushTimeout(10 * time.Second); err != nil {
		svc.Stop()
		return nil, fmt.Errorf("reward service on %s: register with nats: %w", opts.Subject, err)
	}
	return s, nil
}

// ID is the server's micro service id, which its replies carry.
func (s *Server) ID() string { return s.id }

// Serve scores requests until ctx ends, then shuts down gracefully: it takes no new
// requests, refuses those still queued (proto.RewardCodeUnavailable, so their clients go to
// another server at once), and waits up to ShutdownGrace for those being scored.
func (s *Server) Serve(ctx context.Context) error {
	// work bounds scoring; it outlives ctx by the shutdown grace.
	work, cancelWork := context.WithCancel(context.Background())
	defer cancelWork()

	var runners sync.WaitGroup
	for range s.opts.MaxConcurrent {
		runners.Add(1)
		go func() {
			defer runners.Done()
			for j := range s.jobs {
				s.run(work, j)
			}
		}()
	}
	beatsDone := make(chan struct{})
	beatsCtx, stopBeats := context.WithCancel(context.Background())
	go func() {
		defer close(beatsDone)
		s.heartbeats(beatsCtx)
	}()
	defer func() { stopBeats(); <-beatsDone }()

	s.log.Info("reward service serving", "subject", s.opts.Subject, "queue", s.opts.QueueGroup, "id", s.ID(),
		"workers", s.pool.Options().Workers, "deadline", s.pool.Options().Deadline, "python", s.pool.Python(), "concurrent", s.opts.MaxConcurrent)
	<-ctx.Done()

	s.log.Info("reward service stopping: finishing requests in flight", "in_flight", s.stats.inFlight.Load(), "queued", s.stats.queued.Load())
	s.mu.Lock()
	s.stopping = true
	close(s.jobs)
	s.mu.Unlock()
	// Stop drains the endpoint's subscription; messages still pending in it reach accept,
	// which now refuses them.
	stopErr := s.svc.Stop()

	done := make(chan struct{})
	go func() { runners.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(s.opts.ShutdownGrace):
		s.log.Warn("reward service: shutdown grace over; abandoning requests in flight", "grace", s.opts.ShutdownGrace)
		cancelWork()
		<-done
	}
	if err := s.nc.Flush(); err != nil && !errors.Is(err, nats.ErrConnectionClosed) {
		s.log.Warn("reward service: flush replies", "err", err)
	}
	s.log.Info("reward service stopped", "scored", s.stats.scored.Load(), "failed", s.stats.failed.Load())
	if stopErr != nil {
		return fmt.Errorf("reward service stop: %w", stopErr)
	}
	return nil
}

// accept runs on the endpoint subscription's goroutine: decode, check, queue, never block.
func (s *Server) accept(req micro.Request) {
	<-s.ready
	reply := req.Reply()
	if reply == "" {
		s.stats.bad.Add(1)
		s.log.Debug("reward request without a reply subject dropped")
		return
	}
	rows, err := proto.ScoreRequests.DecodeMsg(nats.Header(req.Headers()), req.Data())
	if err != nil {
		s.bad(req, "", err.Error())
		return
	}
	if len(rows) != 1 {
		s.bad(req, "", fmt.Sprintf("a reward request carries exactly one row, this one has %d", len(rows)))
		return
	}
	r := rows[0]
	switch {
	case r.RequestID == "":
		s.bad(req, "", "request has no request id")
		return
	case len(r.Functions)*len(r.Responses) > s.opts.MaxEvaluations:
		s.bad(req, r.RequestID, fmt.Sprintf("%d functions × %d responses is more than this server's %d evaluations a request",
			len(r.Functions), len(r.Responses), s.opts.MaxEvaluations))
		return
	case r.Timeout < 0:
		s.bad(req, r.RequestID, fmt.Sprintf("negative timeout %v", r.Timeout))
		return
	}
	// The rows' strings point into req.Data(): nats.go gives every message its own copy of
	// the payload, so they stay valid after the handler returns.
	j := &job{req: r, reply: reply, received: time.Now(), timeout: r.Timeout}
	if j.timeout == 0 {
		j.timeout = RequestTimeout(len(r.Functions)*len(r.Responses), s.pool.Options().Deadline, s.opts.Slack)
	}

	// Held before it is queued: a runner may finish it before the send below returns.
	s.hold(j)
	s.stats.requests.Add(1)
	s.stats.queued.Add(1)
	s.mu.RLock()
	queued := false
	if !s.stopping {
		select {
		case s.jobs <- j:
			queued = true
		default:
		}
	}
	stopping := s.stopping
	s.mu.RUnlock()
	if !queued {
		s.stats.requests.Add(-1)
		s.stats.queued.Add(-1)
		s.release(j)
		why := "server queue is full"
		if stopping {
			why = "server is shutting down"
		}
		s.stats.rejected.Add(1)
		s.respondError(reply, r.RequestID, proto.RewardCodeUnavailable, why)
		return
	}
	// The client learns at once that a live server holds its request.
	s.beat(reply)
}

// bad answers a request that cannot be scored. It goes through micro so that micro's error
// counters see it; accept runs inside the handler, where that is safe.
func (s *Server) bad(req micro.Request, id, why string) {
	s.stats.bad.Add(1)
	s.log.Debug("bad reward request", "request", id, "err", why)
	var data []byte
	if id != "" {
		data, _ = proto.ScoreReplies.Encode([]proto.ScoreReply{{RequestID: id, Error: why, Server: s.ID()}})
	}
	opts := []micro.RespondOpt{}
	if data != nil {
		opts = append(opts, micro.WithHeaders(micro.Headers{
			proto.HeaderSchema:   []string{proto.ScoreReplies.Name()},
			proto.HeaderChecksum: []string{proto.Checksum(data)},
		}))
	}
	if err := req.Error(proto.RewardCodeBadRequest, why, data, opts...); err != nil {
		s.log.Warn("reward service: reply to a bad request", "err", err)
	}
}

func (s *Server) run(work context.Context, j *job) {
	s.stats.queued.Add(-1)
	defer s.release(j)
	if s.isStopping() {
		// Queued but not started: another server can take it at once.
		s.stats.rejected.Add(1)
		s.respondError(j.reply, j.req.RequestID, proto.RewardCodeUnavailable, "server is shutting down")
		return
	}
	left := j.timeout - time.Since(j.received)
	if left <= 0 {
		s.stats.failed.Add(1)
		s.respondError(j.reply, j.req.RequestID, proto.RewardCodeTimeout, fmt.Sprintf("request waited past its %v timeout in the queue", j.timeout))
		return
	}
	ctx, cancel := context.WithTimeout(work, left)
	defer cancel()
	s.stats.inFlight.Add(1)
	start := time.Now()
	res, err := s.pool.Score(ctx, j.req.Functions, j.req.Responses)
	s.stats.inFlight.Add(-1)
	if err != nil {
		s.stats.failed.Add(1)
		code := proto.RewardCodeInternal
		switch {
		case errors.Is(err, context.DeadlineExceeded):
			code = proto.RewardCodeTimeout
		case errors.Is(err, ErrClosed), errors.Is(err, context.Canceled):
			code = proto.RewardCodeUnavailable
		}
		s.respondError(j.reply, j.req.RequestID, code, err.Error())
		return
	}
	// Counted before the reply goes out, so a client that has its reply sees it counted.
	s.stats.scored.Add(1)
	rep := ReplyOf(j.req.RequestID, s.ID(), res, len(j.req.Functions), len(j.req.Responses))
	rep.Elapsed = time.Since(start)
	m, err := proto.ScoreReplies.Msg(j.reply, "", []proto.ScoreReply{rep})
	if err == nil {
		err = s.nc.PublishMsg(m)
	}
	if err != nil {
		// The client hears nothing more and sends the request again.
		s.log.Warn("reward service: reply", "request", j.req.RequestID, "err", err)
	}
}

func (s *Server) isStopping() bool {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.stopping
}

// respondError publishes a failed request's final reply.
func (s *Server) respondError(reply, id, code, why string) {
	rep := proto.ScoreReply{RequestID: id, Error: why, Server: s.ID()}
	m, err := proto.ScoreReplies.Msg(reply, "", []proto.ScoreReply{rep})
	if err != nil {
		m = nats.NewMsg(reply)
	}
	m.Header.Set(proto.HeaderServiceError, why)
	m.Header.Set(proto.HeaderServiceErrorCode, code)
	if err := s.nc.PublishMsg(m); err != nil {
		s.log.Warn("reward service: error reply", "request", id, "err", err)
	}
}

func (s *Server) hold(j *job) {
	s.heldMu.Lock()
	s.held[j] = struct{}{}
	s.heldMu.Unlock()
}

func (s *Server) release(j *job) {
	s.heldMu.Lock()
	delete(s.held, j)
	s.heldMu.Unlock()
}

func (s *Server) beat(reply string) {
	m := nats.NewMsg(reply)
	m.Header.Set(proto.HeaderRewardStatus, proto.RewardStatusWorking)
	if err := s.nc.PublishMsg(m); err != nil {
		s.log.Debug("reward service: heartbeat", "err", err)
	}
}

// heartbeats tells the client of every held request that this server is alive, samples the
// evaluation rate, and logs stats lines.
func (s *Server) heartbeats(ctx context.Context) {
	tick := time.NewTicker(s.opts.Heartbeat)
	defer tick.Stop()
	var statsC <-chan time.Time
	if s.opts.StatsInterval > 0 {
		st := time.NewTicker(s.opts.StatsInterval)
		defer st.Stop()
		statsC = st.C
	}
	s.rate.add(time.Now(), s.pool.Stats().Evals)
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-tick.C:
			s.heldMu.Lock()
			replies := make([]string, 0, len(s.held))
			for j := range s.held {
				replies = append(replies, j.reply)
			}
			s.heldMu.Unlock()
			for _, r := range replies {
				s.beat(r)
			}
			s.rate.add(now, s.pool.Stats().Evals)
		case <-statsC:
			st := s.Stats()
			s.log.Info("reward stats", "evals_per_sec", fmt.Sprintf("%.1f", st.EvalsPerSec), "requests", st.Requests,
				"scored", st.Scored, "failed", st.Failed, "bad", st.BadRequests, "rejected", st.Rejected,
				"in_flight", st.InFlight, "queued", st.Queued, "evals", st.Pool.Evals, "errors", st.Pool.Errors,
				"timeouts", st.Pool.Timeouts, "crashes", st.Pool.Crashes, "workers_restarted", st.Pool.WorkersRestarted)
		}
	}
}

// Stats returns the server's totals so far.
func (s *Server) Stats() ServerStats {
	po := s.pool.Options()
	ps := s.pool.Stats()
	up := time.Since(s.started)
	st := ServerStats{
		Python: s.pool.Python(), Workers: po.Workers, Deadline: po.Deadline, Uptime: up,
		Requests: s.stats.requests.Load(), Scored: s.stats.scored.Load(), Failed: s.stats.failed.Load(),
		BadRequests: s.stats.bad.Load(), Rejected: s.stats.rejected.Load(),
		InFlight: s.stats.inFlight.Load(), Queued: s.stats.queued.Load(),
		Reconnects: int64(s.nc.Stats().Reconnects), Pool: ps,
	}
	if up > 0 {
		st.EvalsPerSecTotal = float64(ps.Evals) / up.Seconds()
	}
	st.EvalsPerSec = s.rate.perSec(time.Now(), ps.Evals, st.EvalsPerSecTotal)
	return st
}

// rateWindow keeps a minute of (time, evaluations) samples.
type rateWindow struct {
	mu      sync.Mutex
	samples []rateSample
}

type rateSample struct {
	at    time.Time
	evals int64
}

func (w *rateWindow) add(at time.Time, evals int64) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.samples = append(w.samples, rateSample{at, evals})
	cut := 0
	for cut < len(w.samples)-1 && at.Sub(w.samples[cut].at) > time.Minute {
		cut++
	}
	w.samples = append(w.samples[:0], w.samples[cut:]...)
}

func (w *rateWindow) perSec(now time.Time, evals int64, fallback float64) float64 {
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.samples) == 0 {
		return fallback
	}
	first := w.samples[0]
	if d := now.Sub(first.at); d > 100*time.Millisecond {
		return float64(evals-first.evals) / d.Seconds()
	}
	return fallback
}

// RequestTimeout bounds a request of n evaluations: every evaluation may run to the
// deadline, plus slack for queueing and transport.
func RequestTimeout(evals int, deadline, slack time.Duration) time.Duration {
	return time.Duration(evals)*deadline + slack
}

// ReplyOf turns a Result into its wire form.
func ReplyOf(id, server string, res *Result, functions, responses int) proto.ScoreReply {
	rep := proto.ScoreReply{
		RequestID: id, Server: server, Functions: int32(functions),
		Scores: make([]float64, responses), Passed: make([]int32, responses), Ran: make([]int32, responses),
		Errors: make([]int32, responses), Timeouts: make([]int32, responses),
		Outcomes: make([]int32, functions*responses), Kinds: make([]string, functions*responses), Messages: make([]string, functions*responses),
	}
	for r, sc := range res.Scores {
		rep.Scores[r] = sc.Score
		rep.Passed[r], rep.Ran[r] = int32(sc.Passed), int32(sc.Ran)
		rep.Errors[r], rep.Timeouts[r] = int32(sc.Errors), int32(sc.Timeouts)
	}
	for f, row := range res.Evals {
		for r, e := range row {
			i := f*responses + r
			rep.Outcomes[i] = int32(e.Outcome)
			rep.Kinds[i] = string(e.Kind)
			rep.Messages[i] = e.Message
		}
	}
	return rep
}

// ResultOf turns a checked reply (see proto.ScoreReply.Check) back into a Result.
func ResultOf(rep *proto.ScoreReply) *Result {
	f, n := int(rep.Functions), len(rep.Scores)
	res := &Result{Evals: make([][]Eval, f), Scores: make([]ResponseScore, n)}
	for i := range f {
		row := make([]Eval, n)
		for r := range n {
			k := i*n + r
			row[r] = Eval{Outcome: Outcome(rep.Outcomes[k]), Kind: Kind(rep.Kinds[k]), Message: rep.Messages[k]}
		}
		res.Evals[i] = row
	}
	for r := range n {
		res.Scores[r] = ResponseScore{
			Score: rep.Scores[r], Passed: int(rep.Passed[r]), Ran: int(rep.Ran[r]),
			Errors: int(rep.Errors[r]), Timeouts: int(rep.Timeouts[r]),
		}
	}
	// Skipped results have no column of their own: the matrix says which they are.
	for _, row := range res.Evals {
		for r, e := range row {
			if e.Outcome == Skipped {
				res.Scores[r].Skipped++
			}
		}
	}
	return res
}
