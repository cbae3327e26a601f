package reward

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/autoif/autoif/natsbus"
	"github.com/autoif/autoif/proto"
)

// Servers that get killed run in child processes (this test binary, re-executed), so they
// die the way a reward server does: SIGKILL, sockets torn down by the kernel, nothing flushed.
func TestMain(m *testing.M) {
	if url := os.Getenv("AUTOIF_TEST_REWARD_SERVER_URL"); url != "" {
		if err := runChildServer(url); err != nil {
			fmt.Fprintln(os.Stderr, "child reward server:", err)
			os.Exit(2)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// runChildServer is `autoif reward serve` in miniature: a pool, a server, SIGTERM to stop.
func runChildServer(url string) error {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM)
	defer stop()
	bus, err := natsbus.Connect(ctx, natsbus.Options{URL: url, Name: "child reward server"})
	if err != nil {
		return err
	}
	defer bus.Close()
	pool, err := NewPool(ctx, Options{Workers: 2, Deadline: time.Second})
	if err != nil {
		return err
	}
	defer pool.Close()
	srv, err := NewServer(bus.NC, pool, ServerOptions{Heartbeat: 200 * time.Millisecond})
	if err != nil {
		return err
	}
	fmt.Printf("READY %s\n", srv.ID())
	return srv.Serve(ctx)
}

// testBus starts an embedded NATS server and returns connections of its own to it.
func testBus(t *testing.T) (url string, connect func(name string) *nats.Conn) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	bus, err := natsbus.Connect(ctx, natsbus.Options{StoreDir: filepath.Join(t.TempDir(), "js")})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(bus.Close)
	url = bus.URL()
	return url, func(name string) *nats.Conn {
		nc, err := nats.Connect(url, nats.Name(name))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(nc.Close)
		return nc
	}
}

// startServer serves pool on nc until the test ends.
func startServer(t *testing.T, nc *nats.Conn, pool *Pool, opts ServerOptions) *Server {
	t.Helper()
	srv, err := NewServer(nc, pool, opts)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("serve: %v", err)
		}
	})
	return srv
}

func newTestClient(t *testing.T, nc *nats.Conn, opts ClientOptions) *Client {
	t.Helper()
	c, err := NewClient(nc, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func TestClientScoresLikeThePool(t *testing.T) {
	_, connect := testBus(t)
	pool := newTestPool(t, Options{Workers: 2, Deadline: 300 * time.Millisecond})
	srv := startServer(t, connect("server"), pool, ServerOptions{})
	client := newTestClient(t, connect("client"), ClientOptions{Deadline: 300 * time.Millisecond})

	funcs := []string{
		"def evaluate(response):\n    return response.islower()\n",
		"def evaluate(response):\n    return len(response.split()) == 3\n",
		"def evaluate(response):\n    raise ValueError('no verdict for ' + response[:3])\n",
		"def evaluate(response):\n    return 'yes'\n",
		"import time\ndef evaluate(response):\n    if 'hang' in response:\n        time.sleep(10)\n    return True\n",
		"import socket\ndef evaluate(response):\n    return True\n",
		"def evaluate(response:\n",
	}
	responses := []string{"three small words", "Not Lower", "", "héllo 世界 wörld", "please hang here", strings.Repeat("x", 100_000)}
	cases := []struct {
		name             string
		funcs, responses []string
	}{
		{"every outcome and kind", funcs, responses},
		{"no functions", nil, responses},
		{"no responses", funcs[:2], []string{}},
		{"one function, one response", funcs[:1], responses[:1]},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			want, err := pool.Score(ctx, tc.funcs, tc.responses)
			if err != nil {
				t.Fatal(err)
			}
			rep, err := client.Do(ctx, tc.funcs, tc.responses)
			if err != nil {
				t.Fatal(err)
			}
			if rep.Server != srv.ID() || rep.Attempts != 1 {
				t.Errorf("answered by %q in %d attempts, want %q in 1", rep.Server, rep.Attempts, srv.ID())
			}
			if !reflect.DeepEqual(normaliseResult(rep.Result), normaliseResult(want)) {
				got, _ := json.Marshal(rep.Result)
				exp, _ := json.Marshal(want)
				t.Fatalf("service result differs from the pool's:\n got %s\nwant %s", got, exp)
			}
		})
	}
	if st := client.Stats(); st.Replies != int64(len(cases)) || st.Retries != 0 || st.Failed != 0 {
		t.Errorf("client stats %+v: want %d replies, no retries, no failures", st, len(cases))
	}
	if st := srv.Stats(); st.Scored != int64(len(cases)) || st.Pool.Evals == 0 || st.Pool.Timeouts == 0 {
		t.Errorf("server stats %+v: want %d scored, evaluations and timeouts counted", st, len(cases))
	}
}

