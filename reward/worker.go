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
	"regexp"
	"strconv"
	"strings"
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

// ZygoteModules lists the modules every worker's zygote imports before its first fork
// (worker.py's PRELOAD and OPTIONAL; not the HEAVY ones it imports on demand), for a
// benchmark that forks an equally loaded interpreter.
func ZygoteModules() []string {
	var out []string
	for _, name := range []string{"PRELOAD", "OPTIONAL"} {
		block := regexp.MustCompile(`(?ms)^` + name + ` = \((.*?)\)$`).FindStringSubmatch(workerSource)
		if block == nil {
			continue
		}
		for _, m := range regexp.MustCompile(`"([A-Za-z0-9_.]+)"`).FindAllStringSubmatch(block[1], -1) {
			out = append(out, m[1])
		}
	}
	return out
}

// Progress slot phases (Python's PHASE_TOPLEVEL, plus pending, which only Go writes).
const (
	phaseTopLevel = -1
	phasePending  = -3
)

const progressSize = 4096

// Reply frame tags: C frames are the function's child's results, relayed by the zygote; Z
// frames are the zygote's own (ready, and the end of each call), which no function can write.
const (
	tagChild  = 'C'
	tagZygote = 'Z'
)

// worker is one sandboxed zygote interpreter. It is used by one goroutine at a time (the pool
// hands it out exclusively), so it has no lock of its own.
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
func startWorker(in *interpreter, opts Options, id int64) (w *worker, err error) {
	w = &worker{id: id, opts: opts, stderr: &tailBuffer{max: 4096}}
	defer func() {
		if err != nil {
			w.close()
		}
	}()
	// An empty directory nobody can write: the mount point of the sandbox's root (in the
	// worker's mount namespace only), or the working directory without a sandbox.
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
	// Room for a whole response set in one write (the default is 64 KiB); best effort.
	_, _ = unix.FcntlInt(reqW.Fd(), unix.F_SETPIPE_SZ, 1<<20)
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

	// The worker applies its rlimits itself, after its imports and before it reports ready,
	// hence before it reads any untrusted code (a parent without CAP_SYS_RESOURCE cannot
	// prlimit a process of another uid).
	cpu := max(int64(opts.CPULimit/time.Second), 1)
	audit := "1"
	if opts.noAuditHook {
		audit = "0"
	}
	args := []string{in.path, "-I", "-B", "-c", workerSource,
		strconv.Itoa(opts.MaxOutput), strconv.FormatUint(opts.MemoryLimit, 10), strconv.FormatInt(cpu, 10),
		strconv.FormatUint(opts.OpenFiles, 10), strconv.FormatInt(opts.TmpBytes, 10), audit}
	if opts.UnsafeNoSandbox {
		w.cmd = exec.Command(in.path, args[1:]...)
		w.cmd.Env = workerEnv
		w.cmd.Dir = w.dir
	} else {
		exe, err := os.Executable()
		if err != nil {
			return w, fmt.Errorf("reward sandbox: find this program to re-execute: %w", err)
		}
		spec := sandboxSpec{Root: w.dir, Python: in.path, Args: args, Env: workerEnv, Mounts: in.mounts,
			UID: opts.UID, GID: opts.GID, TmpBytes: opts.TmpBytes}
		if _, userns := opts.namespaceFlags(true); userns {
			spec.UID, spec.GID = -1, -1
		}
		b, err := json.Marshal(spec)
		if err != nil {
			return w, err
		}
		w.cmd = &exec.Cmd{Path: exe, Args: []string{sandboxArg0, string(b)}, Env: []string{}, Dir: "/"}
	}
	w.cmd.ExtraFiles = []*os.File{reqR, repW, progFile}
	w.cmd.Stderr = w.stderr
	w.cmd.SysProcAttr = opts.sysProcAttr(true)
	w.cmd.WaitDelay = time.Second
	if err = w.cmd.Start(); err != nil {
		if !opts.UnsafeNoSandbox && refusedNamespaces(err) {
			return w, namespaceError(err)
		}
		return w, fmt.Errorf("start worker %s: %w", in.path, err)
	}
	// Only the worker may hold its ends now, so that its death reads as end of stream.
	reqR.Close()
	repW.Close()
	progFile.Close()
	tag, frame, err := w.readFrame(time.Now().Add(opts.StartTimeout))
	if err != nil {
		if line := sandboxFailure(w.stderr.String()); line != "" {
			return w, fmt.Errorf("reward sandbox: %s (the worker's isolation could not be set up; --unsafe-no-sandbox runs without it)", line)
		}
		return w, fmt.Errorf("worker did not become ready: %w (stderr: %s)", err, truncate(w.stderr.String(), 600))
	}
	var ready struct {
		Ready bool `json:"ready"`
	}
	if err = json.Unmarshal(frame, &ready); err != nil || tag != tagZygote || !ready.Ready {
		return w, fmt.Errorf("worker sent %q instead of ready", truncate(string(frame), 200))
	}
	return w, nil
}

