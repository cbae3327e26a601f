package reward

import (
	"context"
	_ "embed"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"strconv"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// workerSource is the Python side of the protocol; it runs with `python -I -B -c`, so the
// sandbox needs no file of ours.
//
//go:embed worker.py
var workerSource string

// Progress slot phases (Python's PHASE_* plus pending, which only Go writes).
const (
	phaseTopLevel = -1
	phaseCheck    = -2
	phasePending  = -3
)

const progressSize = 4096

// worker is one sandboxed interpreter. It is used by one goroutine at a time (the pool hands
// it out exclusively), so it has no lock of its own.
type worker struct {
	id     int64
	opts   Options
	cmd    *exec.Cmd
	req    *os.File // write end of the request pipe (worker's fd 3)
	rep    *os.File // read end of the reply pipe (worker's fd 4)
	prog   []byte   // shared progress slot (worker's fd 5)
	dir    string
	stderr *tailBuffer
	buf    []byte // reply bytes read but not yet consumed
	dead   bool
	retire string // why the worker must be replaced after the current call
	waited bool
	rset   uint64 // the response set the worker holds
}

// startWorker starts one sandboxed worker and waits until it is ready to take requests.
func startWorker(python string, opts Options, id int64) (w *worker, err error) {
	w = &worker{id: id, opts: opts, stderr: &tailBuffer{max: 4096}}
	defer func() {
		if err != nil {
			w.close()
		}
	}()
	// An empty directory nobody can write: the worker's cwd.
	if w.dir, err = os.MkdirTemp("", "autoif-reward-"); err != nil {
		return w, fmt.Errorf("worker scratch dir: %w", err)
	}
	if err = os.Chmod(w.dir, 0o555); err != nil {
		return w, fmt.Errorf("worker scratch dir: %w", err)
	}
	reqR, reqW, err := os.Pipe()
	if err != nil {
		return w, fmt.Errorf("request pipe: %w", err)
	}
	defer reqR.Close()
	w.req = reqW
	repR, repW, err := os.Pipe()
	if err != nil {
		return w, fmt.Errorf("reply pipe: %w", err)
	}
	defer repW.Close()
	w.rep = repR
	fd, err := unix.MemfdCreate("autoif-progress", unix.MFD_CLOEXEC)
	if err != nil {
		return w, fmt.Errorf("progress memfd: %w", err)
	}
	progFile := os.NewFile(uintptr(fd), "progress")
	defer progFile.Close()
	if err = unix.Ftruncate(fd, progressSize); err != nil {
		return w, fmt.Errorf("progress memfd: %w", err)
	}
	if w.prog, err = unix.Mmap(fd, 0, progressSize, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED); err != nil {
		return w, fmt.Errorf("progress mmap: %w", err)
	}
	w.setProgress(phasePending)

	// The worker applies its rlimits itself before it reports ready, hence before it reads
	// any untrusted code (a parent without CAP_SYS_RESOURCE cannot prlimit another uid).
	cpu := max(int64(opts.CPULimit/time.Second), 1)
	// A process limit only binds a non-root uid; with a user namespace the worker's uid is the
	// caller's own, where 0 would also stop the caller's other processes from forking.
	nproc := int64(-1)
	if dropPrivileges() {
		nproc = 0
	}
	w.cmd = exec.Command(python, "-I", "-B", "-c", workerSource,
		strconv.Itoa(opts.MaxOutput), strconv.Itoa(opts.CacheSize),
		strconv.FormatUint(opts.MemoryLimit, 10), strconv.FormatInt(cpu, 10),
		strconv.FormatUint(opts.OpenFiles, 10), strconv.FormatInt(nproc, 10))
	w.cmd.Env = []string{}
	w.cmd.Dir = w.dir
	w.cmd.ExtraFiles = []*os.File{reqR, repW, progFile}
	w.cmd.Stderr = w.stderr
	w.cmd.SysProcAttr = opts.sysProcAttr()
	w.cmd.WaitDelay = time.Second
	if err = w.cmd.Start(); err != nil {
		return w, fmt.Errorf("start worker %s: %w", python, err)
	}
	frame, err := w.readFrame(time.Now().Add(opts.StartTimeout))
	if err != nil {
		return w, fmt.Errorf("worker did not become ready: %w (stderr: %s)", err, w.stderr.String())
	}
	var ready struct {
		Ready bool `json:"ready"`
	}
	if err = json.Unmarshal(frame, &ready); err != nil || !ready.Ready {
		return w, fmt.Errorf("worker sent %q instead of ready", truncate(string(frame), 200))
	}
	return w, nil
}

func (w *worker) setProgress(idx int64) {
	binary.LittleEndian.PutUint64(w.prog[0:8], uint64(idx))
	binary.LittleEndian.PutUint64(w.prog[8:16], uint64(monotonicNow()))
}

// progress returns the evaluation the worker is running and when it started it (monotonic ns).
// The worker writes the slot without a lock, so read until two reads agree.
func (w *worker) progress() (idx int64, start int64) {
	for range 100 {
		a0 := binary.LittleEndian.Uint64(w.prog[0:8])
		b0 := binary.LittleEndian.Uint64(w.prog[8:16])
		a1 := binary.LittleEndian.Uint64(w.prog[0:8])
		b1 := binary.LittleEndian.Uint64(w.prog[8:16])
		if a0 == a1 && b0 == b1 {
			return int64(a0), int64(b0)
		}
	}
	return phasePending, monotonicNow()
}

func monotonicNow() int64 {
	var ts unix.Timespec
	_ = unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts)
	return ts.Nano()
}