// normaliseResult makes empty and nil rows compare equal.
func normaliseResult(r *Result) *Result {
	out := &Result{Scores: r.Scores, Evals: r.Evals}
	if len(out.Scores) == 0 {
		out.Scores = nil
	}
	if len(out.Evals) == 0 {
		out.Evals = nil
	}
	for i, row := range out.Evals {
		if len(row) == 0 {
			out.Evals[i] = nil
		}
	}
	return out
}

func TestMalformedRequestsGetErrorRepliesAndTheServerKeepsServing(t *testing.T) {
	_, connect := testBus(t)
	pool := newTestPool(t, Options{Workers: 1})
	srv := startServer(t, connect("server"), pool, ServerOptions{MaxEvaluations: 100})
	nc := connect("raw client")

	good := func(rows ...proto.ScoreRequest) *nats.Msg {
		m, err := proto.ScoreRequests.Msg(proto.RewardService, "", rows)
		if err != nil {
			t.Fatal(err)
		}
		return m
	}
	fn := "def evaluate(response):\n    return True\n"
	pairMsg, err := proto.Pairs.Msg(proto.RewardService, "", []proto.Pair{{PairID: "p"}})
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name   string
		msg    func() *nats.Msg
		want   string // in the error description
		echoID string // request id the error reply's payload names, if any
	}{
		{"no headers, not arrow", func() *nats.Msg {
			return &nats.Msg{Subject: proto.RewardService, Data: []byte(`{"functions":["x"]}`)}
		}, "no Autoif-Schema header", ""},
		{"wrong schema header", func() *nats.Msg {
			m := good(proto.ScoreRequest{RequestID: "r", Functions: []string{fn}, Responses: []string{"x"}})
			m.Header.Set(proto.HeaderSchema, "pairs/v1")
			return m
		}, `schema "pairs/v1"`, ""},
		{"another schema's payload", func() *nats.Msg {
			m := nats.NewMsg(proto.RewardService)
			m.Data = pairMsg.Data
			m.Header = pairMsg.Header
			m.Header.Set(proto.HeaderSchema, proto.ScoreRequests.Name())
			return m
		}, `payload schema is "pairs/v1"`, ""},
		{"corrupt payload", func() *nats.Msg {
			m := good(proto.ScoreRequest{RequestID: "r", Functions: []string{fn}, Responses: []string{"x"}})
			m.Data = bytes.Clone(m.Data)
			m.Data[len(m.Data)/2] ^= 0xff
			return m
		}, "checksum", ""},
		{"two requests in one message", func() *nats.Msg {
			return good(proto.ScoreRequest{RequestID: "a"}, proto.ScoreRequest{RequestID: "b"})
		}, "exactly one row", ""},
		{"no request id", func() *nats.Msg { return good(proto.ScoreRequest{Functions: []string{fn}}) }, "no request id", ""},
		{"too many evaluations", func() *nats.Msg {
			return good(proto.ScoreRequest{RequestID: "big", Functions: []string{fn, fn}, Responses: make([]string, 51)})
		}, "more than this server's 100 evaluations", "big"},
		{"negative timeout", func() *nats.Msg {
			return good(proto.ScoreRequest{RequestID: "neg", Functions: []string{fn}, Responses: []string{"x"}, Timeout: -time.Second})
		}, "negative timeout", "neg"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			rep, err := nc.RequestMsg(tc.msg(), 10*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			if code := rep.Header.Get(proto.HeaderServiceErrorCode); code != proto.RewardCodeBadRequest {
				t.Fatalf("error code %q, want %s (headers %v)", code, proto.RewardCodeBadRequest, rep.Header)
			}
			if desc := rep.Header.Get(proto.HeaderServiceError); !strings.Contains(desc, tc.want) {
				t.Fatalf("error %q, want one containing %q", desc, tc.want)
			}
			if tc.echoID == "" {
				return
			}
			rows, err := proto.ScoreReplies.DecodeMsg(rep.Header, rep.Data)
			if err != nil {
				t.Fatalf("error reply payload: %v", err)
			}
			if len(rows) != 1 || rows[0].RequestID != tc.echoID || !strings.Contains(rows[0].Error, tc.want) {
				t.Fatalf("error reply rows %+v, want request %q with error containing %q", rows, tc.echoID, tc.want)
			}
		})
	}

	// Still serving, and a bad request fails fast at the client: no retry can fix it.
	client := newTestClient(t, connect("client"), ClientOptions{})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	res, err := client.Score(ctx, []string{fn}, []string{"x", "y"})
	if err != nil || res.Scores[0].Score != 1 || res.Scores[1].Score != 1 {
		t.Fatalf("after bad requests: %+v, %v", res, err)
	}
	_, err = client.Score(ctx, []string{fn}, make([]string, 101))
	var se *ServiceError
	if !errors.As(err, &se) || se.Code != proto.RewardCodeBadRequest {
		t.Fatalf("oversized request: got %v, want a %s service error", err, proto.RewardCodeBadRequest)
	}
	if st := client.Stats(); st.Attempts != 2 {
		t.Errorf("client made %d attempts, want 2 (a bad request is not retried)", st.Attempts)
	}
	if st := srv.Stats(); st.BadRequests != int64(len(cases))+1 || st.Scored != 1 {
		t.Errorf("server stats %+v: want %d bad requests and 1 scored", st, len(cases)+1)
	}
}

