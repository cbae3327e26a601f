package natsbus

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/autoif/autoif/proto"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// PublisherOptions tune a Publisher.
type PublisherOptions struct {
	// MaxPending is how many batches may await their JetStream ack (default 64).
	MaxPending int
	// RetryFor bounds how long a batch whose ack failed or timed out is published again,
	// with the same message id so JetStream keeps one copy (default 60s: a cluster's
	// failover takes seconds, and the streams' duplicate window is 2 minutes).
	RetryFor time.Duration
	// AckTimeout bounds the wait for one ack (default 10s).
	AckTimeout time.Duration
}

// Publisher publishes row batches to a JetStream subject asynchronously: Publish returns once
// the batch is handed to the connection; Flush waits until every batch is stored.
type Publisher[T any] struct {
	js      jetstream.JetStream
	codec   *proto.Codec[T]
	subject string
	o       PublisherOptions
	pending []jetstream.PubAckFuture
	retried int64
}

// NewPublisher publishes batches of codec's rows to subject.
func NewPublisher[T any](js jetstream.JetStream, codec *proto.Codec[T], subject string, o PublisherOptions) *Publisher[T] {
	if o.MaxPending <= 0 {
		o.MaxPending = 64
	}
	if o.RetryFor <= 0 {
		o.RetryFor = time.Minute
	}
	if o.AckTimeout <= 0 {
		o.AckTimeout = 10 * time.Second
	}
	return &Publisher[T]{js: js, codec: codec, subject: subject, o: o}
}

// Publish encodes rows and publishes them as one message. msgID must identify the batch's
// content (see proto.BatchID): a batch published twice under one id is stored once.
// header adds headers (may be nil).
func (p *Publisher[T]) Publish(ctx context.Context, msgID string, rows []T, header nats.Header) error {
	m, err := p.codec.Msg(p.subject, msgID, rows)
	if err != nil {
		return err
	}
	for k, v := range header {
		m.Header[k] = v
	}
	m.Header.Set(proto.HeaderSentAt, strconv.FormatInt(time.Now().UnixNano(), 10))
	for len(p.pending) >= p.o.MaxPending {
		if err := p.settleOldest(ctx); err != nil {
			return err
		}
	}
	f, err := p.js.PublishMsgAsync(m)
	if err != nil {
		return fmt.Errorf("publish %s batch %s: %w", p.codec.Name(), msgID, err)
	}
	p.pending = append(p.pending, f)
	return nil
}

// Flush waits until every published batch is acknowledged (stored) by JetStream.
func (p *Publisher[T]) Flush(ctx context.Context) error {
	for len(p.pending) > 0 {
		if err := p.settleOldest(ctx); err != nil {
			return err
		}
	}
	return nil
}

// Pending is the number of batches not yet acknowledged.
func (p *Publisher[T]) Pending() int { return len(p.pending) }

func (p *Publisher[T]) settleOldest(ctx context.Context) error {
	f := p.pending[0]
	timer := time.NewTimer(p.o.AckTimeout)
	defer timer.Stop()
	var cause error
	select {
	case <-f.Ok():
		p.pending = p.pending[1:]
		return nil
	case cause = <-f.Err():
	case <-timer.C:
		cause = fmt.Errorf("no ack after %s", p.o.AckTimeout)
	case <-ctx.Done():
		return ctx.Err()
	}
	// Publish again, synchronously, through a failover if need be: the message id makes a
	// late first copy harmless within the stream's duplicate window, which RetryFor stays
	// inside.
	m := f.Msg()
	err := Retry(ctx, RetryOptions{Attempt: p.o.AckTimeout, For: p.o.RetryFor, OnRetry: func(attempt int, err error) {
		slog.Warn("batch publish retry", "subject", m.Subject, "msg_id", m.Header.Get(proto.HeaderMsgID), "attempt", attempt, "err", err)
	}}, func(ctx context.Context) error {
		_, err := p.js.PublishMsg(ctx, m)
		return err
	})
	if err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return fmt.Errorf("publish %s batch %s: %v; retried for up to %s: %w", p.codec.Name(), m.Header.Get(proto.HeaderMsgID), cause, p.o.RetryFor, err)
	}
	p.pending = p.pending[1:]
	p.retried++
	return nil
}

