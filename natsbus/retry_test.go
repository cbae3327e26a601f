package natsbus

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// An attempt is bounded by Attempt, or not at all when it is negative: an object put then
// keeps the client's own timeout on each chunk's ack, and a lost ack is an error worth another
// attempt.
func TestRetryAttemptDeadlines(t *testing.T) {
	ctx := context.Background()
	deadlines := func(o RetryOptions) (has bool, left time.Duration) {
		_ = Retry(ctx, o, func(ctx context.Context) error {
			var d time.Time
			d, has = ctx.Deadline()
			left = time.Until(d)
			return nil
		})
		return has, left
	}
	if has, left := deadlines(RetryOptions{}); !has || left <= 4*time.Second || left > 5*time.Second {
		t.Errorf("default attempt: deadline %v in %v, want 5s", has, left)
	}
	if has, left := deadlines(RetryOptions{Attempt: time.Minute}); !has || left <= 59*time.Second {
		t.Errorf("1m attempt: deadline %v in %v", has, left)
	}
	if has, _ := deadlines(RetryOptions{Attempt: -1}); has {
		t.Error("a negative Attempt still gave the attempt a deadline")
	}
	calls := 0
	err := Retry(ctx, RetryOptions{Attempt: -1}, func(context.Context) error {
		if calls++; calls < 3 {
			return fmt.Errorf("put: %w", jetstream.ErrAsyncPublishTimeout)
		}
		return nil
	})
	if err != nil || calls != 3 {
		t.Errorf("a lost chunk ack: %d calls, err %v; want a third attempt to succeed", calls, err)
	}
}

// A failover can leave an earlier attempt of a publish in the stream's proposal queue; the
// server then answers a retry with a 409 "duplicate message id is in process", which the next
// attempt resolves. Other conflicts, like a wrong last sequence, are final.
func TestTransientErrors(t *testing.T) {
	inProcess := fmt.Errorf("nats: %w", &jetstream.APIError{Code: 409, ErrorCode: 10158, Description: "duplicate message id is in process"})
	wrongSeq := fmt.Errorf("nats: %w", &jetstream.APIError{Code: 400, ErrorCode: jetstream.JSErrCodeStreamWrongLastSequence})
	noLeader := fmt.Errorf("nats: %w", &jetstream.APIError{Code: 503, ErrorCode: 10008})
	tooMany := fmt.Errorf("nats: %w", &jetstream.APIError{Code: 429, ErrorCode: 10167, Description: "too many requests"})
	for _, c := range []struct {
		err  error
		want bool
	}{
		{inProcess, true},
		{noLeader, true},
		{tooMany, true},
		{fmt.Errorf("put: %w", jetstream.ErrTooManyStalledMsgs), true},
		{wrongSeq, false},
		{fmt.Errorf("publish: %w", context.DeadlineExceeded), true},
		{fmt.Errorf("bad batch"), false},
	} {
		if got := Transient(c.err); got != c.want {
			t.Errorf("Transient(%v) = %v, want %v", c.err, got, c.want)
		}
	}
}