// sandboxFailure returns the sandbox init's one-line reason from a worker's stderr, if any.
func sandboxFailure(stderr string) string {
	for _, line := range strings.Split(stderr, "\n") {
		if rest, ok := strings.CutPrefix(line, "sandbox: "); ok {
			return rest
		}
	}
	return ""
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

// readFrame returns the next reply frame's tag and payload, waiting until deadline. On
// timeout, bytes already read stay buffered so the next call resumes mid-frame.
func (w *worker) readFrame(deadline time.Time) (byte, []byte, error) {
	for {
		if len(w.buf) >= 4 {
			n := int(binary.LittleEndian.Uint32(w.buf))
			if n < 1 || n > 64<<20+1 {
				return 0, nil, fmt.Errorf("reply frame of %d bytes", n)
			}
			if len(w.buf) >= 4+n {
				frame := w.buf[4 : 4+n]
				w.buf = w.buf[4+n:]
				return frame[0], frame[1:], nil
			}
		}
		if err := w.rep.SetReadDeadline(deadline); err != nil {
			return 0, nil, err
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
				return 0, nil, errFrameTimeout
			}
			return 0, nil, err
		}
	}
}

// callOptions travel with the function's source.
type callOptions struct {
	Src     string  `json:"src"`
	FlushMS float64 `json:"flush_ms"`
	Returns Returns `json:"returns"`
}

// Request flags (worker.py's REQ_*).
const (
	reqResponses = 1 // the responses follow; otherwise the worker holds the set
	reqHeavy     = 2 // the source names a module only some zygotes import (see HEAVY)
)

// heavyImport matches sources that name a module a zygote imports only on demand.
var heavyImport = regexp.MustCompile(`\b(nltk|numpy)\b`)

// encodeRequest lays a request out for a zygote that never parses it: a fixed header (id,
// response set, flags, length of the options), the options as JSON, then, unless the worker
// holds them, the responses as a count, their lengths and their UTF-8 bytes, which the zygote
// keeps as they are for later calls on the same set.
func encodeRequest(id int64, rset uint64, opts callOptions, responses []string) ([]byte, error) {
	ob, err := json.Marshal(opts)
	if err != nil {
		return nil, err
	}
	const hdr = 8 + 8 + 1 + 4
	size := hdr + len(ob)
	var flags byte
	if heavyImport.MatchString(opts.Src) {
		flags |= reqHeavy
	}
	if responses != nil {
		flags |= reqResponses
		size += 4 + 4*len(responses)
		for _, r := range responses {
			size += len(r)
		}
	}
	if size > 64<<20 {
		return nil, fmt.Errorf("request of %d bytes exceeds the worker's 64 MiB frame limit", size)
	}
	le := binary.LittleEndian
	msg := make([]byte, 4+hdr, 4+size)
	le.PutUint32(msg[0:], uint32(size))
	le.PutUint64(msg[4:], uint64(id))
	le.PutUint64(msg[12:], rset)
	msg[20] = flags
	le.PutUint32(msg[21:], uint32(len(ob)))
	msg = append(msg, ob...)
	if responses != nil {
		msg = le.AppendUint32(msg, uint32(len(responses)))
		for _, r := range responses {
			msg = le.AppendUint32(msg, uint32(len(r)))
		}
		for _, r := range responses {
			msg = append(msg, r...)
		}
	}
	return msg, nil
}

// childReply is one C frame: results from index From, and with End the function's last.
type childReply struct {
	ID    int64               `json:"id"`
	From  int                 `json:"from"`
	V     string              `json:"v"` // one of p, f, e, s per evaluation from From
	E     [][]json.RawMessage `json:"e"` // [index, kind, message] for each e and s
	End   bool                `json:"end"`
	Fatal []string            `json:"fatal"`
}

// zygoteDone is the Z frame that ends a call: nothing the call started can write any more.
type zygoteDone struct {
	ID     int64 `json:"id"`
	Done   bool  `json:"done"`
	Status int   `json:"status"` // a child that did not report its end: its exit code, or minus the signal that killed it
	// Garbled: the child broke the framing of its results.
	Garbled bool `json:"garbled"`
}