func TestNobodyServingIsAClearErrorAfterRetries(t *testing.T) {
	_, connect := testBus(t)
	client := newTestClient(t, connect("client"), ClientOptions{Attempts: 3, Backoff: 10 * time.Millisecond})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_, err := client.Score(ctx, []string{"def evaluate(response):\n    return True\n"}, []string{"x"})
	if !errors.Is(err, ErrNoServer) || !strings.Contains(err.Error(), "3 attempts") {
		t.Fatalf("got %v, want ErrNoServer after 3 attempts", err)
	}
	if st := client.Stats(); st.NoResponders != 3 || st.Retries != 2 || st.Failed != 1 {
		t.Errorf("client stats %+v: want 3 no-responders, 2 retries, 1 failure", st)
	}
	if reports, err := CollectStats(ctx, connect("stats"), 200*time.Millisecond); err != nil || len(reports) != 0 {
		t.Errorf("stats with nobody serving: %+v, %v; want none and no error", reports, err)
	}
}

func TestStatsEndpointReportsEachServer(t *testing.T) {
	_, connect := testBus(t)
	pool := newTestPool(t, Options{Workers: 1})
	a := startServer(t, connect("server a"), pool, ServerOptions{})
	b := startServer(t, connect("server b"), pool, ServerOptions{})
	client := newTestClient(t, connect("client"), ClientOptions{})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for range 4 {
		if _, err := client.Score(ctx, []string{"def evaluate(response):\n    return True\n"}, []string{"x", "y", "z"}); err != nil {
			t.Fatal(err)
		}
	}
	stats, err := CollectStats(ctx, connect("stats"), 500*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	ids := map[string]ServerStats{}
	for _, s := range stats {
		ids[s.ID] = s.Stats
	}
	if len(ids) != 2 || !hasKey(ids, a.ID()) || !hasKey(ids, b.ID()) {
		t.Fatalf("stats from %v, want servers %s and %s", keys(ids), a.ID(), b.ID())
	}
	// Both servers share one pool here, so its evaluations show on both.
	if st := ids[a.ID()]; st.Scored+ids[b.ID()].Scored != 4 || st.Pool.Evals != 12 || st.Workers != 1 {
		t.Errorf("stats %+v and %+v: want 4 requests scored between them, 12 evaluations", st, ids[b.ID()])
	}
}

func hasKey[V any](m map[string]V, k string) bool { _, ok := m[k]; return ok }

func keys[V any](m map[string]V) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}

