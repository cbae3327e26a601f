package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// A bad run configuration fails with one line naming the problem, before the run directory
// (and the embedded server's store in it) exists.
func TestRunRejectsBadConfigsBeforeStartingAnything(t *testing.T) {
	noFuncs := writeConfig(t, `{"instruction": "Rhyme", "query": "Why?"}`+"\n")
	cases := []struct {
		name, body, want string
	}{
		{"unknown key", "run:\n  kk: 3\n", `unknown key "run.kk"`},
		{"k below 2", "run:\n  k: 1\n", "k 1: at least 2"},
		{"negative max lag", "run:\n  max-lag: -1\n", "max-lag -1"},
		{"unknown mode", "run:\n  mode: lockstep\n", `mode "lockstep"`},
		{"missing prompt file", "run:\n  prompts: [/nonexistent/q.jsonl]\n", "/nonexistent/q.jsonl"},
		{"instruction without a verified function", "run:\n  prompts: [" + noFuncs + "]\n", "has no verified function"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "run")
			app := newApp()
			var out bytes.Buffer
			app.Writer, app.ErrWriter = &out, &out
			err := app.RunContext(context.Background(), []string{"autoif", "--run-dir", dir, "--config", writeConfig(t, tc.body), "run"})
			if err == nil || !strings.Contains(err.Error(), tc.want) || strings.Contains(err.Error(), "\n") {
				t.Fatalf("got %v, want one line containing %q", err, tc.want)
			}
			if _, err := os.Stat(dir); !os.IsNotExist(err) {
				t.Fatalf("run directory exists after a bad config (%v): something started", err)
			}
		})
	}
}
