package reward

import (
	"context"
	"strings"
	"testing"
)

// BenchmarkCachedCall measures one round trip of a cached function on one response: the
// fixed cost a persistent worker adds per call.
func BenchmarkCachedCall(b *testing.B) {
	p := newTestPool(b, Options{Workers: 1})
	fn := "def evaluate(response):\n    return len(response.split()) < 50\n"
	ctx := context.Background()
	resp := []string{"a short response"}
	if _, err := p.Evaluate(ctx, fn, resp); err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	for range b.N {
		if _, err := p.Evaluate(ctx, fn, resp); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkBatchedEval measures per-evaluation cost when one call carries many responses.
func BenchmarkBatchedEval(b *testing.B) {
	p := newTestPool(b, Options{Workers: 1})
	fn := "import re\ndef evaluate(response):\n    return re.search(r'\\d', response) is None\n"
	ctx := context.Background()
	resps := make([]string, 256)
	for i := range resps {
		resps[i] = strings.Repeat("word ", 200)
	}
	b.ResetTimer()
	for range b.N {
		if _, err := p.Evaluate(ctx, fn, resps); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*len(resps))/1e3, "µs/eval")
}
