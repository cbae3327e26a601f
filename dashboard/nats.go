package dashboard

import (
	"context"
	"fmt"
	"log/slog"
	"strconv"
	"strings"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/autoif/autoif/natsbus"
	"github.com/autoif/autoif/orchestrator"
	"github.com/autoif/autoif/proto"
)

// Follow feeds the hub a run's metrics stream, from its first batch, as batches are stored,
// until ctx ends: the dashboard of a run whose orchestrator is on another machine. The
// stream carries every component's metrics, the orchestrator's step aggregates included, but
// not the samples (the orchestrator assembles those from the rollout and pair streams), so
// such a run's page has curves and no sample table.
func (h *Hub) Follow(ctx context.Context, metrics jetstream.Stream, name string) error {
	h.mu.Lock()
	h.run(name)
	h.mu.Unlock()
	err := natsbus.ReadOrdered(ctx, metrics, proto.MetricEvents, 0, func(_ uint64, header nats.Header, events []proto.MetricEvent, decodeErr error) error {
		if decodeErr != nil {
			slog.Warn("dashboard: skipping an undecodable metrics batch", "run", name, "err", decodeErr)
			return nil
		}
		version := int64(-1)
		if v, err := strconv.ParseInt(header.Get(proto.HeaderPolicyVersion), 10, 64); err == nil {
			version = v
		}
		rows := make([]orchestrator.MetricRow, len(events))
		for i, e := range events {
			rows[i] = orchestrator.MetricRow{Time: e.Time, Component: strings.Clone(e.Component), Step: e.Step,
				Name: strings.Clone(e.Name), Value: e.Value, Label: strings.Clone(e.Label), PolicyVersion: version}
		}
		h.AddMetrics(name, rows)
		return nil
	})
	if err != nil {
		return fmt.Errorf("dashboard: follow %s: %w", name, err)
	}
	return nil
}
