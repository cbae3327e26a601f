package natsbus

import (
	"context"
	"errors"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// RetryOptions bound Retry.
type RetryOptions struct {
	// Attempt bounds one attempt (default 5s): a JetStream request whose reply was lost to a
	// failover would otherwise wait for the caller's whole deadline. Negative: no bound, for
	// calls made of steps that each time out by themselves, like an object put (each chunk's
	// ack has the client's default timeout when the context has no deadline, and a deadline
	// would replace those with itself: a chunk whose ack was lost then held the put for it).
	Attempt time.Duration
	// For bounds all attempts together (default 60s, within the streams' 2-minute duplicate
	// window, so a retried publish is still recognised).
	For time.Duration
	// OnRetry, if set, hears of each failed attempt that will be retried.
	OnRetry func(attempt int, err error)
}

// Retry calls f until it succeeds, fails in a way a retry cannot mend, ctx ends or o.For
// has passed. Between attempts it waits 100 ms, doubling up to 2 s. Failures worth a retry
// are those of a cluster in failover or a connection between servers: timeouts, no
// responders, a disconnected client, JetStream's 503 (no stream or meta leader yet), its 429
// and the client's stall (publishes faster than the stream stores them), and its 409 for a
// message id whose earlier attempt the stream is still proposing.
// f must be idempotent: a publish carries its message id, a put its full value.
func Retry(ctx context.Context, o RetryOptions, f func(ctx context.Context) error) error {
	if o.Attempt == 0 {
		o.Attempt = 5 * time.Second
	}
	if o.For <= 0 {
		o.For = time.Minute
	}
	deadline := time.Now().Add(o.For)
	wait := 100 * time.Millisecond
	for attempt := 1; ; attempt++ {
		actx, cancel := context.WithCancel(ctx)
		if o.Attempt > 0 {
			actx, cancel = context.WithTimeout(ctx, o.Attempt)
		}
		err := f(actx)
		cancel()
		if err == nil || ctx.Err() != nil || !Transient(err) || time.Now().Add(wait).After(deadline) {
			return err
		}
		if o.OnRetry != nil {
			o.OnRetry(attempt, err)
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(wait):
		}
		wait = min(2*wait, 2*time.Second)
	}
}

// errCodeDuplicateInProcess is JetStream's 409 "duplicate message id is in process": a
// clustered stream is still proposing an earlier attempt with the same message id (one whose
// ack was lost as the client disconnected). A later attempt finds it stored, as a duplicate,
// or stores the message if the proposal failed. nats.go names no constant for it.
const errCodeDuplicateInProcess jetstream.ErrorCode = 10158

// Transient reports whether err is one that a retry after a failover can mend.
func Transient(err error) bool {
	var apiErr *jetstream.APIError
	switch {
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, nats.ErrTimeout),
		errors.Is(err, nats.ErrNoResponders), errors.Is(err, jetstream.ErrNoStreamResponse),
		errors.Is(err, jetstream.ErrAsyncPublishTimeout), errors.Is(err, jetstream.ErrTooManyStalledMsgs),
		errors.Is(err, nats.ErrDisconnected), errors.Is(err, nats.ErrConnectionReconnecting),
		errors.Is(err, jetstream.ErrNoHeartbeat):
		return true
	case errors.As(err, &apiErr):
		return apiErr.Code == 503 || apiErr.Code == 429 || apiErr.ErrorCode == errCodeDuplicateInProcess
	}
	return false
}
