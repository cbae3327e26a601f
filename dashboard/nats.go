package dashboard

import (
	"context"
	"fmt"
	"log/slog"
	"strconv"
	"strings"

	"github.com/nats-io/nats.go/jetstream"

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
	cons, err := metrics.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{DeliverPolicy: jetstream.DeliverAllPolicy})
	if err != nil {
		return fmt.Errorf("dashboard: follow %s: %w", name, err)
	}
	it, err := cons.Messages()
	if err != nil {
		return fmt.Errorf("dashboard: follow %s: %w", name, err)
	}
	defer it.Stop()
	for {
		m, err := it.Next(jetstream.NextContext(ctx))
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("dashboard: follow %s: %w", name, err)
		}
		events, err := proto.MetricEvents.DecodeMsg(m.Headers(), m.Data())
		if err != nil {
			slog.Warn("dashboard: skipping an undecodable metrics batch", "run", name, "err", err)
			continue
		}
		version := int64(-1)
		if v, err := strconv.ParseInt(m.Headers().Get(proto.HeaderPolicyVersion), 10, 64); err == nil {
			version = v
		}
		rows := make([]orchestrator.MetricRow, len(events))
		for i, e := range events {
			rows[i] = orchestrator.MetricRow{Time: e.Time, Component: strings.Clone(e.Component), Step: e.Step,
				Name: strings.Clone(e.Name), Value: e.Value, Label: strings.Clone(e.Label), PolicyVersion: version}
		}
		h.AddMetrics(name, rows)
	}
}
