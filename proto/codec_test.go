package proto

import (
	"bytes"
	"math/rand/v2"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
)

var t0 = time.Date(2026, 11, 21, 10, 0, 0, 123456000, time.UTC)

func tokens(n int, seed int32) []int32 {
	out := make([]int32, n)
	for i := range out {
		out[i] = (seed*7919 + int32(i)*104729) % 151936
	}
	return out
}

func samplePairs(n int) []Pair {
	pairs := make([]Pair, n)
	for i := range pairs {
		pairs[i] = Pair{
			PairID:           "pair-" + strings.Repeat("x", i%3) + string(rune('a'+i%26)),
			PromptID:         "prompt-1",
			Prompt:           "Answer in exactly three words: what is DPO?",
			Chosen:           "Direct preference optimisation.",
			Rejected:         "It is a method for aligning language models with preferences.",
			PromptTokenIDs:   tokens(12, int32(i)),
			ChosenTokenIDs:   tokens(5+i, int32(i+1)),
			RejectedTokenIDs: tokens(11, int32(i+2)),
			ChosenScore:      1,
			RejectedScore:    0,
			PolicyVersion:    int64(i),
			CreatedAt:        t0,
		}
	}
	return pairs
}

// roundTrip encodes rows into a NATS message and decodes them back through the headers.
func roundTrip[T any](t *testing.T, c *Codec[T], rows []T) []T {
	t.Helper()
	m, err := c.Msg("autoif.test.x", "id-1", rows)
	if err != nil {
		t.Fatalf("encode: %v", err)
	}
	got, err := c.DecodeMsg(m.Header, m.Data)
	if err != nil {
		t.Fatalf("decode: %v", err)
	}
	return got
}

func assertRoundTrip[T any](t *testing.T, c *Codec[T], rows []T) {
	t.Helper()
	got := roundTrip(t, c, rows)
	if len(rows) == 0 && len(got) == 0 {
		return
	}
	if !reflect.DeepEqual(got, rows) {
		t.Fatalf("round trip changed the rows:\n got %+v\nwant %+v", got, rows)
	}
}

func TestEveryCodecRoundTripsItsRows(t *testing.T) {
	unicode := "héllo 世界 🙂 \u0000 \u202e rtl ‮ \t\n tab and NUL"
	big := strings.Repeat("ab\u00e9\u4e16", 64*1024/8)
	long := tokens(100_000, 3)

	t.Run("pairs", func(t *testing.T) {
		cases := map[string][]Pair{
			"empty batch": {},
			"one pair":    samplePairs(1),
			"many pairs":  samplePairs(300),
			"unicode":     {{PairID: unicode, Prompt: unicode, Chosen: unicode, Rejected: unicode, CreatedAt: t0}},
			"64 KB strings": {{
				PairID: "p", Prompt: big, Chosen: big + "c", Rejected: big + "r",
				ChosenTokenIDs: []int32{1}, CreatedAt: t0,
			}},
			"long token lists": {{
				PairID: "p", PromptTokenIDs: long, ChosenTokenIDs: long, RejectedTokenIDs: long[:1],
				ChosenScore: 0.75, RejectedScore: 0, PolicyVersion: 1 << 40, CreatedAt: t0,
			}},
			"empty token lists and strings": {{CreatedAt: t0}, {PairID: "b", CreatedAt: t0}},
		}
		for name, rows := range cases {
			t.Run(name, func(t *testing.T) { assertRoundTrip(t, Pairs, rows) })
		}
	})
	t.Run("prompts", func(t *testing.T) {
		cases := map[string][]PromptUnit{
			"empty batch": {},
			"unicode": {{
				PromptID: "q1", InstructionID: "i1", Instruction: unicode, Query: "q", Prompt: unicode,
				Functions: []string{"def evaluate(response):\n    return '世界' in response\n", ""}, CreatedAt: t0,
			}},
			"64 KB function": {{PromptID: "q", Functions: []string{big}, CreatedAt: t0}},
			"no functions":   {{PromptID: "q", Functions: []string{}, CreatedAt: t0}},
		}
		for name, rows := range cases {
			t.Run(name, func(t *testing.T) { assertRoundTrip(t, PromptUnits, rows) })
		}
	})
	t.Run("rollouts", func(t *testing.T) {
		cases := map[string][]ScoredRollout{
			"empty batch": {},
			"unicode and long tokens": {{
				RolloutID: "r", PromptID: "p", InstructionID: "i", Response: unicode + big, TokenIDs: long,
				LogProbSum: -123.5, Score: 2.0 / 3, Passed: 2, Failed: 1, Errors: 2, Timeouts: 1, Skipped: 3,
				ErrorKinds: []string{"exception:ValueError", "timeout"}, ErrorExample: "ValueError: " + unicode, PromptPairs: 4,
				PolicyVersion: 7, CreatedAt: t0,
			}},
			"no errors": {{RolloutID: "r", Passed: 1, ErrorKinds: []string{}, CreatedAt: t0}},
		}
		for name, rows := range cases {
			t.Run(name, func(t *testing.T) { assertRoundTrip(t, ScoredRollouts, rows) })
		}
	})
	t.Run("metrics", func(t *testing.T) {
		cases := map[string][]MetricEvent{
			"empty batch": {},
			"dpo metrics": {
				{Time: t0, Component: "trainer", Step: 3, Name: "rewards/margins", Value: 0.25},
				{Time: t0, Component: "rollout", Step: 3, Name: "reward/mean", Value: 0.5, Label: unicode},
			},
		}
		for name, rows := range cases {
			t.Run(name, func(t *testing.T) { assertRoundTrip(t, MetricEvents, rows) })
		}
	})
}

