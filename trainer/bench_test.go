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

// The bench's LoRA mode trains the adapter only (the base stays as it was), counts the FLOPs
// of a backward without weight gradients, and is refused without its configuration.
func TestBenchLoRAMode(t *testing.T) {
	w := tinyWeights(t, tinyConfig(true, true, true), 4)
	before := w.Clone()
	lc := &model.LoRAConfig{Rank: 2, Alpha: 8, Targets: model.LoRATargets}
	b, err := NewBench(w, BenchOptions{Mode: BenchLoRA, LoRA: lc, PairsPerStep: 2, PromptLen: 4, ResponseLen: 3, Steps: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	r, err := b.Run()
	if err != nil {
		t.Fatal(err)
	}
	if r.PairsPerS <= 0 || r.StepFLOPs != StepFLOPs(w.Config, 2, 4, 3, true) {
		t.Errorf("result %+v", r)
	}
	if full := StepFLOPs(w.Config, 2, 4, 3, false); !(r.StepFLOPs < full && r.StepFLOPs > full/2) {
		t.Errorf("LoRA step %g FLOPs against full fine-tuning's %g: want between half and all", r.StepFLOPs, full)
	}
	trained := false
	for _, p := range b.tr.Adapter().Tensors() {
		for _, v := range p.Data {
			trained = trained || (v != 0 && p.Shape[1] == lc.Rank)
		}
	}
	if !trained {
		t.Error("every lora_B is still zero after two AdamW steps")
	}
	for i, p := range w.Tensors() {
		for j, v := range p.Data {
			if v != before.Tensors()[i].Data[j] {
				t.Fatalf("base tensor %s changed", p.Name)
			}
		}
	}
	for _, o := range []BenchOptions{{Mode: BenchLoRA}, {Mode: BenchFull, LoRA: lc}, {Mode: "half"}} {
		if _, err := NewBench(w, o); err == nil {
			t.Errorf("mode %q with LoRA %v accepted", o.Mode, o.LoRA)
		}
	}
}