// callResult is what one round trip established. Entries of evals with filled false are
// unknown (the function's process died or was killed first) and must be run again.
type callResult struct {
	evals    []Eval
	filled   []bool
	timeouts int
	done     bool  // the call ran to its end
	fatal    *Eval // the source's top level failed: every response gets this
}

const cancelPoll = 100 * time.Millisecond

// call runs one function on responses. A worker that misbehaves, or a cancelled ctx, leaves
// the worker dead and the call's unknown entries unfilled.
func (w *worker) call(ctx context.Context, src string, responses []string, rset uint64) callResult {
	res := callResult{evals: make([]Eval, len(responses)), filled: make([]bool, len(responses))}
	// Ids are random, not sequential: nothing in the worker can guess the next request's.
	id := rand.Int64N(1<<53) + 1
	w.setProgress(phasePending)
	send := responses
	switch {
	case rset != 0 && rset == w.rset:
		send = nil // the worker holds them
	case responses == nil:
		send = []string{}
	}
	msg, err := encodeRequest(id, rset, callOptions{Src: src,
		FlushMS: float64(w.opts.FlushInterval) / float64(time.Millisecond), Returns: w.opts.Returns}, send)
	if err != nil {
		w.kill("encode request: " + err.Error())
		return res
	}
	// The zygote reads whole requests before running anything, so a write that cannot finish
	// in a deadline's time means the worker is gone or wedged.
	_ = w.req.SetWriteDeadline(time.Now().Add(w.opts.Deadline + w.opts.StartTimeout))
	if _, err := w.req.Write(msg); err != nil {
		w.kill("write request: " + err.Error())
		return res
	}
	w.rset = rset
	start := time.Now()
	deadline := start.Add(w.opts.Deadline)
	// The progress slot is the child's to write, so it could keep moving its own deadline:
	// the call as a whole gets a deadline per response, and one for the top level.
	hardDeadline := start.Add(time.Duration(len(responses)+2) * w.opts.Deadline)
	var ended, misbehaved bool
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
		tag, frame, err := w.readFrame(rd)
		if errors.Is(err, errFrameTimeout) {
			if time.Now().Before(deadline) {
				continue
			}
			idx, started := w.progress()
			left := time.Duration(started + int64(w.opts.Deadline) - monotonicNow())
			if idx == phasePending {
				left = time.Until(deadline.Add(w.opts.StartTimeout))
			}
			if hard := time.Until(hardDeadline); idx != phasePending && hard < left {
				left = hard
			}
			if left > 0 {
				deadline = time.Now().Add(left)
				continue
			}
			w.timeoutAt(idx, &res)
			if !w.killCall(id) {
				w.kill("deadline")
			}
			return res
		}
		if err != nil {
			w.kill("worker died: " + err.Error())
			w.crashAt("worker died: "+w.exitStatus(), &res)
			return res
		}
		switch tag {
		case tagChild:
			if misbehaved {
				continue
			}
			var rp childReply
			if json.Unmarshal(frame, &rp) != nil || rp.ID != id || !fill(&rp, &res) {
				misbehaved = true
				continue
			}
			if rp.End {
				ended = true
				if len(rp.Fatal) == 2 {
					res.fatal = &Eval{Outcome: Error, Kind: Kind(rp.Fatal[0]), Message: rp.Fatal[1]}
				}
			}
		case tagZygote:
			var d zygoteDone
			if json.Unmarshal(frame, &d) != nil || d.ID != id || !d.Done {
				w.kill(fmt.Sprintf("protocol: zygote frame %q during %d", truncate(string(frame), 120), id))
				return res
			}
			w.finish(d, ended, misbehaved, &res)
			return res
		default:
			w.kill(fmt.Sprintf("protocol: frame tag %q", tag))
			return res
		}
	}
}

// finish settles a call once its child is gone.
func (w *worker) finish(d zygoteDone, ended, misbehaved bool, res *callResult) {
	switch {
	case d.Garbled || misbehaved:
		// Only this call's child writes C frames: what it broke is its own.
		w.blameUnfilled(res, Eval{Outcome: Error, Kind: KindCrash, Message: "the function wrote into the worker's protocol pipe"})
		res.done = true
	case !ended:
		w.crashAt(childExit(d.Status), res)
	default:
		if res.fatal != nil {
			w.blameUnfilled(res, *res.fatal)
		}
		res.done = true
	}
}

