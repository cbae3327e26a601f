package reward

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
)

// ErrClosed is returned by a Pool used after Close.
var ErrClosed = errors.New("reward pool closed")

// Scorer scores a batch of responses against one instruction's verification functions.
type Scorer interface {
	Score(ctx context.Context, funcs []string, responses []string) (*Result, error)
}

// Evaluator runs one verification function on many responses.
type Evaluator interface {
	Evaluate(ctx context.Context, fn string, responses []string) ([]Eval, error)
}

// Stats are a Pool's running totals.
type Stats struct {
	Calls            int64 `json:"calls"` // round trips: one function, many responses
	Evals            int64 `json:"evals"` // function × response evaluations finished
	Passes           int64 `json:"passes"`
	Fails            int64 `json:"fails"`
	Errors           int64 `json:"errors"` // error outcomes (timeouts not included)
	Timeouts         int64 `json:"timeouts"`
	Skipped          int64 `json:"skipped"` // results the return policy does not count
	Crashes          int64 `json:"crashes"` // evaluations during which the worker died
	WorkersStarted   int64 `json:"workers_started"`
	WorkersRestarted int64 `json:"workers_restarted"` // replaced after a kill or crash
	// Isolation names the OS layer the workers run in; Limits what bounds their memory and
	// processes.
	Isolation string `json:"isolation"`
	Limits    string `json:"limits"`
}

// Pool is a fixed-size set of sandboxed Python workers. It is safe for concurrent use.
type Pool struct {
	opts   Options
	interp *interpreter
	log    *slog.Logger

	// slots holds one token per worker: a ready worker, or nil for one to start on demand.
	slots chan *worker

	ctx    context.Context // cancelled by Close; bounds worker starts and running calls
	cancel context.CancelFunc
	wg     sync.WaitGroup // replacement starts in flight
	closed atomic.Bool
	once   sync.Once

	nextWorker atomic.Int64
	nextSet    atomic.Uint64 // response set ids
	stats      struct {
		calls, evals, passes, fails, errors, timeouts, skipped, crashes atomic.Int64
		started, restarted                                              atomic.Int64
	}
}

var _ Scorer = (*Pool)(nil)
var _ Evaluator = (*Pool)(nil)

// NewPool resolves the interpreter and starts opts.Workers workers.
func NewPool(ctx context.Context, opts Options) (*Pool, error) {
	opts = opts.withDefaults()
	in, err := resolveInterpreter(ctx, opts.Python, opts)
	if err != nil {
		return nil, fmt.Errorf("reward pool: %w", err)
	}
	opts.Python = in.path
	if opts.UnsafeNoSandbox {
		opts.Logger.Warn("reward sandbox disabled (--unsafe-no-sandbox): verification functions run without namespaces, a private root or seccomp, and can read what uid " + fmt.Sprint(workerUID(opts)) + " can read and reach the network")
	}
	p := &Pool{opts: opts, interp: in, log: opts.Logger, slots: make(chan *worker, opts.Workers)}
	p.ctx, p.cancel = context.WithCancel(context.Background())

	type started struct {
		w   *worker
		err error
	}
	ch := make(chan started, opts.Workers)
	for range opts.Workers {
		go func() {
			w, err := p.start()
			ch <- started{w, err}
		}()
	}
	var errs []error
	for range opts.Workers {
		s := <-ch
		if s.err != nil {
			errs = append(errs, s.err)
		}
		p.slots <- s.w
	}
	if len(errs) > 0 {
		p.Close()
		return nil, fmt.Errorf("reward pool: %w", errors.Join(errs...))
	}
	p.log.Debug("reward pool started", "python", in.path, "workers", opts.Workers, "deadline", opts.Deadline, "isolation", p.isolation())
	return p, nil
}

// Python is the interpreter the workers run.
func (p *Pool) Python() string { return p.interp.path }

// Options returns the pool's options with defaults applied.
func (p *Pool) Options() Options { return p.opts }

func (p *Pool) start() (*worker, error) {
	w, err := startWorker(p.interp, p.opts, p.nextWorker.Add(1))
	if err != nil {
		return nil, err
	}
	p.stats.started.Add(1)
	return w, nil
}

