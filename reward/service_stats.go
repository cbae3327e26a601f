package reward

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"

	"github.com/autoif/autoif/proto"
)

// ServerReport is one reward server's answer to $SRV.STATS.
type ServerReport struct {
	ID      string    `json:"id"`
	Version string    `json:"version"`
	Started time.Time `json:"started"`
	// Requests and Errors are micro's counts of requests received and refused as malformed.
	Requests int         `json:"num_requests"`
	Errors   int         `json:"num_errors"`
	Stats    ServerStats `json:"stats"`
}

// CollectStats asks every reward server for its stats and gathers the answers that arrive
// within wait (a server's answer takes one round trip; there is no way to know how many
// servers there are). Reports are sorted by server id.
func CollectStats(ctx context.Context, nc *nats.Conn, wait time.Duration) ([]ServerReport, error) {
	subject, err := micro.ControlSubject(micro.StatsVerb, proto.RewardServiceName, "")
	if err != nil {
		return nil, err
	}
	inbox := nc.NewInbox()
	sub, err := nc.SubscribeSync(inbox)
	if err != nil {
		return nil, fmt.Errorf("reward stats: %w", err)
	}
	defer sub.Unsubscribe()
	if err := nc.PublishRequest(subject, inbox, nil); err != nil {
		return nil, fmt.Errorf("reward stats: %w", err)
	}
	ctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	var out []ServerReport
	for {
		m, err := sub.NextMsgWithContext(ctx)
		if errors.Is(err, nats.ErrNoResponders) {
			break // nobody is serving
		}
		if err != nil {
			if ctx.Err() != nil {
				break
			}
			return nil, fmt.Errorf("reward stats: %w", err)
		}
		var st micro.Stats
		if err := json.Unmarshal(m.Data, &st); err != nil {
			return nil, fmt.Errorf("reward stats: a server's answer: %w", err)
		}
		r := ServerReport{ID: st.ID, Version: st.Version, Started: st.Started}
		for _, ep := range st.Endpoints {
			r.Requests += ep.NumRequests
			r.Errors += ep.NumErrors
			if len(ep.Data) > 0 {
				if err := json.Unmarshal(ep.Data, &r.Stats); err != nil {
					return nil, fmt.Errorf("reward stats: server %s: %w", st.ID, err)
				}
			}
		}
		out = append(out, r)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out, nil
}