func (w *worker) blameUnfilled(res *callResult, e Eval) {
	for i := range res.evals {
		if !res.filled[i] {
			res.evals[i] = e
			res.filled[i] = true
		}
	}
}

// childExit describes how a function's process ended without reporting its end.
func childExit(status int) string {
	switch {
	case status == -int(syscall.SIGXCPU):
		return "the function's process ran out of its CPU time limit"
	case status < 0:
		return "the function's process was killed by " + unix.SignalName(syscall.Signal(-status))
	}
	return fmt.Sprintf("the function's process exited with status %d", status)
}

// fill records a frame's results: V has one character per evaluation starting at From, and
// each 'e' and 's' has an [index, kind, message] entry in E.
func fill(rp *childReply, res *callResult) bool {
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
		case 's':
			res.evals[i] = Eval{Outcome: Skipped, Kind: KindBadReturn}
		default:
			return false
		}
		res.filled[i] = true
	}
	for _, e := range rp.E {
		var i int
		var kind, msg string
		if len(e) != 3 || json.Unmarshal(e[0], &i) != nil || json.Unmarshal(e[1], &kind) != nil ||
			json.Unmarshal(e[2], &msg) != nil || i < rp.From || i >= rp.From+len(rp.V) {
			return false
		}
		switch rp.V[i-rp.From] {
		case 'e':
			res.evals[i] = Eval{Outcome: Error, Kind: Kind(kind), Message: msg}
		case 's':
			res.evals[i] = Eval{Outcome: Skipped, Kind: KindBadReturn, Message: msg}
		default:
			return false
		}
	}
	return true
}

func (w *worker) timeoutAt(idx int64, res *callResult) {
	msg := fmt.Sprintf("ran past the %v deadline", w.opts.Deadline)
	switch {
	case idx >= 0 && idx < int64(len(res.evals)):
		res.evals[idx] = Eval{Outcome: Timeout, Message: msg}
		res.filled[idx] = true
		res.timeouts++
	case idx == phaseTopLevel:
		// The source's top level runs before every evaluation; it would hang each time.
		res.fatal = &Eval{Outcome: Timeout, Message: "top level " + msg}
		for i := range res.evals {
			if !res.filled[i] {
				res.evals[i] = *res.fatal
				res.filled[i] = true
				res.timeouts++
			}
		}
	}
}

// killCall ends a call that overran by killing only the function's process, which the zygote
// names in the progress slot (by its pid in the worker's namespace), and waits for the zygote
// to report the call over. The worker then serves on without a restart (a new zygote costs its
// imports). False when that did not work out, and the whole worker must go. (A function that
// writes another pid into the slot only gets its own worker killed.)
func (w *worker) killCall(id int64) bool {
	if w.cmd == nil || w.cmd.Process == nil {
		return false
	}
	nsPid := strconv.FormatUint(binary.LittleEndian.Uint64(w.prog[16:24]), 10)
	zygote := w.cmd.Process.Pid
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", zygote, zygote))
	if err != nil {
		return false
	}
	child := 0
	for _, kid := range strings.Fields(string(b)) {
		status, err := os.ReadFile("/proc/" + kid + "/status")
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(status), "\n") {
			// NSpid: the pid in each namespace, outermost first.
			// (One entry only without the sandbox: the same pid.)
			if f := strings.Fields(line); len(f) >= 2 && f[0] == "NSpid:" && f[len(f)-1] == nsPid {
				child, _ = strconv.Atoi(f[1])
			}
		}
	}
	if child <= 0 || syscall.Kill(child, syscall.SIGKILL) != nil {
		return false
	}
	until := time.Now().Add(w.opts.StartTimeout)
	for {
		tag, frame, err := w.readFrame(until)
		if err != nil {
			return false
		}
		if tag != tagZygote {
			continue // the killed function's last results: its verdicts are settled already
		}
		var d zygoteDone
		return json.Unmarshal(frame, &d) == nil && d.ID == id && d.Done
	}
}

// crashAt blames the evaluation the function's process was running when it died; the ones
// after it stay unfilled, to run again.
func (w *worker) crashAt(msg string, res *callResult) {
	idx, _ := w.progress()
	switch {
	case idx >= 0 && idx < int64(len(res.evals)) && !res.filled[idx]:
		res.evals[idx] = Eval{Outcome: Error, Kind: KindCrash, Message: msg}
		res.filled[idx] = true
	case idx == phaseTopLevel:
		res.fatal = &Eval{Outcome: Error, Kind: KindCrash, Message: "top level: " + msg}
		w.blameUnfilled(res, *res.fatal)
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
