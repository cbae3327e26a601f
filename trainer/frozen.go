package trainer

import (
	"fmt"
	"math"

	"github.com/autoif/autoif/model"
)

// frozenWeights is the frozen reference policy's values, per tensor in Weights.Tensors()
// order: its BF16 bits when every value of the tensor is exactly a BF16 (a BF16 checkpoint
// widened on load, as the 0.5B one is), else a float32 copy. The reference graph widens BF16
// as it reads, so its log-probs are exactly those of the float32 values either way, at half
// the memory of a float32 copy for a BF16 checkpoint (1 GB instead of 2 at 0.5B). Online
// training keeps it because new pairs keep needing reference log-probs.
type frozenWeights struct {
	names  []string
	shapes [][]int
	f32    [][]float32
	bf16   [][]uint16
}

// newFrozen copies w's values (a half-precision tensor, which nothing updates, is shared).
func newFrozen(w *model.Weights) *frozenWeights {
	f := viewFrozen(w)
	for i, t := range w.Tensors() {
		if h, _ := t.Half(); h == nil {
			f.f32[i] = nil // the view's alias of the live values: set must copy them
			f.set(i, t.Data)
		}
	}
	return f
}

// viewFrozen reads w's values where they are, without a copy: float32 Data and BF16 bits as
// they are, F16 bits widened to float32 (the graph widens BF16 only). LoRA's frozen base.
func viewFrozen(w *model.Weights) *frozenWeights {
	ts := w.Tensors()
	f := &frozenWeights{names: make([]string, len(ts)), shapes: make([][]int, len(ts)),
		f32: make([][]float32, len(ts)), bf16: make([][]uint16, len(ts))}
	for i, t := range ts {
		f.names[i], f.shapes[i] = t.Name, append([]int(nil), t.Shape...)
		switch h, dt := t.Half(); {
		case h == nil:
			f.f32[i] = t.Data
		case dt == model.BF16:
			f.bf16[i] = h
		default:
			f.f32[i] = widenF16(h)
		}
	}
	return f
}

// widenF16 converts IEEE half-precision bits to float32, exactly.
func widenF16(h []uint16) []float32 {
	out := make([]float32, len(h))
	parallelBlocks(len(h), func(_, i0, i1 int) {
		for i := i0; i < i1; i++ {
			b := uint32(h[i])
			sign, exp, man := b>>15<<31, (b>>10)&0x1f, b&0x3ff
			var v float32
			switch exp {
			case 0: // zero or subnormal: man·2⁻²⁴
				v = float32(man) * 0x1p-24
				out[i] = math.Float32frombits(math.Float32bits(v) | sign)
				continue
			case 0x1f: // inf or NaN
				out[i] = math.Float32frombits(sign | 0xff<<23 | man<<13)
				continue
			}
			out[i] = math.Float32frombits(sign | (exp+112)<<23 | man<<13)
		}
	})
	return out
}

// set replaces tensor i's values with a copy of src.
func (f *frozenWeights) set(i int, src []float32) {
	exact := true
	for _, v := range src {
		if math.Float32bits(v)&0xffff != 0 {
			exact = false
			break
		}
	}
	if !exact {
		f.bf16[i] = nil
		if len(f.f32[i]) != len(src) {
			f.f32[i] = make([]float32, len(src))
		}
		copy(f.f32[i], src)
		return
	}
	f.f32[i] = nil
	if len(f.bf16[i]) != len(src) {
		f.bf16[i] = make([]uint16, len(src))
	}
	dst := f.bf16[i]
	parallelBlocks(len(src), func(_, i0, i1 int) {
		for j, v := range src[i0:i1] {
			dst[i0+j] = uint16(math.Float32bits(v) >> 16)
		}
	})
}

// fits reports whether w has the reference's tensors (names and sizes), as DPO needs.
func (f *frozenWeights) fits(w *model.Weights, what string) error {
	ts := w.Tensors()
	if len(ts) != len(f.names) {
		return fmt.Errorf("%s has %d tensors, the reference %d", what, len(ts), len(f.names))
	}
	for i, t := range ts {
		if t.Name != f.names[i] || t.Len() != f.size(i) {
			return fmt.Errorf("%s tensor %s %v does not fit the reference's %s %v", what, t.Name, t.Shape, f.names[i], f.shapes[i])
		}
	}
	return nil
}

func (f *frozenWeights) size(i int) int {
	if f.bf16[i] != nil {
		return len(f.bf16[i])
	}
	return len(f.f32[i])
}

// tensors returns float32 copies, for a checkpoint file.
func (f *frozenWeights) tensors() []*model.Tensor {
	out := make([]*model.Tensor, len(f.names))
	for i := range out {
		d := f.f32[i]
		if d == nil {
			d = make([]float32, len(f.bf16[i]))
			for j, b := range f.bf16[i] {
				d[j] = math.Float32frombits(uint32(b) << 16)
			}
		} else {
			d = append([]float32(nil), d...)
		}
		out[i] = &model.Tensor{Name: f.names[i], Shape: f.shapes[i], Data: d}
	}
	return out
}

// bytes is the memory the values take.
func (f *frozenWeights) bytes() int {
	n := 0
	for i := range f.names {
		n += 4*len(f.f32[i]) + 2*len(f.bf16[i])
	}
	return n
}
