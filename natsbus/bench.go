package natsbus

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/autoif/autoif/proto"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// TransportBenchOptions configure BenchTransport.
type TransportBenchOptions struct {
	Pairs     int // pairs to stream (default 1,000,000)
	BatchSize int // pairs per Arrow batch (default 1,024)
	// BaselinePairs is how many pairs the JSON baseline streams (default Pairs).
	BaselinePairs int
	// Tokens per response (default 256) and text bytes per pair (default 1,024).
	Tokens, TextBytes int
	// Window bounds the batches published but not yet consumed (default 16).
	Window int
	// Memory keeps the bench streams in JetStream's memory store instead of its file store:
	// the transport alone, without the disk. Both phases use the same store.
	Memory bool
	// Replicas of the bench streams (default 1; more needs a cluster that large).
	Replicas int
	// NoBaseline skips the JSON baseline (for a second row on the same cluster).
	NoBaseline bool
	// Progress, if set, is called about once a second.
	Progress func(phase string, done, total int)
}

// TransportBenchResult is what BenchTransport measured.
type TransportBenchResult struct {
	Pairs              int     `json:"pairs"`
	BatchSize          int     `json:"batch_size"`
	Storage            string  `json:"storage"`
	Replicas           int     `json:"replicas"`
	BytesPerPair       float64 `json:"bytes_per_pair"`
	WallS              float64 `json:"wall_s"`
	PairsPerS          float64 `json:"pairs_per_s"`
	MBPerS             float64 `json:"mb_per_s"`
	P50BatchMs         float64 `json:"p50_batch_ms"`
	P99BatchMs         float64 `json:"p99_batch_ms"`
	BaselinePairs      int     `json:"baseline_pairs"`
	BaselineBytesPair  float64 `json:"baseline_bytes_per_pair"`
	BaselineWallS      float64 `json:"baseline_wall_s"`
	BaselinePairsPerS  float64 `json:"baseline_pairs_per_s"`
	BaselineMBPerS     float64 `json:"baseline_mb_per_s"`
	SpeedupVsBaseline  float64 `json:"speedup_vs_baseline"`
	DuplicatesReceived int64   `json:"duplicates_received"`
	// Replicated holds the rows of the same bench with replicated streams, when asked.
	Replicated []*TransportBenchResult `json:"replicated,omitempty"`
}

// BenchTransport streams preference pairs through JetStream from a publisher to a durable
// consumer as Arrow batches and, in the same run, as one JSON message per pair.
func BenchTransport(ctx context.Context, bus *Bus, o TransportBenchOptions) (*TransportBenchResult, error) {
	if o.Pairs <= 0 {
		o.Pairs = 1_000_000
	}
	if o.BatchSize <= 0 {
		o.BatchSize = 1024
	}
	if o.Window <= 0 {
		o.Window = 16
	}
	if o.BaselinePairs <= 0 {
		o.BaselinePairs = o.Pairs
	}
	if o.Tokens <= 0 {
		o.Tokens = 256
	}
	if o.TextBytes <= 0 {
		o.TextBytes = 1024
	}
	if o.Progress == nil {
		o.Progress = func(string, int, int) {}
	}
	run, err := proto.NewRun(fmt.Sprintf("bench%d", time.Now().UnixNano()%1_000_000_000))
	if err != nil {
		return nil, err
	}
	if o.Replicas <= 0 {
		o.Replicas = 1
	}
	res, err := EnsureRun(ctx, bus.JS, run, RunOptions{Memory: o.Memory, Replicas: o.Replicas})
	if err != nil {
		return nil, err
	}
	defer cleanupRun(bus.JS, run)
	gen := newPairGen(o.Tokens, o.TextBytes)
	r := &TransportBenchResult{Pairs: o.Pairs, BatchSize: o.BatchSize, BaselinePairs: o.BaselinePairs, Storage: "file", Replicas: o.Replicas}
	if o.Memory {
		r.Storage = "memory"
	}

	if err := benchArrow(ctx, bus, res, gen, o, r); err != nil {
		return nil, err
	}
	if o.NoBaseline {
		r.BaselinePairs = 0
		return r, nil
	}
	// Free the Arrow phase's gigabytes before the baseline fills its own stream.
	if err := bus.JS.DeleteStream(ctx, run.PairsStream()); err != nil {
		return nil, fmt.Errorf("bench cleanup: %w", err)
	}
	if err := benchJSON(ctx, bus, run, gen, o, r); err != nil {
		return nil, err
	}
	if r.BaselinePairsPerS > 0 {
		r.SpeedupVsBaseline = r.PairsPerS / r.BaselinePairsPerS
	}
	return r, nil
}

