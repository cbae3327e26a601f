package natsbus

import (
	"encoding/json"
	"fmt"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// A pull is one JetStream pull request for up to n messages of a durable consumer, on a
// subscription of its own: the server answers with the messages as they come, idle
// heartbeats while it has none, and a status that ends the request (expired, a leadership
// change, the consumer deleted).
//
// It is written here, not taken from nats.go v1.55's jetstream package, for three faults
// that cost a batch its ack wait or ~30 s there, each seen in this repository's tests:
//   - Consumer.Messages buffers heartbeats with the messages in PullBatch slots, so the
//     heartbeats of a pull that waits on an empty stream while the caller works (a rollout
//     worker's minute-long sampling step) filled it and the next message was dropped as a
//     slow consumer;
//   - Consumer.Messages skips the next pull while the last one's request is still being
//     sent, so a batch answered within that moment left it pulling nothing;
//   - Consumer.Fetch can be stopped only through its context, and it hands back its last
//     messages before it unsubscribes: a batch handed back at Close could go straight to
//     the dead pull, and the messages still on their way were dropped.
//
// A pull's callback takes heartbeats as they come, so nothing but messages waits for the
// caller; stop drains the subscription and hands back, after the server has dropped the
// subscription, whatever reaches it.
type pull struct {
	sub  *nats.Subscription
	msgs chan *nats.Msg // up to n messages; closed when the pull ends

	mu    sync.Mutex
	left  int   // messages the server may still send
	ended bool  // msgs is closed
	err   error // why it ended early; nil when its batch was delivered or it expired
	hb    *time.Timer
	beat  time.Duration // the heartbeat interval asked for
}

// pullRequest is the body of $JS.API.CONSUMER.MSG.NEXT.<stream>.<consumer>.
type pullRequest struct {
	Batch     int           `json:"batch"`
	Expires   time.Duration `json:"expires"`
	Heartbeat time.Duration `json:"idle_heartbeat,omitempty"`
}

// pullExpiry is how long the server keeps a pull request waiting for messages (nats.go's
// default too); the next one is issued as soon as the caller asks again.
const pullExpiry = 30 * time.Second

// startPull subscribes to a new inbox and sends the request.
func startPull(nc *nats.Conn, subject string, n int, heartbeat time.Duration) (*pull, error) {
	p := &pull{msgs: make(chan *nats.Msg, n), left: n, beat: heartbeat}
	body, err := json.Marshal(pullRequest{Batch: n, Expires: pullExpiry, Heartbeat: heartbeat})
	if err != nil {
		return nil, err
	}
	inbox := nc.NewInbox()
	// The callback may run before Subscribe returns, so the timer exists first.
	p.hb = time.AfterFunc(2*heartbeat, func() { p.end(jetstream.ErrNoHeartbeat) })
	p.sub, err = nc.Subscribe(inbox, p.receive)
	if err != nil {
		p.hb.Stop()
		return nil, err
	}
	if err := nc.PublishRequest(subject, inbox, body); err != nil {
		p.hb.Stop()
		_ = p.sub.Unsubscribe()
		return nil, err
	}
	return p, nil
}

// receive runs on the subscription's goroutine, one message at a time.
func (p *pull) receive(m *nats.Msg) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.ended {
		// Stopped, or given up on (missed heartbeats of a server that was only slow): a
		// message still on its way goes back at once rather than after its ack wait.
		if m.Reply != "" {
			_ = m.Nak()
		}
		return
	}
	p.hb.Reset(2 * p.beat)
	if status := m.Header.Get("Status"); status != "" && len(m.Data) == 0 && m.Reply == "" {
		switch status {
		case "100": // idle heartbeat
			return
		case "404", "408": // no messages, or the request expired
			p.finish(nil, true)
		default:
			p.finish(statusError(m), true)
		}
		return
	}
	p.msgs <- m // never blocks: the server sends at most n
	if p.left--; p.left == 0 {
		p.finish(nil, true)
	}
}

// statusError names a status that ended a pull, as nats.go does where it has a name for it.
func statusError(m *nats.Msg) error {
	status, desc := m.Header.Get("Status"), m.Header.Get("Description")
	switch {
	case status == "409" && desc == "Consumer Deleted":
		return jetstream.ErrConsumerDeleted
	case status == "409" && desc == "Leadership Change":
		return jetstream.ErrConsumerLeadershipChanged
	case status == "400":
		return fmt.Errorf("%w: %s", jetstream.ErrBadRequest, desc)
	case status == "503": // nothing answers the request: the consumer has no leader yet
		return nats.ErrNoResponders
	}
	return fmt.Errorf("pull ended with status %s %s", status, desc)
}

// end ends the pull from outside its callback (a missed heartbeat).
func (p *pull) end(err error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.finish(err, true)
}

// finish closes msgs once, and with unsubscribe drops the subscription (from the callback
// too: Unsubscribe does not wait for it). The server needs no word: a request whose
// subscription is gone gets nothing more, and expires. p.mu is held.
func (p *pull) finish(err error, unsubscribe bool) {
	if p.ended {
		return
	}
	p.ended, p.err = true, err
	p.hb.Stop()
	close(p.msgs)
	if unsubscribe {
		_ = p.sub.Unsubscribe()
	}
}

// Err is why the pull ended early, once msgs is closed.
func (p *pull) Err() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.err
}

// stop ends the pull and returns the messages it holds. What reaches the subscription
// after that is handed back (Nak) by the callback, which the drain keeps running until the
// server has confirmed the unsubscribe, waiting at most wait for it.
func (p *pull) stop(wait time.Duration) []*nats.Msg {
	p.mu.Lock()
	p.finish(ErrConsumerClosed, false)
	var held []*nats.Msg
	for m := range p.msgs {
		held = append(held, m)
	}
	p.mu.Unlock()
	if p.sub.IsValid() {
		closed := p.sub.StatusChanged(nats.SubscriptionClosed)
		if err := p.sub.Drain(); err == nil {
			select {
			case <-closed:
			case <-time.After(wait):
			}
		}
	}
	return held
}
