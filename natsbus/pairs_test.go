package natsbus

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/autoif/autoif/proto"
	"github.com/nats-io/nats.go"
)

// The consumer that gets killed runs in a child process (this test binary, re-executed), so
// it dies the way a trainer does: SIGKILL, sockets torn down by the kernel, nothing flushed.
func TestMain(m *testing.M) {
	if url := os.Getenv("AUTOIF_TEST_CONSUMER_URL"); url != "" {
		if err := runChildConsumer(url); err != nil {
			fmt.Fprintln(os.Stderr, "child consumer:", err)
			os.Exit(2)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

const (
	testDurable = "trainer"
	testAckWait = 2 * time.Second
)

// runChildConsumer applies batches (appends their ids to a log, then acks) and, at batch
// AUTOIF_TEST_DIE_AT, announces it and waits to be killed before applying it.
func runChildConsumer(url string) error {
	ctx := context.Background()
	dieAt, _ := strconv.Atoi(os.Getenv("AUTOIF_TEST_DIE_AT"))
	run, _ := proto.NewRun(os.Getenv("AUTOIF_TEST_RUN"))
	bus, err := Connect(ctx, Options{URL: url, Name: "child-consumer"})
	if err != nil {
		return err
	}
	res, err := EnsureRun(ctx, bus.JS, run, RunOptions{})
	if err != nil {
		return err
	}
	cons, err := NewPairConsumer(ctx, res, ConsumerOptions{Durable: testDurable, AckWait: testAckWait})
	if err != nil {
		return err
	}
	log, err := os.OpenFile(os.Getenv("AUTOIF_TEST_LOG"), os.O_APPEND|os.O_WRONLY|os.O_CREATE, 0o644)
	if err != nil {
		return err
	}
	for n := 1; ; n++ {
		b, err := cons.Next(ctx)
		if err != nil {
			return err
		}
		if n == dieAt {
			fmt.Printf("MIDBATCH %d\n", b.Seq)
			select {}
		}
		if err := applyBatch(log, b.Rows); err != nil {
			return err
		}
		if err := b.Ack(); err != nil {
			return err
		}
		fmt.Printf("ACKED %d\n", b.Seq)
	}
}

// applyBatch is the "training step": it durably records the ids it applied.
func applyBatch(log *os.File, rows []proto.Pair) error {
	var sb strings.Builder
	for _, p := range rows {
		sb.WriteString(p.PairID)
		sb.WriteByte('\n')
	}
	if _, err := log.WriteString(sb.String()); err != nil {
		return err
	}
	return log.Sync()
}

func testPairs(from, to int) []proto.Pair {
	var out []proto.Pair
	for i := from; i < to; i++ {
		out = append(out, proto.Pair{
			PairID:         fmt.Sprintf("pair-%04d", i),
			PromptID:       fmt.Sprintf("prompt-%03d", i/4),
			Prompt:         "Write a haiku about the sea, all in lowercase.",
			Chosen:         "waves fold into foam",
			Rejected:       "Waves Fold Into Foam",
			ChosenTokenIDs: []int32{int32(i), 2, 3}, RejectedTokenIDs: []int32{4, 5, int32(i)},
			ChosenScore: 1, PolicyVersion: 1, CreatedAt: time.Now().UTC(),
		})
	}
	return out
}

func ids(rows []proto.Pair) []string {
	out := make([]string, len(rows))
	for i, p := range rows {
		out[i] = p.PairID
	}
	return out
}

func TestConsumerKilledMidBatchLosesNoPairAndAppliesNoneTwice(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	dir := t.TempDir()
	bus, err := Connect(ctx, Options{StoreDir: filepath.Join(dir, "js")})
	if err != nil {
		t.Fatal(err)
	}
	defer bus.Close()
	run, _ := proto.NewRun("killtest")
	res, err := EnsureRun(ctx, bus.JS, run, RunOptions{})
	if err != nil {
		t.Fatal(err)
	}

	const batches, perBatch = 40, 25
	pub := NewPairPublisher(bus.JS, run, PublisherOptions{})
	for i := 0; i < batches; i++ {
		rows := testPairs(i*perBatch, (i+1)*perBatch)
		if err := pub.Publish(ctx, proto.BatchID(ids(rows)), rows, nil); err != nil {
			t.Fatal(err)
		}
	}
	// A publisher retry of batch 5 (same content, same message id): JetStream keeps one copy.
	retry := testPairs(5*perBatch, 6*perBatch)
	if err := pub.Publish(ctx, proto.BatchID(ids(retry)), retry, nil); err != nil {
		t.Fatal(err)
	}
	// A rollout worker that restarted and re-sent ten pairs in a new batch: only the
	// consumer's pair-id check can drop these.
	resent := testPairs(100, 110)
	if err := pub.Publish(ctx, "resent-batch", resent, nil); err != nil {
		t.Fatal(err)
	}
	if err := pub.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	info, err := res.Pairs.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.State.Msgs != batches+1 {
		t.Fatalf("stream holds %d batches, want %d (the retried batch de-duplicated)", info.State.Msgs, batches+1)
	}

	logPath := filepath.Join(dir, "applied.log")
	child := exec.CommandContext(ctx, os.Args[0], "-test.run=^$")
	child.Env = append(os.Environ(),
		"AUTOIF_TEST_CONSUMER_URL="+bus.URL(), "AUTOIF_TEST_RUN="+run.ID,
		"AUTOIF_TEST_LOG="+logPath, "AUTOIF_TEST_DIE_AT=12")
	child.Stderr = os.Stderr
	out, err := child.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := child.Start(); err != nil {
		t.Fatal(err)
	}
	acked := 0
	sc := bufio.NewScanner(out)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "ACKED") {
			acked++
		}
		if strings.HasPrefix(line, "MIDBATCH") {
			break
		}
	}
	if acked != 11 {
		t.Fatalf("child acked %d batches before its fatal one, want 11 (stdout: %v)", acked, sc.Err())
	}
	if err := child.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = child.Wait()

	// The restarted trainer restores what it applied (its checkpoint) and resumes.
	applied := readLines(t, logPath)
	if len(applied) != 11*perBatch {
		t.Fatalf("the killed consumer applied %d pairs, want %d", len(applied), 11*perBatch)
	}
	cons, err := NewPairConsumer(ctx, res, ConsumerOptions{Durable: testDurable, AckWait: testAckWait})
	if err != nil {
		t.Fatal(err)
	}
	defer cons.Close()
	cons.MarkSeen(applied...)
	log, err := os.OpenFile(logPath, os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer log.Close()
	want := batches * perBatch
	for total := len(applied); total < want; {
		b, err := cons.Next(ctx)
		if err != nil {
			t.Fatalf("after %d of %d pairs: %v", total, want, err)
		}
		if err := applyBatch(log, b.Rows); err != nil {
			t.Fatal(err)
		}
		if err := b.Ack(); err != nil {
			t.Fatal(err)
		}
		total += len(b.Rows)
	}
	// Nothing else may arrive: the resent batch is all duplicates and is acked silently.
	short, cancelShort := context.WithTimeout(ctx, 3*testAckWait)
	defer cancelShort()
	if b, err := cons.Next(short); err == nil {
		t.Fatalf("extra batch %d with %d rows after every pair was applied", b.Seq, len(b.Rows))
	}

	counts := map[string]int{}
	for _, id := range readLines(t, logPath) {
		counts[id]++
	}
	for i := 0; i < want; i++ {
		id := fmt.Sprintf("pair-%04d", i)
		if counts[id] != 1 {
			t.Errorf("%s applied %d times, want once", id, counts[id])
		}
	}
	if len(counts) != want {
		t.Errorf("%d distinct ids applied, want %d", len(counts), want)
	}
	st := cons.Stats()
	if st.DuplicateRows < int64(len(resent)) {
		t.Errorf("restarted consumer dropped %d duplicate rows, want at least the %d resent", st.DuplicateRows, len(resent))
	}
	if st.Redelivered == 0 {
		t.Errorf("no batch was redelivered, yet the killed consumer died holding one")
	}
}

func readLines(t *testing.T, path string) []string {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return strings.Fields(string(data))
}

// memoryRun starts an embedded server and a run named name on it, in memory, for the test.
func memoryRun(t *testing.T, ctx context.Context, name string) (*Bus, proto.Run, *RunResources) {
	t.Helper()
	bus, err := Connect(ctx, Options{StoreDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(bus.Close)
	run, _ := proto.NewRun(name)
	res, err := EnsureRun(ctx, bus.JS, run, RunOptions{Memory: true})
	if err != nil {
		t.Fatal(err)
	}
	return bus, run, res
}

func TestPoisonMessagesAreTerminatedNotRedelivered(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	bus, run, res := memoryRun(t, ctx, "poison")
	if _, err := bus.JS.Publish(ctx, run.Pairs(), []byte("not arrow")); err != nil {
		t.Fatal(err)
	}
	pub := NewPairPublisher(bus.JS, run, PublisherOptions{})
	good := testPairs(0, 3)
	if err := pub.Publish(ctx, "good", good, nil); err != nil {
		t.Fatal(err)
	}
	if err := pub.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	cons, err := NewPairConsumer(ctx, res, ConsumerOptions{Durable: "t", AckWait: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer cons.Close()
	b, err := cons.Next(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(b.Rows) != 3 || b.MsgID != "good" {
		t.Fatalf("got batch %q with %d rows, want the good one", b.MsgID, len(b.Rows))
	}
	if got := cons.Stats().Poison; got != 1 {
		t.Fatalf("poison count %d, want 1", got)
	}
}

func TestEnsureRunIsIdempotentAndRejectsConflicts(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	bus, err := Connect(ctx, Options{StoreDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer bus.Close()
	run, _ := proto.NewRun("idem")
	for i := 0; i < 2; i++ {
		if _, err := EnsureRun(ctx, bus.JS, run, RunOptions{}); err != nil {
			t.Fatalf("call %d: %v", i+1, err)
		}
	}
	// The same stream name bound to another subject: EnsureRun must not silently accept it.
	other, _ := proto.NewRun("idem2")
	if _, err := EnsureRun(ctx, bus.JS, other, RunOptions{}); err != nil {
		t.Fatalf("a second run on the same server: %v", err)
	}
	if _, err := EnsureRun(ctx, bus.JS, run, RunOptions{Memory: true}); err == nil {
		t.Fatal("switching an existing file-backed run to memory storage was accepted")
	}
}

// An ordered reader starts where it is told, hands an undecodable batch over with its error
// instead of stopping, and ends without an error when its context does.
func TestReadOrderedFromASequenceThroughABadBatch(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	bus, run, res := memoryRun(t, ctx, "ordered")
	pub := NewPairPublisher(bus.JS, run, PublisherOptions{})
	if err := pub.Publish(ctx, "first", testPairs(0, 1), nil); err != nil {
		t.Fatal(err)
	}
	if err := pub.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := bus.JS.Publish(ctx, run.Pairs(), []byte("not arrow")); err != nil {
		t.Fatal(err)
	}
	if err := pub.Publish(ctx, "third", testPairs(1, 3), nil); err != nil {
		t.Fatal(err)
	}
	if err := pub.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	type seen struct {
		seq  uint64
		rows int
		bad  bool
	}
	var got []seen
	rctx, stop := context.WithCancel(ctx)
	err := ReadOrdered(rctx, res.Pairs, proto.Pairs, 2, func(seq uint64, _ nats.Header, rows []proto.Pair, decodeErr error) error {
		got = append(got, seen{seq, len(rows), decodeErr != nil})
		if len(got) == 2 {
			stop()
		}
		return nil
	})
	if err != nil {
		t.Fatalf("ReadOrdered after its context ended: %v, want nil", err)
	}
	if want := []seen{{2, 0, true}, {3, 2, false}}; !slices.Equal(got, want) {
		t.Fatalf("read %+v, want %+v", got, want)
	}
}
