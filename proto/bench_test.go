package proto

import (
	"fmt"
	"strings"
	"testing"
)

func benchPairs(n int) []Pair {
	text := strings.Repeat("lorem ipsum ", 40)
	out := make([]Pair, n)
	for i := range out {
		out[i] = Pair{
			PairID: fmt.Sprintf("p%09d", i), PromptID: "q", Prompt: text[:256], Chosen: text[:384], Rejected: text[:384],
			PromptTokenIDs: tokens(64, int32(i)), ChosenTokenIDs: tokens(256, int32(i+1)), RejectedTokenIDs: tokens(256, int32(i+2)),
			CreatedAt: t0,
		}
	}
	return out
}

// BenchmarkPairsEncode and BenchmarkPairsDecode report per-batch cost of 1,024 pairs of the
// transport benchmark's shape (256+256 tokens, ~1 KB of text).
func BenchmarkPairsEncode(b *testing.B) {
	rows := benchPairs(1024)
	p, _ := Pairs.Encode(rows)
	b.SetBytes(int64(len(p)))
	for b.Loop() {
		if _, err := Pairs.Encode(rows); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkPairsDecode(b *testing.B) {
	m, _ := Pairs.Msg("s", "id", benchPairs(1024))
	b.SetBytes(int64(len(m.Data)))
	for b.Loop() {
		if _, err := Pairs.DecodeMsg(m.Header, m.Data); err != nil {
			b.Fatal(err)
		}
	}
}