var errFrameTimeout = errors.New("reply deadline")

// readFrame returns the next reply frame, waiting until deadline. On timeout, bytes already
// read stay buffered so the next call resumes mid-frame.
func (w *worker) readFrame(deadline time.Time) ([]byte, error) {
	for {
		if len(w.buf) >= 4 {
			n := int(binary.LittleEndian.Uint32(w.buf))
			if n > 64<<20 {
				return nil, fmt.Errorf("reply frame of %d bytes", n)
			}
			if len(w.buf) >= 4+n {
				frame := w.buf[4 : 4+n]
				w.buf = w.buf[4+n:]
				return frame, nil
			}
		}
		if err := w.rep.SetReadDeadline(deadline); err != nil {
			return nil, err
		}
		if cap(w.buf)-len(w.buf) < 32<<10 {
			nb := make([]byte, len(w.buf), 2*cap(w.buf)+64<<10)
			copy(nb, w.buf)
			w.buf = nb
		}
		n, err := w.rep.Read(w.buf[len(w.buf):cap(w.buf)])
		w.buf = w.buf[:len(w.buf)+n]
		if err != nil {
			if errors.Is(err, os.ErrDeadlineExceeded) {
				return nil, errFrameTimeout
			}
			return nil, err
		}
	}
}

type request struct {
	ID   int64  `json:"id"`
	Hash string `json:"hash"`
	Src  string `json:"src"`
	// RSet names the response set; Responses is null when the worker already holds it.
	RSet      uint64   `json:"rset"`
	Responses []string `json:"responses"`
	FlushMS   float64  `json:"flush_ms"`
}

type reply struct {
	ID       int64               `json:"id"`
	From     int                 `json:"from"`
	V        string              `json:"v"` // one of p, f, e per evaluation from From
	E        [][]json.RawMessage `json:"e"` // [index, kind, message] for each e
	Done     bool                `json:"done"`
	CPU      float64             `json:"cpu"`
	Fatal    []string            `json:"fatal"`
	Tampered string              `json:"tampered"`
	Compiled bool                `json:"compiled"`
}

// callResult is what one round trip established. Entries of evals with filled false are
// unknown (the worker died or was killed first) and must be run again elsewhere.
type callResult struct {
	evals    []Eval
	filled   []bool
	timeouts int
	crashes  int
	compiled bool  // the worker compiled the source (it was not in its cache)
	done     bool  // the worker finished the call
	tampered bool  // the function changed state shared with later calls
	fatal    *Eval // the source's top level failed: every response gets this
}

const cancelPoll = 100 * time.Millisecond

