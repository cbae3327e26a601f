// Package proto holds the contracts between autoif's components: subject, stream and bucket
// names per run, the versioned Arrow schemas of the rows they exchange, the Arrow IPC encoding
// of row batches, and the NATS message headers that carry them. Nothing else in autoif defines
// a wire format.
//
// A payload is one Arrow IPC stream holding one record batch. The stream's schema metadata
// names the schema (`autoif.schema`, e.g. `pairs/v1`) and the row count (`autoif.rows`), so a
// payload truncated at a message boundary is detected. The NATS message carries the schema in
// the `Autoif-Schema` header, a CRC-32C of the payload in `Autoif-Crc32c` (so corruption is an
// error, never silently wrong text), and a `Nats-Msg-Id` that JetStream de-duplicates on.
package proto
