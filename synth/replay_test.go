package synth

import (
	"context"
	"encoding/json"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/autoif/autoif/reward"
	"github.com/autoif/autoif/synth/replay"
)

// replayServer is a real HTTP server speaking the OpenAI chat completions API (and TEI's
// /predict), answering from the completions real models gave to the same prompts in the
// recorded files under testdata/ (see PROVENANCE.md and package replay).
type replayServer struct {
	*httptest.Server
	*replay.Handler
}

func readLines(t *testing.T, path string) []json.RawMessage {
	t.Helper()
	rows, err := ReadJSONL[json.RawMessage](path)
	if err != nil {
		t.Fatal(err)
	}
	return rows
}

func newReplay(t *testing.T) *replayServer {
	t.Helper()
	h, err := replay.Load("testdata")
	if err != nil {
		t.Fatal(err)
	}
	srv := &replayServer{Server: httptest.NewServer(h), Handler: h}
	t.Cleanup(srv.Close)
	return srv
}

var (
	poolOnce sync.Once
	pool     *reward.Pool
	poolErr  error
)

func testPool(t *testing.T) *reward.Pool {
	t.Helper()
	poolOnce.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		pool, poolErr = reward.NewPool(ctx, reward.Options{Workers: 2, Deadline: 5 * time.Second})
	})
	if poolErr != nil {
		t.Fatalf("start reward pool (python3 is required): %v", poolErr)
	}
	return pool
}

// runConfig runs a pipeline config given as YAML (paths relative to testdata) into a fresh
// directory, against the replay server.
func runConfig(t *testing.T, srv *replayServer, yamlText string) (string, *Funnel) {
	t.Helper()
	dir := t.TempDir()
	cfgPath := filepath.Join(dir, "config.yaml")
	text := strings.ReplaceAll(yamlText, "REPLAY", srv.URL)
	text = strings.ReplaceAll(text, "TESTDATA", mustAbs(t, "testdata"))
	text = strings.ReplaceAll(text, "TMP", dir)
	if err := os.WriteFile(cfgPath, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg, err := LoadConfig(cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "out")
	f, err := Run(context.Background(), cfg, out, RunOptions{Sandbox: testPool(t)})
	if err != nil {
		t.Fatal(err)
	}
	checkFunnel(t, f)
	return out, f
}

func mustAbs(t *testing.T, p string) string {
	a, err := filepath.Abs(p)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// Every stage's line adds up: what came in was kept or dropped for a named reason.
func checkFunnel(t *testing.T, f *Funnel) {
	t.Helper()
	for _, s := range f.Stages {
		if s.In != s.Kept+s.DroppedTotal() {
			t.Errorf("funnel %s: in %d != kept %d + dropped %d (%v)", s.Stage, s.In, s.Kept, s.DroppedTotal(), s.Dropped)
		}
	}
}

func writeRows[T any](t *testing.T, path string, rows []T) string {
	t.Helper()
	if err := WriteJSONL(path, rows); err != nil {
		t.Fatal(err)
	}
	return path
}
