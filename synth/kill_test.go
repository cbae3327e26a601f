package synth

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

const killURLEnv = "SYNTH_KILL_CHILD_URL"

// TestMain runs the child that TestKilledRunResendsNothingAnswered kills when this test
// binary is started as one.
func TestMain(m *testing.M) {
	if url := os.Getenv(killURLEnv); url != "" {
		os.Exit(killChild())
	}
	os.Exit(m.Run())
}

// killChild is the run TestKilledRunResendsNothingAnswered kills and restarts: the judge
// stage on the AutoIF sample's 20 recorded judge prompts.
func killChild() int {
	dir := os.Getenv("SYNTH_KILL_CHILD_DIR")
	cfg, err := LoadConfig(filepath.Join(dir, "config.yaml"))
	if err == nil {
		_, err = Run(context.Background(), cfg, filepath.Join(dir, "out"), RunOptions{})
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return 0
}

// `synth all` killed with SIGKILL at a random point and started again sends no request whose
// answer had reached the cache, and ends with every request answered once more at most for
// those in flight at the kill.
func TestKilledRunResendsNothingAnswered(t *testing.T) {
	srv := newReplay(t)
	srv.SetFault(func(string, int, http.ResponseWriter) bool {
		time.Sleep(40 * time.Millisecond)
		return false
	})
	dir := t.TempDir()
	cfg := "endpoints:\n  judge: {url: " + srv.URL + "/v1, model: recorded, concurrency: 2}\n" +
		"start: judge\ninput: " + mustAbs(t, "testdata/autoif/query_rft_score.jsonl") + "\nstop: judge\n" +
		"stages:\n  judge: {endpoint: judge}\n"
	if err := os.WriteFile(filepath.Join(dir, "config.yaml"), []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	child := func() *exec.Cmd {
		cmd := exec.Command(os.Args[0])
		cmd.Env = append(os.Environ(), killURLEnv+"="+srv.URL, "SYNTH_KILL_CHILD_DIR="+dir)
		return cmd
	}
	first := child()
	if err := first.Start(); err != nil {
		t.Fatal(err)
	}
	// Kill at a random point: once a random number of answers has reached the cache.
	countCached := func() int {
		n := 0
		filepath.Walk(filepath.Join(dir, "out", "cache"), func(p string, _ os.FileInfo, err error) error {
			if err == nil && strings.HasSuffix(p, ".json") {
				n++
			}
			return nil
		})
		return n
	}
	target := 1 + rand.IntN(15)
	for deadline := time.Now().Add(30 * time.Second); countCached() < target && time.Now().Before(deadline); {
		time.Sleep(5 * time.Millisecond)
	}
	first.Process.Signal(syscall.SIGKILL)
	first.Wait()
	cached := countCached()
	if cached == 0 || cached == 20 {
		t.Fatalf("killed with %d of 20 answers cached; want a point in the middle", cached)
	}
	if out, err := child().CombinedOutput(); err != nil {
		t.Fatalf("rerun: %v\n%s", err, out)
	}
	sent := 0
	for _, n := range srv.Answered() {
		sent += n
	}
	// Each prompt answered once, plus at most the 2 in flight at the kill.
	if len(srv.Answered()) != 20 || sent > 20+2 {
		t.Errorf("%d prompts answered, %d sends; %d were cached before the kill", len(srv.Answered()), sent, cached)
	}
	f, err := LoadFunnel(filepath.Join(dir, "out", "funnel.json"))
	if err != nil || f.Stage("judge") == nil || f.Stage("judge").Kept != 16 || f.Stage("judge").Client.Cached != int64(cached) {
		t.Errorf("funnel after the rerun: %+v %v", f, err)
	}
	t.Logf("killed with %d of 20 cached; %d sends in all", cached, sent)
}