// childServer is a reward server in its own process.
type childServer struct {
	id     string
	cmd    *exec.Cmd
	stderr *bytes.Buffer
	exited chan error
}

func startChildServer(t *testing.T, url string) *childServer {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), "AUTOIF_TEST_REWARD_SERVER_URL="+url)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cs := &childServer{cmd: cmd, stderr: &bytes.Buffer{}, exited: make(chan error, 1)}
	cmd.Stderr = cs.stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	ready := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			if id, ok := strings.CutPrefix(sc.Text(), "READY "); ok {
				ready <- id
			}
		}
	}()
	go func() { cs.exited <- cmd.Wait() }()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-cs.exited
		if t.Failed() {
			t.Logf("child server %s stderr:\n%s", cs.id, cs.stderr)
		}
	})
	select {
	case cs.id = <-ready:
	case err := <-cs.exited:
		cs.exited <- err
		t.Fatalf("child server exited before it was ready: %v\n%s", err, cs.stderr)
	case <-time.After(60 * time.Second):
		t.Fatalf("child server not ready after 60s\n%s", cs.stderr)
	}
	return cs
}

// loadFuncs are the load test's verification functions; expectLoad computes their verdicts.
var loadFuncs = []string{
	"def evaluate(response):\n    return len(response) > 12\n",
	"def evaluate(response):\n    return 'a' in response\n",
	// Slow enough that a few hundred requests keep both servers busy for a while.
	"import time\ndef evaluate(response):\n    time.sleep(0.003)\n    return response.islower()\n",
}

func loadResponses(i int) []string {
	return []string{
		fmt.Sprintf("request %d", i),
		fmt.Sprintf("REQUEST %d SHOUTED", i),
		fmt.Sprintf("banana bread no. %d", i),
		strconv.Itoa(i),
	}
}

func expectLoad(responses []string) []ResponseScore {
	out := make([]ResponseScore, len(responses))
	for r, s := range responses {
		verdicts := []bool{
			len(s) > 12,
			strings.Contains(s, "a"),
			strings.ToLower(s) == s && strings.ContainsFunc(s, func(c rune) bool { return c >= 'a' && c <= 'z' }),
		}
		for _, v := range verdicts {
			out[r].Ran++
			if v {
				out[r].Passed++
			}
		}
		out[r].Score = float64(out[r].Passed) / float64(out[r].Ran)
	}
	return out
}

