package trainer

import (
	"math"
)

// LoRA inside the fused layer (layer.go): an adapted projection computes
//
//	y = x·Wᵀ + b + s·(drop(x)·Aᵀ)·Bᵀ,   u = drop(x)·Aᵀ  [rows, r]
//
// and its backward, with W frozen,
//
//	dB += s·dyᵀ·u,   du = s·dy·B,   dA += duᵀ·drop(x),   dx += drop'(du·A)
//
// where drop is inverted dropout (keep with probability 1-p, scale by 1/(1-p)) and drop' its
// mask applied to the gradient. u is kept per layer and projection from the forward to the
// backward (rows × r values, a few hundred KB at the 0.5B shape); drop(x) is not: x is kept
// (or recomputed) anyway, and the mask is regenerated from the run's seed.

// LoRA arena slots: u under the layer's owner (keepU+projection slot), the rest shared.
const (
	sLoraU  = 32 // + the projection's widening slot (wQ..wDown)
	sLoraDU = 48 // [rows, r] the backward's du (ownBack)
	sLoraXD = 49 // [rows, in] drop(x) (ownShared in the forward, ownBack in the backward)
	sLoraDX = 50 // [rows, in] du·A before the mask (ownBack)
)

// loraForward adds s·(drop(x)·Aᵀ)·Bᵀ into y ([R, out]) and keeps u for the backward.
func loraForward[T num](sp *layerSpec, lo *loraParams, x, y []T, R, in, out, slot int) {
	r := lo.a.shape[0]
	owner := ownShared
	if sp.keep {
		owner = sp.idx // the backward reads it; a checkpointed recompute rewrites the same values
	}
	u := buf[T](sp.ar, owner, sLoraU+slot, R*r)
	xd := x
	if lo.dropping(sp) {
		xd = buf[T](sp.ar, ownShared, sLoraXD, R*in)
		dropInto(xd, x, lo.dropout, dropKey(*lo.seed, sp.idx, slot))
	}
	A, B := valsOf(lo.a, (*[]T)(nil)), valsOf(lo.b, (*[]T)(nil))
	gemm(false, true, R, r, in, 1, xd, in, A, in, 0, u, r)
	gemm(false, true, R, out, r, T(lo.scale), u, r, B, r, 1, y, out)
}

// loraBackward adds the adapter's gradients into its sinks and its input gradient into dx, for
// the output gradient dy (rows ldy apart).
func loraBackward[T num](sp *layerSpec, lo *loraParams, x, dy []T, ldy int, dx []T, R, in, out, slot int) {
	r := lo.a.shape[0]
	s := T(lo.scale)
	u := buf[T](sp.ar, sp.idx, sLoraU+slot, R*r)
	A, B := valsOf(lo.a, (*[]T)(nil)), valsOf(lo.b, (*[]T)(nil))
	if dB := gradOf[T](lo.b); dB != nil {
		gemm(true, false, out, r, R, s, dy, ldy, u, r, 1, dB, r)
	}
	du := buf[T](sp.ar, ownBack, sLoraDU, R*r)
	gemm(false, false, R, r, out, s, dy, ldy, B, r, 0, du, r)
	dropping := lo.dropping(sp)
	key := dropKey(*lo.seed, sp.idx, slot)
	if dA := gradOf[T](lo.a); dA != nil {
		xd := x
		if dropping {
			xd = buf[T](sp.ar, ownBack, sLoraXD, R*in)
			dropInto(xd, x, lo.dropout, key)
		}
		gemm(true, false, r, in, R, 1, du, r, xd, in, 1, dA, in)
	}
	if !dropping {
		gemm(false, false, R, in, r, 1, du, r, A, in, 1, dx, in)
		return
	}
	dxd := buf[T](sp.ar, ownBack, sLoraDX, R*in)
	gemm(false, false, R, in, r, 1, du, r, A, in, 0, dxd, in)
	dropInto(dxd, dxd, lo.dropout, key)
	addInto(dx, dxd)
}

// dropping says whether this run applies dropout: in training graphs only, as PEFT's
// nn.Dropout does in train mode.
func (lo *loraParams) dropping(sp *layerSpec) bool {
	return lo.dropout > 0 && sp.keep && lo.seed != nil
}

// dropKey is the mask's key for one projection of one layer in one run.
func dropKey(seed uint64, layer, slot int) uint64 {
	return mix64(seed ^ mix64(uint64(layer)<<8|uint64(slot)))
}

// mix64 is splitmix64's finaliser: a bijection of uint64 whose outputs of consecutive inputs
// pass as independent uniform draws.
func mix64(z uint64) uint64 {
	z += 0x9e3779b97f4a7c15
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9
	z = (z ^ (z >> 27)) * 0x94d049bb133111eb
	return z ^ (z >> 31)
}

// dropInto sets dst = src ⊙ mask/(1-p) where element i is kept when its draw
// mix64(key+i) / 2⁶⁴ >= p: a mask that any pass regenerates from key alone. dst may be src.
func dropInto[T num](dst, src []T, p float64, key uint64) {
	// Kept when the draw is at least p·2⁶⁴, compared as integers.
	cut := uint64(math.Ldexp(p, 64))
	if p >= 1 {
		cut = math.MaxUint64
	}
	inv := T(1 / (1 - p))
	parallelBlocks(len(src), func(_, i0, i1 int) {
		for i := i0; i < i1; i++ {
			if mix64(key+uint64(i)) >= cut {
				dst[i] = src[i] * inv
			} else {
				dst[i] = 0
			}
		}
	})
}