// Retried counts the batches whose first publication went unacknowledged and that a retry
// stored.
func (p *Publisher[T]) Retried() int64 { return p.retried }

// ConsumerOptions tune a Consumer.
type ConsumerOptions struct {
	// Durable names the consumer; a restarted process with the same name resumes where the
	// last one acknowledged. Required.
	Durable string
	// AckWait is how long a delivered batch may stay unacknowledged before JetStream gives it
	// to another consumer (default 30s). Keep it short so a dead consumer's batches come
	// back soon; call Batch.InProgress while working on one for longer.
	AckWait time.Duration
	// MaxAckPending caps delivered-but-unacknowledged batches (default 64).
	MaxAckPending int
	// PullBatch is how many messages one pull asks for (default 8).
	PullBatch int
	// Heartbeat is how often the server says that a waiting pull is still alive (default
	// 5s, 500ms to 15s); after two missed, the pull is issued anew (its member died, or the
	// consumer's leader moved without telling it).
	Heartbeat time.Duration
	// SeenCapacity bounds the remembered ids (default 1,000,000); the oldest are forgotten.
	SeenCapacity int
	// Logger receives warnings about poison messages; default slog.Default().
	Logger *slog.Logger
}

// ConsumerStats count what a Consumer has seen.
type ConsumerStats struct {
	Batches       int64 // batches handed to the caller
	Rows          int64 // rows handed to the caller
	DuplicateRows int64 // rows dropped because their id was already acknowledged
	Redelivered   int64 // batches delivered more than once
	Poison        int64 // messages that failed to decode and were terminated
	// MissedHeartbeats counts pulls the server stopped answering (its member died or the
	// consumer's leader moved); each was re-issued.
	MissedHeartbeats int64
	// Pulls counts the pull requests issued, one per PullBatch messages at most.
	Pulls int64
}

// Consumer is a durable pull consumer of row batches: a batch is acknowledged only when the
// caller says it is done with it, so a consumer that dies mid-batch loses nothing. It pulls
// up to PullBatch messages at a time (see pull), issuing the next pull when the caller asks
// for a batch and none is left from the last one.
type Consumer[T any] struct {
	codec   *proto.Codec[T]
	nc      *nats.Conn
	subject string // the consumer's pull request subject
	o       ConsumerOptions
	rowID   func(*T) string
	log     *slog.Logger

	pullMu sync.Mutex
	pull   *pull // the open pull; nil when none

	mu     sync.Mutex
	seen   *idSet
	stats  ConsumerStats
	closed atomic.Bool
}

// ErrConsumerClosed is what Next returns after Close.
var ErrConsumerClosed = errors.New("consumer closed")