func TestAServerDyingMidLoadLosesNoRequest(t *testing.T) {
	cases := []struct {
		name   string
		sig    syscall.Signal
		silent bool // the dead server's requests are found by its silence
	}{
		{"killed", syscall.SIGKILL, true},
		{"terminated gracefully", syscall.SIGTERM, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			url, connect := testBus(t)
			victim := startChildServer(t, url)
			survivor := startChildServer(t, url)
			client := newTestClient(t, connect("client"), ClientOptions{
				Silence: time.Second, Attempts: 10, Backoff: 20 * time.Millisecond, MaxBackoff: 200 * time.Millisecond,
			})

			const n = 300
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			var (
				mu       sync.Mutex
				answered = map[string]int{} // request id → replies
				byServer = map[string]int{}
				failures []string
				wg       sync.WaitGroup
			)
			killAt := make(chan struct{})
			var once sync.Once
			for i := range n {
				wg.Add(1)
				go func() {
					defer wg.Done()
					responses := loadResponses(i)
					rep, err := client.Do(ctx, loadFuncs, responses)
					mu.Lock()
					defer mu.Unlock()
					if err != nil {
						failures = append(failures, fmt.Sprintf("request %d: %v", i, err))
						return
					}
					answered[rep.RequestID]++
					byServer[rep.Server]++
					if want := expectLoad(responses); !reflect.DeepEqual(rep.Result.Scores, want) {
						failures = append(failures, fmt.Sprintf("request %d: scores %+v, want %+v", i, rep.Result.Scores, want))
					}
					if byServer[victim.id] >= 10 && len(answered) >= n/5 {
						once.Do(func() { close(killAt) })
					}
				}()
			}
			select {
			case <-killAt:
			case <-ctx.Done():
				t.Fatal("load never reached the point to kill a server")
			}
			mu.Lock()
			before := len(answered)
			mu.Unlock()
			if err := victim.cmd.Process.Signal(tc.sig); err != nil {
				t.Fatal(err)
			}
			wg.Wait()

			exitErr := <-victim.exited
			victim.exited <- exitErr
			st := client.Stats()
			t.Logf("%d requests: %d answered before the %v, %d by the victim, %d by the survivor; client stats %+v",
				n, before, tc.sig, byServer[victim.id], byServer[survivor.id], st)
			if len(failures) > 0 {
				t.Fatalf("%d requests failed, first: %s", len(failures), failures[0])
			}
			if len(answered) != n {
				t.Fatalf("%d distinct request ids answered, want %d", len(answered), n)
			}
			for id, k := range answered {
				if k != 1 {
					t.Fatalf("request %s answered %d times", id, k)
				}
			}
			if byServer[victim.id]+byServer[survivor.id] != n {
				t.Fatalf("replies by server %v: want all %d from the two servers", byServer, n)
			}
			if tc.silent {
				if st.Silent == 0 || st.Retries < st.Silent {
					t.Fatalf("client stats %+v: want the dead server's requests found silent and retried", st)
				}
				return
			}
			if exitErr != nil {
				t.Fatalf("SIGTERM: server exited with %v, want a clean exit", exitErr)
			}
			if st.Silent != 0 {
				t.Fatalf("client stats %+v: a gracefully stopping server left requests unanswered", st)
			}
		})
	}
}

// A server that is shut down answers what it started and refuses what it had only queued.
func TestShutdownFinishesRequestsInFlight(t *testing.T) {
	_, connect := testBus(t)
	pool := newTestPool(t, Options{Workers: 1})
	srv, err := NewServer(connect("server"), pool, ServerOptions{MaxConcurrent: 1})
	if err != nil {
		t.Fatal(err)
	}
	ctx, stop := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ctx) }()
	client := newTestClient(t, connect("client"), ClientOptions{Attempts: 1})

	slow := "import time\ndef evaluate(response):\n    time.sleep(0.5)\n    return True\n"
	rctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	type outcome struct {
		res *Result
		err error
	}
	first := make(chan outcome, 1)
	go func() {
		res, err := client.Score(rctx, []string{slow}, []string{"x"})
		first <- outcome{res, err}
	}()
	for srv.Stats().InFlight == 0 {
		time.Sleep(5 * time.Millisecond)
	}
	second := make(chan outcome, 1)
	go func() {
		res, err := client.Score(rctx, []string{slow}, []string{"y"})
		second <- outcome{res, err}
	}()
	for srv.Stats().Queued == 0 {
		time.Sleep(5 * time.Millisecond)
	}
	stop()
	if err := <-served; err != nil {
		t.Fatalf("serve: %v", err)
	}
	if o := <-first; o.err != nil || o.res.Scores[0].Score != 1 {
		t.Errorf("request in flight at shutdown: %+v, %v; want it scored", o.res, o.err)
	}
	var se *ServiceError
	if o := <-second; !errors.As(o.err, &se) || se.Code != proto.RewardCodeUnavailable || !errors.Is(o.err, ErrNoServer) {
		t.Errorf("request queued at shutdown: %v; want it refused as unavailable", o.err)
	}
	// The stopped server no longer takes requests.
	if _, err := client.Score(rctx, []string{slow}, []string{"z"}); !errors.Is(err, nats.ErrNoResponders) {
		t.Errorf("after shutdown: %v, want no responders", err)
	}
}