func benchArrow(ctx context.Context, bus *Bus, res *RunResources, gen *pairGen, o TransportBenchOptions, r *TransportBenchResult) error {
	cons, err := NewPairConsumer(ctx, res, ConsumerOptions{Durable: "bench", AckWait: 30 * time.Second, PullBatch: 4})
	if err != nil {
		return err
	}
	defer cons.Close()
	pub := NewPairPublisher(bus.JS, res.Run, PublisherOptions{MaxPending: 16})

	// A failed publisher must stop the consumer too, or it would wait for batches forever.
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	var payloadBytes atomic.Int64
	// In-flight batches are bounded, as a trainer's pace bounds rollout workers in a run:
	// without it the publisher runs ahead and the bench measures a growing backlog.
	window := make(chan struct{}, o.Window)
	pubErr := make(chan error, 1)
	start := time.Now()
	go func() {
		batch := make([]proto.Pair, 0, o.BatchSize)
		idBuf := make([]string, 0, o.BatchSize)
		for i := 0; i < o.Pairs; i++ {
			batch = append(batch, gen.pair(i))
			if len(batch) == o.BatchSize || i == o.Pairs-1 {
				idBuf = idBuf[:0]
				for _, p := range batch {
					idBuf = append(idBuf, p.PairID)
				}
				select {
				case window <- struct{}{}:
				case <-ctx.Done():
					pubErr <- ctx.Err()
					return
				}
				if err := pub.Publish(ctx, proto.BatchID(idBuf), batch, nil); err != nil {
					cancel(fmt.Errorf("publisher: %w", err))
					pubErr <- err
					return
				}
				batch = batch[:0]
			}
		}
		err := pub.Flush(ctx)
		if err != nil {
			cancel(fmt.Errorf("publisher: %w", err))
		}
		pubErr <- err
	}()

	var latencies []float64
	got := 0
	lastReport := time.Now()
	for got < o.Pairs {
		b, err := cons.Next(ctx)
		if err != nil {
			if cause := context.Cause(ctx); cause != nil && cause != err {
				return cause
			}
			return fmt.Errorf("consumer after %d of %d pairs: %w", got, o.Pairs, err)
		}
		latencies = append(latencies, float64(time.Since(b.SentAt).Microseconds())/1000)
		payloadBytes.Add(int64(len(b.msg.Data)))
		got += len(b.Rows)
		if err := b.Ack(); err != nil {
			return err
		}
		<-window
		if time.Since(lastReport) > time.Second {
			o.Progress("arrow", got, o.Pairs)
			lastReport = time.Now()
		}
	}
	wall := time.Since(start).Seconds()
	if err := <-pubErr; err != nil {
		return fmt.Errorf("publisher: %w", err)
	}
	o.Progress("arrow", got, o.Pairs)
	r.WallS = wall
	r.PairsPerS = float64(got) / wall
	r.MBPerS = float64(payloadBytes.Load()) / wall / 1e6
	r.BytesPerPair = float64(payloadBytes.Load()) / float64(got)
	r.P50BatchMs = percentile(latencies, 0.50)
	r.P99BatchMs = percentile(latencies, 0.99)
	r.DuplicatesReceived = cons.Stats().DuplicateRows
	return nil
}

