package dashboard

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/autoif/autoif/natsbus"
	"github.com/autoif/autoif/orchestrator"
	"github.com/autoif/autoif/proto"
)

func row(c string, step int64, name string, v float64, label string) orchestrator.MetricRow {
	return orchestrator.MetricRow{Time: time.Unix(1_800_000_000+step, 0), Component: c, Step: step, Name: name, Value: v, Label: label, PolicyVersion: step}
}

// sseEvent reads the next event of a Server-Sent Events stream.
func sseEvent(t *testing.T, r *bufio.Reader) (string, message) {
	t.Helper()
	var name, data string
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			t.Fatalf("event stream: %v", err)
		}
		line = strings.TrimRight(line, "\n")
		switch {
		case line == "" && data != "":
			var m message
			if err := json.Unmarshal([]byte(data), &m); err != nil {
				t.Fatalf("event %s data %q: %v", name, data, err)
			}
			return name, m
		case strings.HasPrefix(line, "event: "):
			name = strings.TrimPrefix(line, "event: ")
		case strings.HasPrefix(line, "data: "):
			data = strings.TrimPrefix(line, "data: ")
		}
	}
}

// A page following /events gets a snapshot of the recorded runs, finished ones loaded from
// their files included, then each new charted point and sample as a live run records it;
// series nobody charts are not sent.
func TestEventsStreamASnapshotThenWhatTheRunRecords(t *testing.T) {
	finished := filepath.Join(t.TempDir(), "baseline")
	if err := os.Mkdir(finished, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := orchestrator.WriteMetrics(filepath.Join(finished, orchestrator.MetricsFile), []orchestrator.MetricRow{
		row(orchestrator.Component, 1, "reward/mean", 0.25, ""), row("trainer", 1, "loss", 0.69, ""),
	}); err != nil {
		t.Fatal(err)
	}
	if err := orchestrator.WriteSamples(filepath.Join(finished, orchestrator.SamplesFile), []orchestrator.SampleRow{
		{Step: 1, PolicyVersion: 0, PromptID: "p1", Prompt: "Write a haiku.", Responses: []string{"a", "b"}, Scores: []float64{1, 0}, Chosen: []string{"a"}, Rejected: []string{"b"}},
	}); err != nil {
		t.Fatal(err)
	}
	hub := NewHub()
	if err := hub.LoadRunDir(context.Background(), finished); err != nil {
		t.Fatal(err)
	}
	if err := hub.LoadRunDir(context.Background(), finished); err == nil {
		t.Error("a second run named baseline was accepted: the page could not tell them apart")
	}
	live := hub.Observer("live")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	srv, err := Start(ctx, "127.0.0.1:0", hub)
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()

	page, err := http.Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(page.Body)
	page.Body.Close()
	for _, asset := range []string{"uPlot.iife.min.js", "app.js", "uPlot.min.css"} {
		if !strings.Contains(string(body), asset) {
			t.Errorf("the page does not load %s", asset)
		}
		resp, err := http.Get(srv.URL + asset)
		if err != nil || resp.StatusCode != http.StatusOK {
			t.Errorf("GET %s: %v %v", asset, err, resp.Status)
		} else {
			resp.Body.Close()
		}
	}

	resp, err := http.Get(srv.URL + "events")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); ct != "text/event-stream" {
		t.Fatalf("Content-Type %q", ct)
	}
	r := bufio.NewReader(resp.Body)
	name, snap := sseEvent(t, r)
	if name != "snapshot" || len(snap.Runs) != 2 || len(snap.Points) != 2 || len(snap.Samples) != 1 || snap.Samples[0].Prompt != "Write a haiku." {
		t.Fatalf("first event %s %+v: want a snapshot of baseline's 2 points and its sample, and the live run", name, snap)
	}
	live.ObserveMetrics([]orchestrator.MetricRow{
		row(orchestrator.Component, 1, "reward/mean", 0.5, ""),
		row(orchestrator.Component, 1, "evals/pass", 7, "instr"),  // counted for Prometheus, not charted
		row("rollout", 3, "reward/mean", 0.4, "constraint:instr"), // per constraint: not charted
		row("trainer", 1, "rewards/margins", 0.01, ""),
	})
	name, upd := sseEvent(t, r)
	if name != "update" || len(upd.Points) != 2 || upd.Points[0].Run != "live" || upd.Points[0].Value != 0.5 || upd.Points[1].Name != "rewards/margins" {
		t.Fatalf("update %s %+v: want the live run's reward/mean and rewards/margins only", name, upd)
	}
	live.ObserveSamples([]orchestrator.SampleRow{{Step: 1, PromptID: "p9", Responses: []string{"x"}, Scores: []float64{0.5},
		Verdicts: []orchestrator.Verdict{{Passed: 1, Errors: 1, ErrorKinds: []string{"exception:ValueError"}}}}})
	_, upd = sseEvent(t, r)
	if len(upd.Samples) != 1 || upd.Samples[0].PromptID != "p9" || upd.Samples[0].Verdicts[0].ErrorKinds[0] != "exception:ValueError" {
		t.Fatalf("update %+v: want the live sample with its verdicts", upd)
	}

	m, err := http.Get(srv.URL + "metrics")
	if err != nil {
		t.Fatal(err)
	}
	mb, _ := io.ReadAll(m.Body)
	m.Body.Close()
	for _, want := range []string{`autoif_run_reward_mean{run="live"} 0.5`, `autoif_run_reward_mean{run="baseline"} 0.25`,
		`autoif_run_dpo{metric="rewards/margins",run="live"} 0.01`} {
		if !strings.Contains(string(mb), want) {
			t.Errorf("/metrics has no %s:\n%s", want, mb)
		}
	}
	// Per-instruction eval counts are not the run's totals: only the unlabelled ones count.
	if strings.Contains(string(mb), `outcome="pass",run="live"} 7`) {
		t.Errorf("/metrics counted a per-instruction eval row:\n%s", mb)
	}
}

