package experiment

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/autoif/autoif/dashboard"
	"github.com/autoif/autoif/orchestrator"
)

// DashboardBench is what the dashboard costs a run: the same async loop without and with
// it, each variant's fastest round.
type DashboardBench struct {
	Without, With LoopBenchMode
	// Overhead is With's wall time over Without's, minus one (0.02: 2 % slower).
	Overhead float64
	// Events and Scrapes are what the simulated watcher got in its fastest round: SSE updates
	// and /metrics scrapes.
	Events, Scrapes int64
}

// BenchDashboard runs async mode o.Rounds times without and with the dashboard, alternating
// which goes first so that drifting background load weighs on both. With it, the run
// feeds a hub served on a local port, a page follows /events for the whole run, and
// Prometheus is played by a scrape of /metrics every second (its default is 15 s).
func BenchDashboard(ctx context.Context, o LoopBenchOptions) (DashboardBench, error) {
	var res DashboardBench
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	for r := range max(o.Rounds, 1) {
		for i := range 2 {
			on := (r+i)%2 == 1
			m, events, scrapes, err := benchWatched(ctx, o, on)
			if err != nil {
				return res, err
			}
			o.Logger.Info("bench loop dashboard round", "round", r+1, "dashboard", on, "wall_s", m.WallS, "events", events, "scrapes", scrapes)
			best := &res.Without
			if on {
				best = &res.With
			}
			if best.WallS == 0 || m.WallS < best.WallS {
				*best = m
				if on {
					res.Events, res.Scrapes = events, scrapes
				}
			}
		}
	}
	res.Overhead = res.With.WallS/res.Without.WallS - 1
	return res, nil
}

func benchWatched(ctx context.Context, o LoopBenchOptions, on bool) (LoopBenchMode, int64, int64, error) {
	if !on {
		m, err := benchLoopMode(ctx, o, orchestrator.ModeAsync)
		return m, 0, 0, err
	}
	hub := dashboard.NewHub()
	o.Observer = hub.Observer("bench")
	wctx, stop := context.WithCancel(ctx)
	defer stop()
	srv, err := dashboard.Start(wctx, "127.0.0.1:0", hub)
	if err != nil {
		return LoopBenchMode{}, 0, 0, fmt.Errorf("bench loop: %w", err)
	}
	defer srv.Close()
	var events, scrapes atomic.Int64
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		req, _ := http.NewRequestWithContext(wctx, http.MethodGet, srv.URL+"events", nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return
		}
		defer resp.Body.Close()
		sc := bufio.NewScanner(resp.Body)
		sc.Buffer(nil, 64<<20)
		for sc.Scan() {
			if strings.HasPrefix(sc.Text(), "event: update") {
				events.Add(1)
			}
		}
	}()
	go func() {
		defer wg.Done()
		tick := time.NewTicker(time.Second)
		defer tick.Stop()
		for {
			select {
			case <-wctx.Done():
				return
			case <-tick.C:
			}
			req, _ := http.NewRequestWithContext(wctx, http.MethodGet, srv.URL+"metrics", nil)
			if resp, err := http.DefaultClient.Do(req); err == nil {
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				scrapes.Add(1)
			}
		}
	}()
	m, err := benchLoopMode(ctx, o, orchestrator.ModeAsync)
	stop()
	srv.Close()
	wg.Wait()
	return m, events.Load(), scrapes.Load(), err
}