// NewConsumer creates or attaches to the durable consumer o.Durable on stream, to pull from
// it over nc. With rowID (may be nil) the consumer drops rows whose id it has already seen
// acknowledged, so redeliveries and re-published rows are applied once.
func NewConsumer[T any](ctx context.Context, nc *nats.Conn, stream jetstream.Stream, codec *proto.Codec[T], o ConsumerOptions, rowID func(*T) string) (*Consumer[T], error) {
	if o.Durable == "" {
		return nil, errors.New("consumer: a durable name is required")
	}
	if o.AckWait <= 0 {
		o.AckWait = 30 * time.Second
	}
	if o.MaxAckPending <= 0 {
		o.MaxAckPending = 64
	}
	if o.PullBatch <= 0 {
		o.PullBatch = 8
	}
	if o.Heartbeat == 0 {
		o.Heartbeat = 5 * time.Second
	}
	// The server takes 500ms to 30s; two must fit in a pull's expiry.
	if o.Heartbeat < 500*time.Millisecond || o.Heartbeat > pullExpiry/2 {
		return nil, fmt.Errorf("consumer %s: heartbeat %v is outside 500ms..%v", o.Durable, o.Heartbeat, pullExpiry/2)
	}
	if o.SeenCapacity <= 0 {
		o.SeenCapacity = 1_000_000
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	// Idempotent (same durable, same config), so retried through a failover or a slow
	// cluster like the run's other setup requests.
	var cons jetstream.Consumer
	err := Retry(ctx, RetryOptions{}, func(ctx context.Context) error {
		var err error
		cons, err = stream.CreateOrUpdateConsumer(ctx, jetstream.ConsumerConfig{
			Durable:       o.Durable,
			AckPolicy:     jetstream.AckExplicitPolicy,
			AckWait:       o.AckWait,
			MaxAckPending: o.MaxAckPending,
			DeliverPolicy: jetstream.DeliverAllPolicy,
		})
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("consumer %s: %w", o.Durable, err)
	}
	subject := "$JS.API.CONSUMER.MSG.NEXT." + cons.CachedInfo().Stream + "." + o.Durable
	return &Consumer[T]{codec: codec, nc: nc, subject: subject, o: o, rowID: rowID, log: o.Logger, seen: newIDSet(o.SeenCapacity)}, nil
}

// open returns the open pull, or issues a new one.
func (c *Consumer[T]) open() (*pull, error) {
	c.pullMu.Lock()
	defer c.pullMu.Unlock()
	if c.closed.Load() {
		return nil, ErrConsumerClosed
	}
	if c.pull == nil {
		p, err := startPull(c.nc, c.subject, c.o.PullBatch, c.o.Heartbeat)
		if err != nil {
			return nil, err
		}
		c.pull = p
		c.mu.Lock()
		c.stats.Pulls++
		c.mu.Unlock()
	}
	return c.pull, nil
}

// ended forgets p, whose messages are all taken, so the next open issues a new pull.
func (c *Consumer[T]) ended(p *pull) {
	c.pullMu.Lock()
	defer c.pullMu.Unlock()
	if c.pull == p {
		c.pull = nil
	}
}

// next is the next message of the open pull, pulling anew as each one ends.
func (c *Consumer[T]) next(ctx context.Context) (*nats.Msg, error) {
	// Pulls that fail again and again (a consumer without a leader for seconds) back off.
	wait := 50 * time.Millisecond
	pause := func() error {
		wait = min(2*wait, 2*time.Second)
		select {
		case <-time.After(wait):
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	for {
		p, err := c.open()
		switch {
		case errors.Is(err, ErrConsumerClosed), errors.Is(err, nats.ErrConnectionClosed):
			return nil, err
		case err != nil:
			// The request could not be sent (a reconnect buffer full, say): try again.
			c.log.Warn("consumer could not pull; pulling again", "consumer", c.o.Durable, "err", err)
			if err := pause(); err != nil {
				return nil, err
			}
			continue
		}
		select {
		case m, ok := <-p.msgs:
			if ok {
				return m, nil
			}
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		// The pull has ended: its batch delivered, its request expired, or it failed.
		c.ended(p)
		err = p.Err()
		switch {
		case err == nil:
		case c.closed.Load():
			return nil, ErrConsumerClosed
		case errors.Is(err, jetstream.ErrNoHeartbeat):
			// The pull was parked on a member that died or lost the consumer's
			// leadership; the durable position holds, so nothing is lost by going on.
			c.mu.Lock()
			c.stats.MissedHeartbeats++
			c.mu.Unlock()
			c.log.Warn("consumer missed heartbeats; pulling again", "consumer", c.o.Durable)
		case errors.Is(err, jetstream.ErrConsumerDeleted), errors.Is(err, jetstream.ErrBadRequest):
			return nil, err
		case errors.Is(err, jetstream.ErrConsumerLeadershipChanged):
			c.log.Info("consumer has a new leader; pulling again", "consumer", c.o.Durable)
		case errors.Is(err, nats.ErrNoResponders):
			// A failover: no member leads the consumer until one is elected.
			c.log.Debug("consumer has no leader; pulling again", "consumer", c.o.Durable)
			if err := pause(); err != nil {
				return nil, err
			}
		default:
			// Another status the server ends a pull with (too many waiting pulls, say):
			// the next pull goes on, after a pause in case it repeats.
			c.log.Warn("consumer pull ended; pulling again", "consumer", c.o.Durable, "err", err)
			if err := pause(); err != nil {
				return nil, err
			}
		}
	}
}

// Batch is one delivered message's rows. Ack it once its rows are applied.
type Batch[T any] struct {
	Rows []T
	// Seq is the message's stream sequence; Delivered counts its deliveries (1 = first).
	Seq       uint64
	Delivered uint64
	MsgID     string
	Header    nats.Header
	// SentAt is when it was published (zero if the publisher did not say).
	SentAt time.Time
	// Duplicates is how many of its rows were dropped as already seen.
	Duplicates int

	msg *nats.Msg
	c   *Consumer[T]
}

// Next blocks until a batch arrives or ctx ends. Batches whose rows were all seen before are
// acknowledged and skipped; undecodable messages are terminated, logged and skipped.
func (c *Consumer[T]) Next(ctx context.Context) (*Batch[T], error) {
	for {
		m, err := c.next(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			return nil, fmt.Errorf("consumer %s: %w", c.o.Durable, err)
		}
		b, err := c.batch(m)
		if err != nil {
			c.mu.Lock()
			c.stats.Poison++
			c.mu.Unlock()
			c.log.Error("dropping undecodable batch", "consumer", c.o.Durable, "subject", m.Subject, "err", err)
			_ = m.Term()
			continue
		}
		if len(b.Rows) == 0 && b.Duplicates > 0 {
			if err := m.Ack(); err != nil {
				return nil, fmt.Errorf("consumer %s: ack duplicate batch: %w", c.o.Durable, err)
			}
			continue
		}
		return b, nil
	}
}

func (c *Consumer[T]) batch(m *nats.Msg) (*Batch[T], error) {
	rows, err := c.codec.DecodeMsg(m.Header, m.Data)
	if err != nil {
		return nil, err
	}
	b := &Batch[T]{Rows: rows, Header: m.Header, MsgID: m.Header.Get(proto.HeaderMsgID), msg: m, c: c}
	if md, err := m.Metadata(); err == nil {
		b.Seq, b.Delivered = md.Sequence.Stream, md.NumDelivered
	}
	if ns, err := strconv.ParseInt(m.Header.Get(proto.HeaderSentAt), 10, 64); err == nil {
		b.SentAt = time.Unix(0, ns)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.rowID != nil {
		kept := rows[:0]
		for i := range rows {
			if !c.seen.has(c.rowID(&rows[i])) {
				kept = append(kept, rows[i])
			}
		}
		b.Duplicates = len(rows) - len(kept)
		b.Rows = kept
		c.stats.DuplicateRows += int64(b.Duplicates)
	}
	c.stats.Batches++
	c.stats.Rows += int64(len(b.Rows))
	if b.Delivered > 1 {
		c.stats.Redelivered++
	}
	return b, nil
}

// Ack tells JetStream the batch is applied, without waiting for the server's confirmation:
// an ack lost on the way only means a redelivery, whose rows the seen set then drops. Its row
// ids join the seen set.
func (b *Batch[T]) Ack() error {
	if err := b.msg.Ack(); err != nil {
		return fmt.Errorf("ack batch %d: %w", b.Seq, err)
	}
	b.c.markSeen(b.Rows)
	return nil
}

// AckSync acknowledges the batch and waits until the server confirms, after which it is
// never delivered again (e.g. before a checkpoint records the consumer's position).
func (b *Batch[T]) AckSync(ctx context.Context) error {
	if err := b.msg.AckSync(nats.Context(ctx)); err != nil {
		return fmt.Errorf("ack batch %d: %w", b.Seq, err)
	}
	b.c.markSeen(b.Rows)
	return nil
}

// Nak hands the batch back for redelivery now (e.g. on shutdown before it was applied).
func (b *Batch[T]) Nak() error { return b.msg.Nak() }

// InProgress resets the batch's ack timer while it is still being worked on.
func (b *Batch[T]) InProgress() error { return b.msg.InProgress() }

func (c *Consumer[T]) markSeen(rows []T) {
	if c.rowID == nil {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for i := range rows {
		c.seen.add(c.rowID(&rows[i]))
	}
}

// MarkSeen records ids already applied elsewhere (e.g. restored from a checkpoint), so their
// redelivery is dropped.
func (c *Consumer[T]) MarkSeen(ids ...string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, id := range ids {
		c.seen.add(id)
	}
}

// Stats returns the counts so far.
func (c *Consumer[T]) Stats() ConsumerStats {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.stats
}

// Close stops pulling and hands back every message pulled but not yet given to the caller,
// and any still on its way, so a restarted consumer gets them at once instead of after the
// ack wait. The server has dropped the pull by the time it returns (or 2 s have passed), so
// batches returned by Next and handed back after it go to the next consumer, not to this
// one's dead pull. Close is idempotent; Next then returns ErrConsumerClosed.
func (c *Consumer[T]) Close() {
	c.pullMu.Lock()
	if !c.closed.CompareAndSwap(false, true) {
		c.pullMu.Unlock()
		return
	}
	p := c.pull
	c.pull = nil
	c.pullMu.Unlock()
	if p == nil {
		return
	}
	for _, m := range p.stop(2 * time.Second) {
		_ = m.Nak()
	}
}

// idSet is a set of ids that forgets the oldest beyond its capacity.
type idSet struct {
	cap   int
	ids   map[string]struct{}
	order []string
	head  int
}

func newIDSet(capacity int) *idSet { return &idSet{cap: capacity, ids: make(map[string]struct{})} }

func (s *idSet) has(id string) bool { _, ok := s.ids[id]; return ok }

func (s *idSet) add(id string) {
	if _, ok := s.ids[id]; ok {
		return
	}
	if len(s.order) < s.cap {
		s.order = append(s.order, id)
	} else {
		delete(s.ids, s.order[s.head])
		s.order[s.head] = id
		s.head = (s.head + 1) % s.cap
	}
	s.ids[id] = struct{}{}
}

// NewPairConsumer is the trainer's consumer of a run's preference pairs, de-duplicated by
// pair id.
func NewPairConsumer(ctx context.Context, r *RunResources, o ConsumerOptions) (*Consumer[proto.Pair], error) {
	return NewConsumer(ctx, r.Conn, r.Pairs, proto.Pairs, o, func(p *proto.Pair) string { return p.PairID })
}

// NewPairPublisher publishes preference-pair batches to a run.
func NewPairPublisher(js jetstream.JetStream, run proto.Run, o PublisherOptions) *Publisher[proto.Pair] {
	return NewPublisher(js, proto.Pairs, run.Pairs(), o)
}

// ReadOrdered reads stream s in order through an ordered (ephemeral, unacknowledged)
// consumer, from stream sequence from on (0 or 1: from the first message), and hands fn each
// message's sequence, headers and rows as codec decodes them, until ctx ends (then nil) or fn
// or the read fails. A message that does not decode comes with its error and no rows, for fn
// to skip: one bad batch must not stop a reader that follows a run.
func ReadOrdered[T any](ctx context.Context, s jetstream.Stream, codec *proto.Codec[T], from uint64,
	fn func(seq uint64, h nats.Header, rows []T, decodeErr error) error) error {
	cfg := jetstream.OrderedConsumerConfig{DeliverPolicy: jetstream.DeliverAllPolicy}
	if from > 1 {
		cfg.DeliverPolicy, cfg.OptStartSeq = jetstream.DeliverByStartSequencePolicy, from
	}
	cons, err := s.OrderedConsumer(ctx, cfg)
	if err != nil {
		return err
	}
	it, err := cons.Messages()
	if err != nil {
		return err
	}
	defer it.Stop()
	for {
		m, err := it.Next(jetstream.NextContext(ctx))
		if err == nil {
			var md *jetstream.MsgMetadata
			if md, err = m.Metadata(); err == nil {
				rows, decodeErr := codec.DecodeMsg(m.Headers(), m.Data())
				err = fn(md.Sequence.Stream, m.Headers(), rows, decodeErr)
			}
		}
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
	}
}