// jsonPair is the baseline's wire form: the obvious one, a JSON object per pair.
type jsonPair struct {
	PairID           string  `json:"pair_id"`
	PromptID         string  `json:"prompt_id"`
	Prompt           string  `json:"prompt"`
	Chosen           string  `json:"chosen"`
	Rejected         string  `json:"rejected"`
	PromptTokenIDs   []int32 `json:"prompt_token_ids"`
	ChosenTokenIDs   []int32 `json:"chosen_token_ids"`
	RejectedTokenIDs []int32 `json:"rejected_token_ids"`
	ChosenScore      float64 `json:"chosen_score"`
	RejectedScore    float64 `json:"rejected_score"`
	PolicyVersion    int64   `json:"policy_version"`
	CreatedAt        string  `json:"created_at"`
}

func benchJSON(ctx context.Context, bus *Bus, run proto.Run, gen *pairGen, o TransportBenchOptions, r *TransportBenchResult) error {
	storage := jetstream.FileStorage
	if o.Memory {
		storage = jetstream.MemoryStorage
	}
	subject := "autoif." + run.ID + ".pairs-json"
	stream, err := bus.JS.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
		Name: run.PairsStream() + "_JSON", Subjects: []string{subject}, Storage: storage, Duplicates: 2 * time.Minute,
		Replicas: o.Replicas,
	})
	if err != nil {
		return fmt.Errorf("baseline stream: %w", err)
	}
	cons, err := stream.CreateOrUpdateConsumer(ctx, jetstream.ConsumerConfig{
		Durable: "bench-json", AckPolicy: jetstream.AckExplicitPolicy, AckWait: 30 * time.Second, MaxAckPending: 4096,
	})
	if err != nil {
		return fmt.Errorf("baseline consumer: %w", err)
	}
	iter, err := cons.Messages(jetstream.PullMaxMessages(512))
	if err != nil {
		return err
	}
	defer iter.Stop()

	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	pubErr := make(chan error, 1)
	fail := func(err error) {
		cancel(fmt.Errorf("baseline publisher: %w", err))
		pubErr <- err
	}
	// The same bound on pairs in flight as the Arrow phase.
	window := make(chan struct{}, o.Window*o.BatchSize)
	start := time.Now()
	go func() {
		for i := 0; i < o.BaselinePairs; i++ {
			select {
			case window <- struct{}{}:
			case <-ctx.Done():
				pubErr <- ctx.Err()
				return
			}
			p := gen.pair(i)
			data, err := json.Marshal(jsonPair{
				PairID: p.PairID, PromptID: p.PromptID, Prompt: p.Prompt, Chosen: p.Chosen, Rejected: p.Rejected,
				PromptTokenIDs: p.PromptTokenIDs, ChosenTokenIDs: p.ChosenTokenIDs, RejectedTokenIDs: p.RejectedTokenIDs,
				ChosenScore: p.ChosenScore, RejectedScore: p.RejectedScore, PolicyVersion: p.PolicyVersion,
				CreatedAt: p.CreatedAt.Format(time.RFC3339Nano),
			})
			if err != nil {
				fail(err)
				return
			}
			m := nats.NewMsg(subject)
			m.Data = data
			m.Header.Set(proto.HeaderMsgID, p.PairID)
			// The client caps unacknowledged async publishes; on a loaded machine the cap
			// is reached before the window is, so wait for acks and try again.
			for {
				_, err := bus.JS.PublishMsgAsync(m)
				if err == nil {
					break
				}
				if !errors.Is(err, jetstream.ErrTooManyStalledMsgs) {
					fail(err)
					return
				}
				select {
				case <-bus.JS.PublishAsyncComplete():
				case <-time.After(50 * time.Millisecond):
				case <-ctx.Done():
					pubErr <- ctx.Err()
					return
				}
			}
		}
		select {
		case <-bus.JS.PublishAsyncComplete():
			pubErr <- nil
		case <-ctx.Done():
			pubErr <- ctx.Err()
		}
	}()
	var bytes int64
	lastReport := time.Now()
	for got := 0; got < o.BaselinePairs; got++ {
		m, err := iter.Next(jetstream.NextContext(ctx))
		if err != nil {
			if cause := context.Cause(ctx); cause != nil && cause != err {
				return cause
			}
			return fmt.Errorf("baseline consumer after %d pairs: %w", got, err)
		}
		var p jsonPair
		if err := json.Unmarshal(m.Data(), &p); err != nil {
			return fmt.Errorf("baseline decode: %w", err)
		}
		bytes += int64(len(m.Data()))
		if err := m.Ack(); err != nil {
			return err
		}
		<-window
		if time.Since(lastReport) > time.Second {
			o.Progress("json baseline", got, o.BaselinePairs)
			lastReport = time.Now()
		}
	}
	wall := time.Since(start).Seconds()
	if err := <-pubErr; err != nil {
		return fmt.Errorf("baseline publisher: %w", err)
	}
	o.Progress("json baseline", o.BaselinePairs, o.BaselinePairs)
	r.BaselineWallS = wall
	r.BaselinePairsPerS = float64(o.BaselinePairs) / wall
	r.BaselineMBPerS = float64(bytes) / wall / 1e6
	r.BaselineBytesPair = float64(bytes) / float64(o.BaselinePairs)
	return nil
}