// call runs one function on responses. A worker that misbehaves, or a cancelled ctx, leaves
// the worker dead and the call's unknown entries unfilled.
func (w *worker) call(ctx context.Context, hash, src string, responses []string, rset uint64) callResult {
	res := callResult{evals: make([]Eval, len(responses)), filled: make([]bool, len(responses))}
	// Ids are random, not sequential: code in the worker cannot forge frames for a request
	// that has not been sent yet.
	id := rand.Int64N(1<<53) + 1
	w.setProgress(phasePending)
	req := request{ID: id, Hash: hash, Src: src, RSet: rset, Responses: responses,
		FlushMS: float64(w.opts.FlushInterval) / float64(time.Millisecond)}
	switch {
	case rset != 0 && rset == w.rset:
		req.Responses = nil // the worker holds them
	case responses == nil:
		req.Responses = []string{} // null means "held"
	}
	body, err := json.Marshal(req)
	if err != nil {
		w.kill("encode request: " + err.Error())
		return res
	}
	msg := make([]byte, 4+len(body))
	binary.LittleEndian.PutUint32(msg, uint32(len(body)))
	copy(msg[4:], body)
	// The worker reads whole requests before running anything, so a write that cannot finish
	// in a deadline's time means the worker is gone or wedged.
	_ = w.req.SetWriteDeadline(time.Now().Add(w.opts.Deadline + w.opts.StartTimeout))
	if _, err := w.req.Write(msg); err != nil {
		w.kill("write request: " + err.Error())
		return res
	}
	w.rset = rset
	deadline := time.Now().Add(w.opts.Deadline)
	for {
		if ctx.Err() != nil {
			w.kill("call cancelled")
			return res
		}
		// Wake up now and then to notice cancellation; replies normally come much sooner.
		rd := deadline
		if poll := time.Now().Add(cancelPoll); poll.Before(rd) {
			rd = poll
		}
		frame, err := w.readFrame(rd)
		if errors.Is(err, errFrameTimeout) {
			if time.Now().Before(deadline) {
				continue
			}
			idx, start := w.progress()
			left := time.Duration(start + int64(w.opts.Deadline) - monotonicNow())
			if idx == phasePending {
				left = time.Until(deadline.Add(w.opts.StartTimeout))
			}
			if left > 0 {
				deadline = time.Now().Add(left)
				continue
			}
			w.timeoutAt(idx, &res)
			return res
		}
		if err != nil {
			w.crashAt(err, &res)
			return res
		}
		var rp reply
		if err := json.Unmarshal(frame, &rp); err != nil {
			w.corrupted(frame, &res)
			return res
		}
		if rp.ID != id {
			// Out of step (a forged frame ended an earlier call early): nobody to blame.
			w.kill(fmt.Sprintf("protocol: frame for request %d during %d", rp.ID, id))
			return res
		}
		if !fill(&rp, &res) {
			w.corrupted(frame, &res)
			return res
		}
		if !rp.Done {
			continue
		}
		res.compiled = rp.Compiled
		res.done = true
		if len(rp.Fatal) == 2 {
			res.fatal = &Eval{Outcome: Error, Kind: Kind(rp.Fatal[0]), Message: rp.Fatal[1]}
			for i := range res.evals {
				if !res.filled[i] {
					res.evals[i] = Eval{Outcome: Error, Kind: Kind(rp.Fatal[0]), Message: rp.Fatal[1]}
					res.filled[i] = true
				}
			}
		}
		if rp.Tampered != "" {
			res.tampered = true
			w.retire = "function changed shared interpreter state (" + rp.Tampered + ")"
		}
		if rp.CPU > 0.8*w.opts.CPULimit.Seconds() {
			w.retire = "CPU time limit nearly used"
		}
		return res
	}
}

// fill records a frame's results: V has one character per evaluation starting at From, and
// each 'e' has an [index, kind, message] entry in E.
func fill(rp *reply, res *callResult) bool {
	if rp.From < 0 || rp.From+len(rp.V) > len(res.evals) {
		return false
	}
	for k := 0; k < len(rp.V); k++ {
		i := rp.From + k
		switch rp.V[k] {
		case 'p':
			res.evals[i] = Eval{Outcome: Pass}
		case 'f':
			res.evals[i] = Eval{Outcome: Fail}
		case 'e':
			res.evals[i] = Eval{Outcome: Error, Kind: KindException} // detailed below
		default:
			return false
		}
		res.filled[i] = true
	}
	for _, e := range rp.E {
		var i int
		var kind, msg string
		if len(e) != 3 || json.Unmarshal(e[0], &i) != nil || json.Unmarshal(e[1], &kind) != nil ||
			json.Unmarshal(e[2], &msg) != nil || i < rp.From || i >= rp.From+len(rp.V) || rp.V[i-rp.From] != 'e' {
			return false
		}
		res.evals[i] = Eval{Outcome: Error, Kind: Kind(kind), Message: msg}
	}
	return true
}

