package main

import (
	"io"
	"path/filepath"
	"strings"
	"testing"
)

// Bad `autoif serve` flags are one clear error before anything listens.
func TestServeFlagErrors(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "policy")
	app := newApp()
	app.Writer = io.Discard
	if err := app.Run([]string{"autoif", "model", "init", "--layers", "1", "--hidden", "32", "--heads", "2",
		"--intermediate", "64", "--max-positions", "128", "--out", dir}); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{nil, "--model is required"},
		{[]string{"--model", dir, "--max-batch", "0"}, "--max-batch 0"},
		{[]string{"--model", dir, "--max-queue", "-1"}, "--max-queue -1"},
		{[]string{"--model", dir, "--max-model-len", "1000"}, "exceeds the model's 128 positions"},
		{[]string{"--model", dir, "--port", "70000"}, "--port 70000"},
		{[]string{"--model", dir, "--adapter", filepath.Join(dir, "nope")}, "nope"},
		{[]string{"--model", filepath.Join(dir, "nope")}, "nope"},
	} {
		app := newApp()
		app.Writer, app.ErrWriter = io.Discard, io.Discard
		err := app.Run(append([]string{"autoif", "serve"}, tc.args...))
		if err == nil || !strings.Contains(err.Error(), tc.want) || strings.Contains(err.Error(), "\n") {
			t.Errorf("%v: error %v, want one line containing %q", tc.args, err, tc.want)
		}
	}
}
