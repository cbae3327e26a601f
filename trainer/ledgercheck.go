package trainer

import (
	"context"
	"errors"
	"fmt"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/autoif/autoif/natsbus"
	"github.com/autoif/autoif/proto"
)

// LedgerCheck compares a trainer's pair ledger with the run's pair stream.
type LedgerCheck struct {
	Published int `json:"published"` // pairs in the stream
	Consumed  int `json:"consumed"`  // ledger lines
	Applied   int `json:"applied"`   // of them trained on
	LastStep  int `json:"last_step"` // the last step that applied pairs
	// AckFloor is the trainer consumer's acknowledged stream sequence: every pair at or
	// below it must be in the ledger.
	AckFloor uint64 `json:"ack_floor"`
	// TrainedTwice are ids with more than one ledger line, Unknown ids no batch in the
	// stream holds, StoredTwice ids in more than one stream message, and Lost ids of batches
	// the trainer acknowledged that are not in the ledger.
	TrainedTwice []string `json:"trained_twice,omitempty"`
	Unknown      []string `json:"unknown,omitempty"`
	StoredTwice  []string `json:"stored_twice,omitempty"`
	Lost         []string `json:"lost,omitempty"`
}

// OK reports whether no pair was lost, trained twice, stored twice or invented.
func (c LedgerCheck) OK() bool {
	return len(c.TrainedTwice)+len(c.Unknown)+len(c.StoredTwice)+len(c.Lost) == 0
}

func (c LedgerCheck) String() string {
	verdict := "OK: no pair lost, none trained twice"
	if !c.OK() {
		verdict = fmt.Sprintf("FAILED: %d lost, %d trained twice, %d stored twice, %d unknown", len(c.Lost), len(c.TrainedTwice), len(c.StoredTwice), len(c.Unknown))
	}
	return fmt.Sprintf("ledger check: %d pairs published, %d consumed (%d applied, last step %d), ack floor %d: %s",
		c.Published, c.Consumed, c.Applied, c.LastStep, c.AckFloor, verdict)
}

// CheckLedger reads the pair stream whole and the ledger at ledgerPath, and the ack floor of
// the trainer's durable consumer.
func CheckLedger(ctx context.Context, res *natsbus.RunResources, ledgerPath, durable string) (LedgerCheck, error) {
	var c LedgerCheck
	ledger, err := ReadLedger(ledgerPath)
	if err != nil {
		return c, err
	}
	info, err := res.Pairs.Info(ctx)
	if err != nil {
		return c, fmt.Errorf("ledger check: %w", err)
	}
	published := map[string]uint64{}
	for seq := info.State.FirstSeq; seq > 0 && seq <= info.State.LastSeq; seq++ {
		m, err := res.Pairs.GetMsg(ctx, seq)
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			continue
		}
		if err != nil {
			return c, fmt.Errorf("ledger check: pair stream sequence %d: %w", seq, err)
		}
		rows, err := proto.Pairs.DecodeMsg(m.Header, m.Data)
		if err != nil {
			return c, fmt.Errorf("ledger check: pair stream sequence %d: %w", seq, err)
		}
		for _, p := range rows {
			if _, dup := published[p.PairID]; dup {
				c.StoredTwice = append(c.StoredTwice, p.PairID)
			}
			published[p.PairID] = seq
		}
	}
	c.Published = len(published)
	cons, err := res.Pairs.Consumer(ctx, durable)
	if err != nil {
		return c, fmt.Errorf("ledger check: consumer %s: %w", durable, err)
	}
	ci, err := cons.Info(ctx)
	if err != nil {
		return c, fmt.Errorf("ledger check: consumer %s: %w", durable, err)
	}
	c.AckFloor = ci.AckFloor.Stream
	seen := map[string]bool{}
	for _, e := range ledger {
		c.Consumed++
		if seen[e.PairID] {
			c.TrainedTwice = append(c.TrainedTwice, e.PairID)
		}
		seen[e.PairID] = true
		if _, ok := published[e.PairID]; !ok {
			c.Unknown = append(c.Unknown, e.PairID)
		}
		if e.Applied() {
			c.Applied++
			c.LastStep = max(c.LastStep, e.Step)
		}
	}
	for id, seq := range published {
		if seq <= c.AckFloor && !seen[id] {
			c.Lost = append(c.Lost, id)
		}
	}
	return c, nil
}
