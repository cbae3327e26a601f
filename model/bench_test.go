package model

import "testing"

func BenchmarkDecode(b *testing.B) {
	w, err := Init(BenchConfig(), 1)
	if err != nil {
		b.Fatal(err)
	}
	m := New(w)
	for _, batch := range []int{1, 8} {
		b.Run("b"+string(rune('0'+batch)), func(b *testing.B) {
			for b.Loop() {
				r, err := m.BenchDecode(batch, 4, 32, 1)
				if err != nil {
					b.Fatal(err)
				}
				b.ReportMetric(r.TokensPerSec, "tok/s")
				b.ReportMetric(r.TokensPerCPUSec, "tok/cpu-s")
			}
		})
	}
}
