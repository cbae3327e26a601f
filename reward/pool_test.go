package reward

import (
	"context"
	"os"
	"os/exec"
	"testing"
	"time"
)

// newTestPool starts a real pool; tests that need Python fail loudly when it is missing.
func newTestPool(t testing.TB, opts Options) *Pool {
	t.Helper()
	if _, err := exec.LookPath("python3"); err != nil {
		if _, err2 := os.Stat("/usr/bin/python3"); err2 != nil {
			t.Fatalf("python3 is required for reward tests (make ensures it): %v", err)
		}
	}
	if opts.Workers == 0 {
		opts.Workers = 2
	}
	if opts.Deadline == 0 {
		opts.Deadline = time.Second
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	p, err := NewPool(ctx, opts)
	if err != nil {
		t.Fatalf("start pool: %v", err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}

func TestPoolEvaluatesABenignFunction(t *testing.T) {
	p := newTestPool(t, Options{})
	evals, err := p.Evaluate(context.Background(), "def evaluate(response):\n    return 'a' in response\n", []string{"abc", "xyz"})
	if err != nil {
		t.Fatal(err)
	}
	if evals[0].Outcome != Pass || evals[1].Outcome != Fail {
		t.Errorf("got %+v, want pass, fail", evals)
	}
}

// The benchmark's fork floor imports what a zygote imports: the list read from worker.py.
func TestZygoteModulesAreWorkerPreloads(t *testing.T) {
	got := ZygoteModules()
	want := map[string]bool{"re": true, "json": true, "encodings.utf_8": true, "langdetect": true}
	for _, m := range got {
		delete(want, m)
		if m == "numpy" || m == "nltk" {
			t.Errorf("%s is imported on demand, not before the first fork", m)
		}
	}
	if len(want) > 0 || len(got) < 30 {
		t.Errorf("ZygoteModules() = %v; missing %v", got, want)
	}
}
