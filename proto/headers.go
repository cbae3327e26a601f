package proto

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"hash/crc32"
	"strconv"

	"github.com/nats-io/nats.go"
)

// Message headers.
const (
	// HeaderSchema names the payload's schema and version, e.g. "pairs/v1".
	HeaderSchema = "Autoif-Schema"
	// HeaderChecksum is the CRC-32C (Castagnoli) of the payload, lower-case hex.
	HeaderChecksum = "Autoif-Crc32c"
	// HeaderRows is the number of rows in the payload (informational; the payload says too).
	HeaderRows = "Autoif-Rows"
	// HeaderPolicyVersion is the policy version that produced the rows, where one did.
	HeaderPolicyVersion = "Autoif-Policy-Version"
	// HeaderMinPolicyVersion, on a prompt message, is the oldest policy version that may
	// sample it: sync mode sets it to the version its batch is for, so a worker that has not
	// yet swapped to that version waits for it instead of sampling off-policy.
	HeaderMinPolicyVersion = "Autoif-Min-Policy-Version"
	// HeaderMsgID is JetStream's de-duplication id.
	HeaderMsgID = nats.MsgIdHdr
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// Checksum is the payload checksum carried in HeaderChecksum.
func Checksum(payload []byte) string {
	return strconv.FormatUint(uint64(crc32.Checksum(payload, castagnoli)), 16)
}

// VerifyHeaders checks that a message claims the wanted schema and that its payload matches
// its checksum.
func VerifyHeaders(h nats.Header, schema string, payload []byte) error {
	got := h.Get(HeaderSchema)
	if got == "" {
		return fmt.Errorf("message has no %s header (want %s)", HeaderSchema, schema)
	}
	if got != schema {
		return fmt.Errorf("message schema %q, want %q", got, schema)
	}
	sum := h.Get(HeaderChecksum)
	if sum == "" {
		return fmt.Errorf("%s message has no %s header", schema, HeaderChecksum)
	}
	if want := Checksum(payload); sum != want {
		return fmt.Errorf("%s payload checksum %s, header says %s: corrupt payload", schema, want, sum)
	}
	return nil
}

// HeaderSentAt is when the batch was published (Unix nanoseconds), to measure transport
// latency and policy lag in time.
const HeaderSentAt = "Autoif-Sent-At"

// BatchID derives a batch's de-duplication id from its rows' ids, so publishing the same
// rows twice yields the same Nats-Msg-Id and JetStream stores them once.
func BatchID(rowIDs []string) string {
	h := sha256.New()
	for _, id := range rowIDs {
		h.Write([]byte(id))
		h.Write([]byte{0})
	}
	return hex.EncodeToString(h.Sum(nil)[:16])
}
