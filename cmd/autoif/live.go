package main

import (
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/autoif/autoif/orchestrator"
)

// RunLogFile is where `autoif run` on a terminal writes its structured log, in the run
// directory.
const RunLogFile = "run.log"

// liveLine keeps one status line at the bottom of a terminal: whatever else is written goes
// above it, and the line is drawn again below.
type liveLine struct {
	mu     sync.Mutex
	out    io.Writer
	status string
	drawn  time.Time
}

// eraseLine erases the line the cursor is on (carriage return, erase to end of line).
const eraseLine = "\r\x1b[K"

func (l *liveLine) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.status != "" {
		io.WriteString(l.out, eraseLine)
	}
	n, err := l.out.Write(p)
	if l.status != "" {
		io.WriteString(l.out, l.status)
	}
	return n, err
}

// set replaces the status line, at most every 200ms: polls come faster than anyone reads.
func (l *liveLine) set(status string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if now := time.Now(); status != l.status && now.Sub(l.drawn) >= 200*time.Millisecond {
		l.status, l.drawn = status, now
		io.WriteString(l.out, eraseLine+status)
	}
}

// done leaves the last status on its own line.
func (l *liveLine) done() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.status != "" {
		io.WriteString(l.out, "\n")
		l.status = ""
	}
}

// liveRun is how `autoif run` reports: on a terminal, a live status line on out with the
// structured log in RUN_DIR/run.log; otherwise out and the log as they are.
type liveRun struct {
	// Out receives the run's lines (steps, warnings, the summary).
	Out io.Writer
	// OnProgress feeds the status line; nil without a terminal.
	OnProgress func(orchestrator.Progress)
	close      func()
}

// startLive sets up reporting for a run in dir. With tty, the default logger moves to
// RUN_DIR/run.log at level; Close puts it back.
func startLive(out io.Writer, tty bool, dir string, level slog.Level) (*liveRun, error) {
	if !tty {
		return &liveRun{Out: out, close: func() {}}, nil
	}
	f, err := os.OpenFile(filepath.Join(dir, RunLogFile), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("run log: %w", err)
	}
	prev := slog.Default()
	slog.SetDefault(slog.New(slog.NewTextHandler(f, &slog.HandlerOptions{Level: level})))
	line := &liveLine{out: out}
	fmt.Fprintf(line, "log: %s\n", f.Name())
	return &liveRun{
		Out:        line,
		OnProgress: func(p orchestrator.Progress) { line.set(p.Line()) },
		close: func() {
			line.done()
			slog.SetDefault(prev)
			f.Close()
		},
	}, nil
}

// Close ends the status line and restores the logger.
func (l *liveRun) Close() { l.close() }