func TestTruncatedPayloadsAreErrors(t *testing.T) {
	payload, err := Pairs.Encode(samplePairs(3))
	if err != nil {
		t.Fatal(err)
	}
	// The last 8 bytes are the end-of-stream marker: every cut before it loses data.
	for n := 0; n < len(payload)-8; n++ {
		if rows, err := Pairs.Decode(payload[:n]); err == nil {
			t.Fatalf("payload cut to %d of %d bytes decoded to %d rows without error", n, len(payload), len(rows))
		}
	}
}

func TestCorruptedPayloadsAreErrors(t *testing.T) {
	m, err := Pairs.Msg("s", "id", samplePairs(2))
	if err != nil {
		t.Fatal(err)
	}
	for i := range m.Data {
		bad := bytes.Clone(m.Data)
		bad[i] ^= 0x5a
		if _, err := Pairs.DecodeMsg(m.Header, bad); err == nil {
			t.Fatalf("byte %d flipped: no error", i)
		}
		// Without the checksum the decoder must still never panic.
		_, _ = Pairs.Decode(bad)
	}
}

func TestWrongSchemaIsAnError(t *testing.T) {
	pairMsg, err := Pairs.Msg("s", "id", samplePairs(1))
	if err != nil {
		t.Fatal(err)
	}
	metricMsg, err := MetricEvents.Msg("s", "id", []MetricEvent{{Name: "loss", Time: t0}})
	if err != nil {
		t.Fatal(err)
	}
	header := func(kv ...string) nats.Header {
		h := nats.Header{}
		for i := 0; i < len(kv); i += 2 {
			h.Set(kv[i], kv[i+1])
		}
		return h
	}
	cases := []struct {
		name    string
		header  nats.Header
		payload []byte
		want    string
	}{
		{"no schema header", header(HeaderChecksum, Checksum(pairMsg.Data)), pairMsg.Data, "no Autoif-Schema"},
		{"other schema in header", header(HeaderSchema, "metrics/v1", HeaderChecksum, Checksum(pairMsg.Data)), pairMsg.Data, `"metrics/v1"`},
		{"newer version in header", header(HeaderSchema, "pairs/v2", HeaderChecksum, Checksum(pairMsg.Data)), pairMsg.Data, `"pairs/v2"`},
		{"no checksum header", header(HeaderSchema, "pairs/v1"), pairMsg.Data, "no Autoif-Crc32c"},
		{"header lies about the payload's schema", header(HeaderSchema, "pairs/v1", HeaderChecksum, Checksum(metricMsg.Data)), metricMsg.Data, `payload schema is "metrics/v1"`},
		{"not arrow at all", header(HeaderSchema, "pairs/v1", HeaderChecksum, Checksum([]byte(`{"pair_id":"x"}`))), []byte(`{"pair_id":"x"}`), "decode pairs/v1"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Pairs.DecodeMsg(tc.header, tc.payload)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got error %v, want one containing %q", err, tc.want)
			}
		})
	}
}

func TestColumnsOfAnotherTypeAreRejected(t *testing.T) {
	// Same schema name, different columns: a writer built against an edited schema.
	forged := newCodec("pairs/v1",
		stringCol("pair_id", func(r *MetricEvent) string { return r.Name }, func(r *MetricEvent, v string) { r.Name = v }),
	)
	payload, err := forged.Encode([]MetricEvent{{Name: "x"}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Pairs.Decode(payload); err == nil || !strings.Contains(err.Error(), "columns") {
		t.Fatalf("got %v, want a column-count error", err)
	}
}

func FuzzDecodePairs(f *testing.F) {
	for _, n := range []int{0, 1, 4} {
		p, err := Pairs.Encode(samplePairs(n))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(p)
	}
	m, _ := MetricEvents.Encode([]MetricEvent{{Name: "loss", Time: t0}})
	f.Add(m)
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, payload []byte) {
		rows, err := Pairs.Decode(payload)
		if err != nil {
			return
		}
		// Whatever decodes must survive another round trip unchanged.
		again, err := Pairs.Encode(rows)
		if err != nil {
			t.Fatalf("re-encode: %v", err)
		}
		back, err := Pairs.Decode(again)
		if err != nil {
			t.Fatalf("re-decode: %v", err)
		}
		if len(back) != len(rows) {
			t.Fatalf("re-decode gave %d rows, want %d", len(back), len(rows))
		}
	})
}

// Coverage-guided fuzzing explores the decoder's structure; this sweeps many cheap random
// corruptions of real payloads on every test run.
func TestRandomlyCorruptedPayloadsNeverPanic(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 11))
	bases := [][]byte{}
	for _, n := range []int{0, 1, 5} {
		p, err := Pairs.Encode(samplePairs(n))
		if err != nil {
			t.Fatal(err)
		}
		bases = append(bases, p)
	}
	for i := 0; i < 30_000; i++ {
		base := bases[i%len(bases)]
		bad := bytes.Clone(base)
		for k := 0; k < 1+rng.IntN(4); k++ {
			bad[rng.IntN(len(bad))] = byte(rng.IntN(256))
		}
		if rng.IntN(4) == 0 {
			bad = bad[:rng.IntN(len(bad))]
		}
		_, _ = Pairs.Decode(bad)
	}
}