func TestHeartbeatsKeepASlowRequestFromBeingRetried(t *testing.T) {
	_, connect := testBus(t)
	pool := newTestPool(t, Options{Workers: 1, Deadline: 5 * time.Second})
	startServer(t, connect("server"), pool, ServerOptions{Heartbeat: 100 * time.Millisecond})
	client := newTestClient(t, connect("client"), ClientOptions{Silence: 400 * time.Millisecond, Deadline: 5 * time.Second})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	slow := "import time\ndef evaluate(response):\n    time.sleep(1.2)\n    return True\n"
	rep, err := client.Do(ctx, []string{slow}, []string{"x"})
	if err != nil {
		t.Fatal(err)
	}
	if st := client.Stats(); rep.Attempts != 1 || st.Silent != 0 || st.Retries != 0 {
		t.Fatalf("a 1.2s request with 0.4s silence allowed took %d attempts (stats %+v), want 1", rep.Attempts, st)
	}
}

func TestAFullQueueRefusesAndTheClientRetries(t *testing.T) {
	_, connect := testBus(t)
	pool := newTestPool(t, Options{Workers: 1})
	srv := startServer(t, connect("server"), pool, ServerOptions{MaxConcurrent: 1, MaxQueued: 1})
	client := newTestClient(t, connect("client"), ClientOptions{Attempts: 50, Backoff: 50 * time.Millisecond, MaxBackoff: 200 * time.Millisecond})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	slow := "import time\ndef evaluate(response):\n    time.sleep(0.2)\n    return response == 'yes'\n"
	const n = 5
	errs := make(chan error, n)
	for i := range n {
		go func() {
			res, err := client.Score(ctx, []string{slow}, []string{"yes", fmt.Sprint(i)})
			if err == nil && (res.Scores[0].Score != 1 || res.Scores[1].Score != 0) {
				err = fmt.Errorf("request %d: scores %+v", i, res.Scores)
			}
			errs <- err
		}()
	}
	for range n {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	cs, ss := client.Stats(), srv.Stats()
	if cs.Refused == 0 || ss.Rejected != cs.Refused || ss.Scored != n || cs.Attempts != n+cs.Retries {
		t.Fatalf("client %+v, server %+v: want refusals retried until all %d were scored", cs, ss, n)
	}
}

func TestTheCallersDeadlineBoundsTheServersWork(t *testing.T) {
	_, connect := testBus(t)
	pool := newTestPool(t, Options{Workers: 1, Deadline: 20 * time.Second})
	srv := startServer(t, connect("server"), pool, ServerOptions{})
	client := newTestClient(t, connect("client"), ClientOptions{Deadline: 20 * time.Second})
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := client.Score(ctx, []string{"import time\ndef evaluate(response):\n    time.sleep(15)\n    return True\n"}, []string{"x"})
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("got %v, want the caller's deadline", err)
	}
	// The server was told the caller's deadline and gives up then, not 15s later.
	for srv.Stats().Failed == 0 {
		if time.Since(start) > 5*time.Second {
			t.Fatalf("server still scoring %v after the caller gave up: %+v", time.Since(start), srv.Stats())
		}
		time.Sleep(20 * time.Millisecond)
	}
	if st := srv.Stats(); st.InFlight != 0 || st.Scored != 0 {
		t.Fatalf("server stats %+v: want the request failed and nothing in flight", st)
	}
}

// A server whose NATS connection drops and comes back says so in its stats, and serves on.
func TestStatsCountTheServersReconnects(t *testing.T) {
	_, connect := testBus(t)
	pool := newTestPool(t, Options{Workers: 1})
	nc := connect("server")
	srv := startServer(t, nc, pool, ServerOptions{})
	client := newTestClient(t, connect("client"), ClientOptions{})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if got := srv.Stats().Reconnects; got != 0 {
		t.Fatalf("reconnects before any: %d", got)
	}
	if err := nc.ForceReconnect(); err != nil {
		t.Fatal(err)
	}
	for nc.Stats().Reconnects == 0 || !nc.IsConnected() {
		if ctx.Err() != nil {
			t.Fatal("the server's connection did not come back")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if _, err := client.Score(ctx, []string{"def evaluate(response):\n    return True\n"}, []string{"x"}); err != nil {
		t.Fatalf("score after the server reconnected: %v", err)
	}
	stats, err := CollectStats(ctx, connect("stats"), 500*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	if len(stats) != 1 || stats[0].Stats.Reconnects != 1 {
		t.Fatalf("stats %+v, want one server with 1 reconnect", stats)
	}
}
