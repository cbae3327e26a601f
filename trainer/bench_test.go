package trainer

import (
	"testing"
	"time"

	"github.com/autoif/autoif/model"
)

func BenchmarkDPOStepBenchModel(b *testing.B) {
	w, err := model.Init(model.BenchConfig(), 1)
	if err != nil {
		b.Fatal(err)
	}
	for range b.N {
		r, err := BenchDPO(w, BenchOptions{Steps: 1})
		if err != nil {
			b.Fatal(err)
		}
		b.ReportMetric(r.PairsPerS, "pairs/s")
		b.ReportMetric(r.GFLOPs, "GFLOP/s")
		b.ReportMetric(r.RefSeconds, "ref-s")
		b.ReportMetric(MatmulPeakGFLOPs(512, 300*time.Millisecond), "peak-GFLOP/s")
	}
}
