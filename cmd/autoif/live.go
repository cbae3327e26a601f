package main

import (
	"bytes"
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
	// partial holds text written without its newline yet (a table is written cell by cell):
	// it goes out with its line, so the status is never drawn in the middle of one.
	partial []byte
}

// eraseLine erases the line the cursor is on (carriage return, erase to end of line).
const eraseLine = "\r\x1b[K"

func (l *liveLine) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.partial = append(l.partial, p...)
	end := bytes.LastIndexByte(l.partial, '\n') + 1
	if end == 0 {
		return len(p), nil
	}
	if err := l.emit(l.partial[:end]); err != nil {
		return 0, err
	}
	l.partial = append(l.partial[:0], l.partial[end:]...)
	return len(p), nil
}

// emit writes whole lines above the status line.
func (l *liveLine) emit(lines []byte) error {
	if l.status != "" {
		io.WriteString(l.out, eraseLine)
	}
	_, err := l.out.Write(lines)
	if l.status != "" {
		io.WriteString(l.out, l.status)
	}
	return err
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

// done leaves the last status on its own line, after any unfinished line.
func (l *liveLine) done() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.partial) > 0 {
		_ = l.emit(append(l.partial, '\n'))
		l.partial = nil
	}
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
