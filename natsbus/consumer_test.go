package natsbus

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/autoif/autoif/proto"
	"github.com/nats-io/nats.go"
)

// consumerRig is one embedded server with a run, a publisher and a helper to deliver
// single-pair batches by index.
type consumerRig struct {
	t   *testing.T
	ctx context.Context
	bus *Bus
	res *RunResources
	pub *Publisher[proto.Pair]
}

func newConsumerRig(t *testing.T, ctx context.Context, name string) *consumerRig {
	bus, err := Connect(ctx, Options{StoreDir: t.TempDir(), Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(bus.Close)
	run, _ := proto.NewRun(name)
	res, err := EnsureRun(ctx, bus.JS, run, RunOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return &consumerRig{t: t, ctx: ctx, bus: bus, res: res, pub: NewPairPublisher(bus.JS, run, PublisherOptions{})}
}

func (r *consumerRig) publish(i int) {
	r.t.Helper()
	rows := testPairs(i, i+1)
	if err := r.pub.Publish(r.ctx, rows[0].PairID, rows, nil); err != nil {
		r.t.Fatal(err)
	}
	if err := r.pub.Flush(r.ctx); err != nil {
		r.t.Fatal(err)
	}
}

// take wants a one-pair batch from cons within 5 s, acknowledges it and returns its id.
func (r *consumerRig) take(cons *Consumer[proto.Pair]) string {
	r.t.Helper()
	ctx, cancel := context.WithTimeout(r.ctx, 5*time.Second)
	defer cancel()
	b, err := cons.Next(ctx)
	if err != nil {
		r.t.Fatalf("%v (%+v)", err, cons.Stats())
	}
	if len(b.Rows) != 1 {
		r.t.Fatalf("got %d rows, want 1", len(b.Rows))
	}
	if err := b.Ack(); err != nil {
		r.t.Fatal(err)
	}
	return b.Rows[0].PairID
}

// next wants batch i from cons within 5 s, and acknowledges it.
func (r *consumerRig) next(cons *Consumer[proto.Pair], i int) {
	r.t.Helper()
	if got, want := r.take(cons), testPairs(i, i+1)[0].PairID; got != want {
		r.t.Fatalf("got %s, want %s", got, want)
	}
}

// A caller that works on a batch for a long time while its pull waits on an empty stream
// still gets the next batch as soon as it is published: the server's idle heartbeats of that
// time must not take the place of messages. (nats.go's iterator buffered them with the
// messages in PullBatch slots and dropped the next message: a slow consumer, then the ack
// wait, here a minute.)
func TestALongBatchDoesNotLoseTheNextOne(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	r := newConsumerRig(t, ctx, "longbatch")
	var slow atomic.Int64
	r.bus.NC.SetErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
		if err == nats.ErrSlowConsumer {
			slow.Add(1)
		}
	})
	cons, err := NewPairConsumer(ctx, r.res, ConsumerOptions{Durable: "t", PullBatch: 2, AckWait: time.Minute, Heartbeat: 500 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer cons.Close()
	r.publish(0)
	r.next(cons, 0)
	time.Sleep(4 * time.Second) // the work: eight heartbeats' worth
	r.publish(1)
	r.next(cons, 1)
	if n := slow.Load(); n > 0 {
		t.Errorf("%d slow-consumer drops", n)
	}
}

// Close hands the batches pulled but not yet taken back at once, so a consumer started
// after it gets them without waiting out their ack wait (a minute here).
func TestCloseHandsBackPulledBatches(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	r := newConsumerRig(t, ctx, "handback")
	o := ConsumerOptions{Durable: "t", PullBatch: 4, AckWait: time.Minute}
	first, err := NewPairConsumer(ctx, r.res, o)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		r.publish(i)
	}
	r.next(first, 0)
	time.Sleep(200 * time.Millisecond) // batches 1 and 2 reach the fetch
	first.Close()
	if _, err := first.Next(ctx); err == nil {
		t.Fatal("Next after Close gave a batch")
	}
	second, err := NewPairConsumer(ctx, r.res, o)
	if err != nil {
		t.Fatal(err)
	}
	defer second.Close()
	// A batch handed back is delivered again, in no set order.
	got := map[string]bool{r.take(second): true, r.take(second): true}
	for i := 1; i < 3; i++ {
		if id := testPairs(i, i+1)[0].PairID; !got[id] {
			t.Errorf("the second consumer got %v, not %s", got, id)
		}
	}
}

// Out-of-range heartbeats are refused before anything is pulled.
func TestConsumerHeartbeatBounds(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	r := newConsumerRig(t, ctx, "hbbounds")
	for _, hb := range []time.Duration{100 * time.Millisecond, 20 * time.Second} {
		if _, err := NewPairConsumer(ctx, r.res, ConsumerOptions{Durable: "t", Heartbeat: hb}); err == nil {
			t.Errorf("heartbeat %v accepted", hb)
		}
	}
}
