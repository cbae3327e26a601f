// Package natsbus is autoif's NATS layer: it starts an embedded nats-server with JetStream or
// connects to an external server or cluster, creates (or verifies) a run's streams, policy KV
// bucket and checkpoint object store, and moves row batches over JetStream with at-least-once
// delivery, publisher de-duplication and consumer-side de-duplication by row id.
package natsbus
