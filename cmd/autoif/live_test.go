package main

import (
	"bytes"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/autoif/autoif/orchestrator"
)

// On a terminal the run keeps one status line at the bottom, prints its lines above it, and
// writes the structured log to RUN_DIR/run.log instead of the screen.
func TestLiveRunOnATerminal(t *testing.T) {
	dir := t.TempDir()
	var screen bytes.Buffer
	before := slog.Default()
	live, err := startLive(&screen, true, dir, slog.LevelInfo)
	if err != nil {
		t.Fatal(err)
	}
	slog.Info("rollout step", "pairs", 3)
	live.OnProgress(orchestrator.Progress{Version: 1, MaxSteps: 3, Pairs: 12, RewardMean: 0.25, HasReward: true, PairsPerSec: 0.5, ETA: 90 * time.Second})
	// A line written in pieces (a table, cell by cell) comes out whole.
	live.Out.Write([]byte("step 1  "))
	live.Out.Write([]byte("   reward/mean 0.250\n"))
	live.Close()
	if slog.Default() != before {
		t.Error("Close did not give the logger back")
	}
	log, err := os.ReadFile(filepath.Join(dir, RunLogFile))
	if err != nil || !strings.Contains(string(log), "rollout step") {
		t.Fatalf("run.log %q, %v: want the structured log", log, err)
	}
	got := screen.String()
	if strings.Contains(got, "rollout step") {
		t.Errorf("the structured log reached the screen:\n%q", got)
	}
	status := eraseLine + "policy v1/3  pairs 12  reward 0.250  0.50 pairs/s  in-flight 0  0s  ETA 1m30s"
	want := "log: " + filepath.Join(dir, RunLogFile) + "\n" + status + eraseLine + "step 1     reward/mean 0.250\n" + strings.TrimPrefix(status, eraseLine) + "\n"
	if got != want {
		t.Errorf("screen\n%q\nwant\n%q", got, want)
	}
}

// Without a terminal the run prints as it always did: its lines, no status, the log untouched.
func TestLiveRunWithoutATerminal(t *testing.T) {
	var out bytes.Buffer
	dir := t.TempDir()
	live, err := startLive(&out, false, dir, slog.LevelInfo)
	if err != nil {
		t.Fatal(err)
	}
	defer live.Close()
	if live.Out != &out || live.OnProgress != nil {
		t.Error("without a terminal the output must be the plain writer, with no status line")
	}
	if _, err := os.Stat(filepath.Join(dir, RunLogFile)); !os.IsNotExist(err) {
		t.Errorf("run.log exists without a terminal: %v", err)
	}
}
