package orchestrator

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/autoif/autoif/natsbus"
	"github.com/autoif/autoif/proto"
)

// MetricsPublisher publishes a component's per-step figures to a run's metrics stream, for
// components that report through a callback (the trainer's OnStep) rather than their own
// publisher. The orchestrator shows them on its step lines and in metrics.parquet.
type MetricsPublisher struct {
	pub       *natsbus.Publisher[proto.MetricEvent]
	run       proto.Run
	component string
}

// NewMetricsPublisher publishes as component ("trainer") to run's metrics stream.
func NewMetricsPublisher(js jetstream.JetStream, run proto.Run, component string) *MetricsPublisher {
	return &MetricsPublisher{pub: natsbus.NewPublisher(js, proto.MetricEvents, run.Metrics(), natsbus.PublisherOptions{}),
		run: run, component: component}
}

// Publish stores one step's values (e.g. trainer.Metrics.Map()) as metric events and waits
// until JetStream has them. version is the policy version the step produced or used (-1:
// none); the batch id is derived from component and step, so a retried step is stored once.
func (p *MetricsPublisher) Publish(ctx context.Context, step, version int64, values map[string]float64) error {
	now := time.Now().UTC()
	events := make([]proto.MetricEvent, 0, len(values))
	for _, name := range slices.Sorted(maps.Keys(values)) {
		events = append(events, proto.MetricEvent{Time: now, Component: p.component, Step: step, Name: name, Value: values[name]})
	}
	if len(events) == 0 {
		return nil
	}
	var hdr nats.Header
	if version >= 0 {
		hdr = nats.Header{}
		hdr.Set(proto.HeaderPolicyVersion, strconv.FormatInt(version, 10))
	}
	id := proto.BatchID([]string{p.component, p.run.ID, "step", strconv.FormatInt(step, 10)})
	if err := p.pub.Publish(ctx, id, events, hdr); err != nil {
		return fmt.Errorf("%s metrics: %w", p.component, err)
	}
	if err := p.pub.Flush(ctx); err != nil {
		return fmt.Errorf("%s metrics: %w", p.component, err)
	}
	return nil
}