func (p *Pool) acquire(ctx context.Context) (*worker, error) {
	if p.closed.Load() {
		return nil, ErrClosed
	}
	select {
	case w := <-p.slots:
		if w != nil {
			return w, nil
		}
		w, err := p.start()
		if err != nil {
			p.slots <- nil
			return nil, err
		}
		return w, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-p.ctx.Done():
		return nil, ErrClosed
	}
}

// release returns a worker to the pool, replacing it in the background if it died or must
// retire, so the next caller does not pay for the start.
func (p *Pool) release(w *worker) {
	if !w.dead && w.retire == "" {
		p.slots <- w
		return
	}
	p.log.Debug("reward worker replaced", "worker", w.id, "reason", w.retire)
	p.stats.restarted.Add(1)
	w.close()
	if p.closed.Load() {
		p.slots <- nil
		return
	}
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		nw, err := p.start()
		if err != nil {
			p.log.Warn("reward worker start failed; will retry on demand", "err", err)
		}
		p.slots <- nw
	}()
}

// Evaluate runs fn on every response. Each result is the function's outcome on that response;
// the error is non-nil only when ctx ends or the pool is closed.
func (p *Pool) Evaluate(ctx context.Context, fn string, responses []string) ([]Eval, error) {
	return p.evaluate(ctx, fn, responses, p.nextSet.Add(1))
}

// evaluate runs fn on responses, which the caller names rset so that workers that hold the
// same set (the other functions of one Score call) are not sent it again.
func (p *Pool) evaluate(ctx context.Context, fn string, responses []string, rset uint64) ([]Eval, error) {
	evals := make([]Eval, len(responses))
	pending := make([]int, len(responses))
	for i := range pending {
		pending[i] = i
	}
	// A worker that dies before producing anything (it cannot start, or was already broken)
	// gets a few fresh tries; the function itself is never blamed for that.
	barren, timeouts := 0, 0
	for len(pending) > 0 {
		if timeouts >= p.opts.MaxTimeouts {
			for _, i := range pending {
				evals[i] = Eval{Outcome: Timeout, Message: fmt.Sprintf("not run: the function already timed out on %d responses", timeouts)}
				p.count(evals[i])
			}
			break
		}
		if barren >= 3 {
			for _, i := range pending {
				evals[i] = Eval{Outcome: Error, Kind: KindCrash, Message: "workers failed repeatedly before running the function"}
				p.count(evals[i])
			}
			break
		}
		w, err := p.acquire(ctx)
		if err != nil {
			return nil, err
		}
		sub := responses
		if len(pending) < len(responses) {
			// A re-run after a timeout or crash: a new subset, so a new set id.
			sub = make([]string, len(pending))
			for j, i := range pending {
				sub[j] = responses[i]
			}
			rset = p.nextSet.Add(1)
		}
		callCtx, stop := mergeDone(ctx, p.ctx)
		res := w.call(callCtx, fn, sub, rset)
		stop()
		p.stats.calls.Add(1)
		p.release(w)
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		if p.ctx.Err() != nil {
			return nil, ErrClosed
		}
		var still []int
		for j, i := range pending {
			if res.filled[j] {
				evals[i] = res.evals[j]
				p.count(evals[i])
			} else {
				still = append(still, i)
			}
		}
		if len(still) == len(pending) {
			barren++
		}
		timeouts += res.timeouts
		pending = still
	}
	return evals, nil
}

// Check runs fn's top level once, as every evaluation would, and returns why fn cannot be
// used (it does not compile, its top level fails, or it defines no evaluate), or nil.
func (p *Pool) Check(ctx context.Context, fn string) (*Eval, error) {
	for range 3 {
		w, err := p.acquire(ctx)
		if err != nil {
			return nil, err
		}
		callCtx, stop := mergeDone(ctx, p.ctx)
		res := w.call(callCtx, fn, nil, 0)
		stop()
		p.stats.calls.Add(1)
		p.release(w)
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		if p.ctx.Err() != nil {
			return nil, ErrClosed
		}
		if res.done || res.fatal != nil {
			return res.fatal, nil
		}
	}
	return &Eval{Outcome: Error, Kind: KindCrash, Message: "workers failed repeatedly before running the function"}, nil
}