// corrupted handles a frame that is not one the worker code writes. Once the worker is
// evaluating this call's responses, only the function can have written it, and re-running
// would only corrupt a fresh worker the same way: the function's unknown results are errors.
func (w *worker) corrupted(frame []byte, res *callResult) {
	idx, _ := w.progress()
	w.kill(fmt.Sprintf("protocol: bad frame %q", truncate(string(frame), 120)))
	if idx < 0 {
		return
	}
	for i := range res.evals {
		if !res.filled[i] {
			res.evals[i] = Eval{Outcome: Error, Kind: KindCrash, Message: "the function wrote into the worker's protocol pipe"}
			res.filled[i] = true
			res.crashes++
		}
	}
}

func (w *worker) timeoutAt(idx int64, res *callResult) {
	msg := fmt.Sprintf("ran past the %v deadline", w.opts.Deadline)
	switch {
	case idx >= 0 && idx < int64(len(res.evals)):
		res.evals[idx] = Eval{Outcome: Timeout, Message: msg}
		res.filled[idx] = true
		res.timeouts++
	case idx == phaseTopLevel || idx == phaseCheck:
		// The source's top level runs before every evaluation; it would hang each time. The
		// state check after the evaluations only hangs on state the function tampered with.
		what := "top level "
		if idx == phaseCheck {
			what = "state left behind by the function: check "
		} else {
			res.fatal = &Eval{Outcome: Timeout, Message: what + msg}
		}
		for i := range res.evals {
			if !res.filled[i] {
				res.evals[i] = Eval{Outcome: Timeout, Message: what + msg}
				res.filled[i] = true
				res.timeouts++
			}
		}
	}
	w.kill("deadline")
}

func (w *worker) crashAt(readErr error, res *callResult) {
	idx, _ := w.progress()
	w.kill("worker died: " + readErr.Error())
	msg := "worker died: " + w.exitStatus()
	switch {
	case idx >= 0 && idx < int64(len(res.evals)) && !res.filled[idx]:
		res.evals[idx] = Eval{Outcome: Error, Kind: KindCrash, Message: msg}
		res.filled[idx] = true
		res.crashes++
	case idx == phaseTopLevel:
		res.fatal = &Eval{Outcome: Error, Kind: KindCrash, Message: "top level: " + msg}
		for i := range res.evals {
			if !res.filled[i] {
				res.evals[i] = *res.fatal
				res.filled[i] = true
				res.crashes++
			}
		}
	}
}

// kill ends the worker's whole process group; its PID namespace takes any escapee with it.
func (w *worker) kill(reason string) {
	if w.dead {
		return
	}
	w.dead = true
	w.retire = reason
	if w.cmd != nil && w.cmd.Process != nil {
		_ = syscall.Kill(-w.cmd.Process.Pid, syscall.SIGKILL)
		_ = w.cmd.Process.Kill()
		w.wait()
	}
}

func (w *worker) wait() {
	if w.waited || w.cmd == nil || w.cmd.Process == nil {
		return
	}
	w.waited = true
	_ = w.cmd.Wait()
}

func (w *worker) exitStatus() string {
	if w.cmd == nil || w.cmd.ProcessState == nil {
		return "unknown status"
	}
	s := w.cmd.ProcessState.String()
	if tail := w.stderr.String(); tail != "" {
		s += ": " + truncate(tail, 300)
	}
	return s
}

// close kills the worker and releases everything it holds.
func (w *worker) close() {
	w.kill("closed")
	if w.req != nil {
		w.req.Close()
	}
	if w.rep != nil {
		w.rep.Close()
	}
	if w.prog != nil {
		_ = unix.Munmap(w.prog)
		w.prog = nil
	}
	if w.dir != "" {
		_ = os.Chmod(w.dir, 0o700)
		_ = os.RemoveAll(w.dir)
	}
}

// tailBuffer keeps the last max bytes written: worker diagnostics, bounded whatever the
// function prints to fd 2.
type tailBuffer struct {
	mu  sync.Mutex
	max int
	b   []byte
}

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.b = append(t.b, p...)
	if len(t.b) > t.max {
		t.b = append(t.b[:0], t.b[len(t.b)-t.max:]...)
	}
	return len(p), nil
}

func (t *tailBuffer) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return string(t.b)
}

var _ io.Writer = (*tailBuffer)(nil)

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}