// A page too slow to take what the run records is dropped, not waited for: the run's
// loop must never block on a browser.
func TestASlowFollowerIsDroppedNotWaitedFor(t *testing.T) {
	hub := NewHub()
	_, ch, err := hub.subscribe()
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		for i := 0; i < cap(ch)+10; i++ {
			hub.AddMetrics("r", []orchestrator.MetricRow{row(orchestrator.Component, int64(i), "reward/mean", 1, "")})
		}
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("recording blocked on a follower that reads nothing")
	}
	n := 0
	for range ch {
		n++
	}
	if n != cap(ch) {
		t.Fatalf("the dropped follower got %d messages before its channel closed, want the %d it had room for", n, cap(ch))
	}
}

// A dashboard on another machine follows a run through its metrics stream: batches stored
// before it started and after both reach the page, their policy version from the header.
func TestFollowReadsARunsMetricsStream(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	bus, err := natsbus.Connect(ctx, natsbus.Options{StoreDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer bus.Close()
	run, err := proto.NewRun("watched")
	if err != nil {
		t.Fatal(err)
	}
	res, err := natsbus.EnsureRun(ctx, bus.JS, run, natsbus.RunOptions{Memory: true})
	if err != nil {
		t.Fatal(err)
	}
	publish := func(step int64, v float64) {
		msg, err := proto.MetricEvents.Msg(run.Metrics(), fmt.Sprint("m", step), []proto.MetricEvent{
			{Time: time.Now(), Component: orchestrator.Component, Step: step, Name: "reward/mean", Value: v}})
		if err != nil {
			t.Fatal(err)
		}
		msg.Header.Set(proto.HeaderPolicyVersion, fmt.Sprint(step))
		if _, err := bus.JS.PublishMsg(ctx, msg); err != nil {
			t.Fatal(err)
		}
	}
	publish(1, 0.25)
	hub := NewHub()
	_, ch, _ := hub.subscribe()
	fctx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- hub.Follow(fctx, res.Metrics, "watched") }()
	publish(2, 0.5)
	var got []Point
	for len(got) < 2 {
		select {
		case data := <-ch:
			var m message
			if err := json.Unmarshal(data, &m); err != nil {
				t.Fatal(err)
			}
			got = append(got, m.Points...)
		case <-ctx.Done():
			t.Fatalf("followed points %+v: want both steps", got)
		}
	}
	if got[0].Step != 1 || got[0].Value != 0.25 || got[1].Step != 2 || got[1].Version != 2 || got[1].Run != "watched" {
		t.Fatalf("followed points %+v", got)
	}
	stop()
	if err := <-done; err != nil {
		t.Fatalf("Follow after its context ended: %v", err)
	}
}