func (p *Pool) count(e Eval) {
	p.stats.evals.Add(1)
	switch e.Outcome {
	case Pass:
		p.stats.passes.Add(1)
	case Fail:
		p.stats.fails.Add(1)
	case Timeout:
		p.stats.timeouts.Add(1)
	case Skipped:
		p.stats.skipped.Add(1)
	default:
		p.stats.errors.Add(1)
		if e.Kind == KindCrash {
			p.stats.crashes.Add(1)
		}
	}
}

// Score runs every function on every response, functions in parallel across the pool, and
// scores each response by AutoIF's rule (see ScoreResponses).
func (p *Pool) Score(ctx context.Context, funcs []string, responses []string) (*Result, error) {
	res := &Result{Evals: make([][]Eval, len(funcs))}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		wg       sync.WaitGroup
		mu       sync.Mutex
		firstErr error
		next     atomic.Int64
	)
	rset := p.nextSet.Add(1)
	n := min(len(funcs), p.opts.Workers)
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				f := int(next.Add(1) - 1)
				if f >= len(funcs) {
					return
				}
				evals, err := p.evaluate(ctx, funcs[f], responses, rset)
				if err != nil {
					mu.Lock()
					if firstErr == nil {
						firstErr = err
					}
					mu.Unlock()
					cancel()
					return
				}
				res.Evals[f] = evals
			}
		}()
	}
	wg.Wait()
	if firstErr != nil {
		return nil, fmt.Errorf("score %d functions × %d responses: %w", len(funcs), len(responses), firstErr)
	}
	res.Scores = ScoreResponses(res.Evals, len(responses))
	return res, nil
}

// Stats returns the pool's totals so far.
func (p *Pool) Stats() Stats {
	s := &p.stats
	return Stats{
		Calls: s.calls.Load(), Evals: s.evals.Load(), Passes: s.passes.Load(), Fails: s.fails.Load(),
		Errors: s.errors.Load(), Timeouts: s.timeouts.Load(), Skipped: s.skipped.Load(), Crashes: s.crashes.Load(),
		WorkersStarted: s.started.Load(), WorkersRestarted: s.restarted.Load(),
		Isolation: p.isolation(), Limits: limitsInUse,
	}
}

// Close stops every worker, waiting for calls in flight to give their workers back; those
// calls end with ErrClosed.
func (p *Pool) Close() error {
	p.once.Do(func() {
		p.closed.Store(true)
		p.cancel()
		p.wg.Wait()
		for range p.opts.Workers {
			if w := <-p.slots; w != nil {
				w.close()
			}
		}
	})
	return nil
}

// mergeDone returns a context that ends when either parent does.
func mergeDone(a, b context.Context) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancel(a)
	stop := context.AfterFunc(b, cancel)
	return ctx, func() { stop(); cancel() }
}

// limitsInUse says what bounds a worker's resources. cgroup v2 would bound a worker's
// processes together; rlimits bound each process, which the fork-per-call design makes
// enough: a function's process can start no other.
const limitsInUse = "rlimits per process (address space, CPU time, file size, open files; a function's process starts no process or thread); no cgroup"

// isolation names the OS layer the workers run in, for stats and logs.
func (p *Pool) isolation() string {
	if p.opts.UnsafeNoSandbox {
		return fmt.Sprintf("none (--unsafe-no-sandbox): uid %d, rlimits and the audit hook only", workerUID(p.opts))
	}
	ns := "user, mount, pid, net, ipc, uts"
	if runningAsRoot() {
		ns = fmt.Sprintf("mount, pid, net, ipc, uts; uid %d", p.opts.UID)
	}
	return "namespaces (" + ns + "), read-only root, seccomp, a fork per call"
}

// workerUID is the host uid functions run as.
func workerUID(o Options) int {
	if runningAsRoot() {
		return o.UID
	}
	return os.Getuid()
}