// pairGen makes realistic pairs cheaply: a pool of distinct texts and token lists, with a
// unique pair id per index.
type pairGen struct {
	pool []proto.Pair
}

func newPairGen(tokens, textBytes int) *pairGen {
	rng := rand.New(rand.NewPCG(1, 2))
	words := strings.Fields("the model must answer in exactly three bullet points and use no commas while " +
		"mentioning the keyword ocean twice response json format lowercase letters only title")
	text := func(n int) string {
		var sb strings.Builder
		for sb.Len() < n {
			sb.WriteString(words[rng.IntN(len(words))])
			sb.WriteByte(' ')
		}
		return sb.String()[:n]
	}
	toks := func(n int) []int32 {
		out := make([]int32, n)
		for i := range out {
			out[i] = int32(rng.IntN(151_936))
		}
		return out
	}
	g := &pairGen{}
	for i := 0; i < 256; i++ {
		g.pool = append(g.pool, proto.Pair{
			Prompt:           text(textBytes / 4),
			Chosen:           text(textBytes * 3 / 8),
			Rejected:         text(textBytes * 3 / 8),
			PromptTokenIDs:   toks(64),
			ChosenTokenIDs:   toks(tokens),
			RejectedTokenIDs: toks(tokens),
			ChosenScore:      1,
			RejectedScore:    0,
		})
	}
	return g
}

func (g *pairGen) pair(i int) proto.Pair {
	p := g.pool[i%len(g.pool)]
	p.PairID = fmt.Sprintf("p%09d", i)
	p.PromptID = fmt.Sprintf("q%08d", i/4)
	p.PolicyVersion = int64(i / 10_000)
	p.CreatedAt = time.Unix(1_700_000_000+int64(i), 0).UTC()
	return p
}

func percentile(xs []float64, q float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	return s[min(len(s)-1, int(q*float64(len(s))))]
}

func cleanupRun(js jetstream.JetStream, run proto.Run) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, name := range []string{run.PromptsStream(), run.PairsStream(), run.RolloutsStream(), run.MetricsStream(), run.PairsStream() + "_JSON"} {
		if err := js.DeleteStream(ctx, name); err != nil {
			slog.Debug("bench cleanup", "stream", name, "err", err)
		}
	}
	_ = js.DeleteKeyValue(ctx, run.PolicyBucket())
	_ = js.DeleteObjectStore(ctx, run.CheckpointBucket())
}
