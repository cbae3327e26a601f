package model

import (
	"fmt"
	"math"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
)

// Model runs the forward pass. It holds no per-call state, so one Model serves any number of
// goroutines, each with its own Cache. Its weight matrices are float32 or, loaded by
// LoadModel from a BF16/F16 checkpoint, the checkpoint's half-precision bits, widened to
// float32 inside the matmul kernels; everything else (norms, biases, activations, the KV
// cache, sums) is float32 either way.
type Model struct {
	Config *Config
	// Threads bounds the goroutines one call uses; 0 means GOMAXPROCS.
	Threads int
	invFreq []float32
	embed   mat
	layers  []decoderLayer
	norm    []float32
	head    mat // the same matrix as embed when the embeddings are tied
	adapter *Adapter
}

// decoderLayer is Layer as the forward pass reads it.
type decoderLayer struct {
	inNorm, postNorm           []float32
	q, k, v, o, gate, up, down linear
}

// New prepares weights for inference. It shares w's memory: an update to w is an update to
// the model. Half-precision matrices (LoadModel's) stay half-precision.
func New(w *Weights) *Model {
	m := &Model{
		Config: w.Config, invFreq: RopeInvFreq(w.Config), embed: matOf(w.EmbedTokens),
		layers: make([]decoderLayer, len(w.Layers)), norm: w.Norm.Data, head: matOf(w.LMHead),
	}
	for i, l := range w.Layers {
		m.layers[i] = decoderLayer{
			inNorm: l.InputLayernorm.Data, postNorm: l.PostAttentionLayernorm.Data,
			q: linearOf(l.QProj), k: linearOf(l.KProj), v: linearOf(l.VProj), o: linearOf(l.OProj),
			gate: linearOf(l.GateProj), up: linearOf(l.UpProj), down: linearOf(l.DownProj),
		}
	}
	return m
}

// WithAdapter returns a Model that runs m's weights (shared, not copied) with a LoRA adapter
// applied to its projections: what a rollout worker swaps in when only the adapter changed.
// m itself is left as it is; nil detaches any adapter.
func (m *Model) WithAdapter(a *Adapter) (*Model, error) {
	out := *m
	out.layers = slices.Clone(m.layers)
	for i := range out.layers {
		l := &out.layers[i]
		for _, t := range LoRATargets {
			l.proj(t).lora = nil
		}
	}
	if a == nil {
		return &out, nil
	}
	if err := a.Fits(m.Config); err != nil {
		return nil, err
	}
	scale := float32(a.Config.Scale())
	for i, ad := range a.Layers {
		l := &out.layers[i]
		for t, p := range ad {
			l.proj(t).lora = &loraLinear{a: p.A.Data, b: p.B.Data, r: a.Config.Rank, scale: scale}
		}
	}
	out.adapter = a
	return &out, nil
}

// proj is the layer's projection by its checkpoint name (one of LoRATargets).
func (l *decoderLayer) proj(name string) *linear {
	switch name {
	case "q_proj":
		return &l.q
	case "k_proj":
		return &l.k
	case "v_proj":
		return &l.v
	case "o_proj":
		return &l.o
	case "gate_proj":
		return &l.gate
	case "up_proj":
		return &l.up
	}
	return &l.down
}

// Adapter is the LoRA adapter the model runs with, nil when none.
func (m *Model) Adapter() *Adapter { return m.adapter }

// WeightDType is the element type of the weight matrices: F32, or BF16/F16 when they are
// kept as the checkpoint stores them.
func (m *Model) WeightDType() DType { return m.head.dtype }

// WeightBytes is what one decode step streams from memory: every parameter once, at the size
// it is held in (the embedding's one row per token aside, a tied embedding is read once, as
// the lm_head).
func (m *Model) WeightBytes() int64 {
	n := m.head.bytes() + int64(len(m.norm))*4
	if !m.Config.TieWordEmbeddings {
		n += m.embed.bytes()
	}
	for _, l := range m.layers {
		n += int64(len(l.inNorm)+len(l.postNorm)) * 4
		for _, x := range []linear{l.q, l.k, l.v, l.o, l.gate, l.up, l.down} {
			n += x.w.bytes() + int64(len(x.bias))*4
		}
	}
	return n
}

// RopeInvFreq returns the head_dim/2 RoPE inverse frequencies, as transformers' default and
// llama3 RoPE initialisation compute them (in float32, like torch). Position p rotates pair
// (i, i+head_dim/2) by the angle float32(p)·inv[i]. The trainer's graph should use these.
func RopeInvFreq(c *Config) []float32 {
	half := c.HeadDim / 2
	inv := make([]float32, half)
	for i := range inv {
		exp := float32(2*i) / float32(c.HeadDim)
		inv[i] = float32(1.0 / math.Pow(c.RopeTheta, float64(exp)))
	}
	if rs := c.RopeScaling; rs != nil && rs.Type == "llama3" {
		old := float64(rs.OriginalMaxPositionEmbeddings)
		lowWavelen := old / rs.LowFreqFactor
		highWavelen := old / rs.HighFreqFactor
		for i, f := range inv {
			wavelen := 2 * math.Pi / float64(f)
			switch {
			case wavelen < highWavelen:
			case wavelen > lowWavelen:
				inv[i] = float32(float64(f) / rs.Factor)
			default:
				smooth := (old/wavelen - rs.LowFreqFactor) / (rs.HighFreqFactor - rs.LowFreqFactor)
				inv[i] = float32((1-smooth)*float64(f)/rs.Factor + smooth*float64(f))
			}
		}
	}
	return inv
}

// Cache is a preallocated KV cache for a batch of independent sequences. Every row keeps its
// own length, so sequences of different lengths share a batch without any padding (neither
// left nor right): a row's new tokens take positions Len[r], Len[r]+1, ... and attend only to
// that row's own cache, so a row's logits are the same alone or in any batch, and no
// attention mask or position-id bookkeeping leaks into callers.
type Cache struct {
	Batch, MaxLen int
	// Len is how many positions of each row are filled.
	Len []int
	// k and v per layer: [batch][kv_heads][max_len][head_dim].
	k, v [][]float32
}

// NewCache allocates a cache for batch rows of up to maxLen tokens each.
func (m *Model) NewCache(batch, maxLen int) *Cache {
	c := m.Config
	n := batch * c.NumKeyValueHeads * maxLen * c.HeadDim
	kc := &Cache{Batch: batch, MaxLen: maxLen, Len: make([]int, batch), k: make([][]float32, c.NumHiddenLayers), v: make([][]float32, c.NumHiddenLayers)}
	for i := range kc.k {
		kc.k[i] = make([]float32, n)
		kc.v[i] = make([]float32, n)
	}
	return kc
}

// Reset empties every row, keeping the memory.
func (kc *Cache) Reset() {
	for i := range kc.Len {
		kc.Len[i] = 0
	}
}

// scratch holds the activations of one Forward call.
type scratch struct {
	x, xn, q, k, v, attn, gate, up []float32
}

// Forward appends tokens[r] to row r of the cache (an empty slice leaves the row alone) and
// returns the logits of the new tokens: for each row, the last new token's logits ([vocab]),
// or with all set every new token's logits ([n*vocab], in order). Rows with no new tokens get
// nil.
func (m *Model) Forward(kc *Cache, tokens [][]int, all bool) ([][]float32, error) {
	hs, pick, rowOf, err := m.hidden(kc, tokens, all)
	if err != nil {
		return nil, err
	}
	out := make([][]float32, len(tokens))
	if len(pick) == 0 {
		return out, nil
	}
	v := m.Config.VocabSize
	logits := m.lmHead(hs, len(pick))
	if all {
		i := 0
		for r, toks := range tokens {
			if len(toks) > 0 {
				out[r] = logits[i*v : (i+len(toks))*v : (i+len(toks))*v]
				i += len(toks)
			}
		}
	} else {
		for i, t := range pick {
			out[rowOf[t]] = logits[i*v : (i+1)*v : (i+1)*v]
		}
	}
	return out, nil
}

// lmHead returns the logits of n final hidden states.
func (m *Model) lmHead(hs []float32, n int) []float32 {
	logits := make([]float32, n*m.Config.VocabSize)
	matmulMulti(m.threads(), hs, n, m.Config.HiddenSize, job{linear{w: m.head}, logits})
	return logits
}

// hidden runs the decoder over the new tokens and returns the final-normed hidden states
// ([len(pick)][hidden]) of the picked tokens: all of them, or each row's last. pick indexes
// the flattened new tokens (rows in order); rowOf maps such an index to its row.
func (m *Model) hidden(kc *Cache, tokens [][]int, all bool) (hs []float32, pick, rowOf []int, err error) {
	c := m.Config
	if len(tokens) > kc.Batch {
		return nil, nil, nil, fmt.Errorf("forward: %d rows for a cache of %d", len(tokens), kc.Batch)
	}
	// Flatten the new tokens of all rows into one activation matrix so every linear layer is
	// one matrix product over the whole batch.
	var ids, posOf []int
	for r, toks := range tokens {
		if kc.Len[r]+len(toks) > kc.MaxLen {
			return nil, nil, nil, fmt.Errorf("forward: row %d: %d cached + %d new tokens exceed the cache's %d positions", r, kc.Len[r], len(toks), kc.MaxLen)
		}
		for i, id := range toks {
			if id < 0 || id >= c.VocabSize {
				return nil, nil, nil, fmt.Errorf("forward: row %d: token id %d outside vocab of %d", r, id, c.VocabSize)
			}
			ids = append(ids, id)
			rowOf = append(rowOf, r)
			posOf = append(posOf, kc.Len[r]+i)
		}
	}
	T := len(ids)
	if T == 0 {
		return nil, nil, rowOf, nil
	}
	h, hd := c.HiddenSize, c.HeadDim
	qDim, kvDim := c.NumAttentionHeads*hd, c.NumKeyValueHeads*hd
	s := &scratch{
		x: make([]float32, T*h), xn: make([]float32, T*h),
		q: make([]float32, T*qDim), k: make([]float32, T*kvDim), v: make([]float32, T*kvDim),
		attn: make([]float32, T*qDim),
		gate: make([]float32, T*c.IntermediateSize), up: make([]float32, T*c.IntermediateSize),
	}
	for t, id := range ids {
		m.embed.widenRow(s.x[t*h:(t+1)*h], id)
	}
	cos, sin := m.ropeTables(posOf)
	threads := m.threads()
	eps := float32(c.RMSNormEps)
	for li := range m.layers {
		l := &m.layers[li]
		rmsNorm(s.xn, s.x, l.inNorm, T, h, eps)
		matmulMulti(threads, s.xn, T, h, job{l.q, s.q}, job{l.k, s.k}, job{l.v, s.v})
		applyRope(s.q, T, c.NumAttentionHeads, hd, cos, sin)
		applyRope(s.k, T, c.NumKeyValueHeads, hd, cos, sin)
		kCache, vCache := kc.k[li], kc.v[li]
		for t := 0; t < T; t++ {
			for g := 0; g < c.NumKeyValueHeads; g++ {
				off := ((rowOf[t]*c.NumKeyValueHeads+g)*kc.MaxLen + posOf[t]) * hd
				copy(kCache[off:off+hd], s.k[t*kvDim+g*hd:t*kvDim+(g+1)*hd])
				copy(vCache[off:off+hd], s.v[t*kvDim+g*hd:t*kvDim+(g+1)*hd])
			}
		}
		m.attention(threads, kc, li, s, T, rowOf, posOf)
		matmulMulti(threads, s.attn, T, qDim, job{l.o, s.xn})
		addInPlace(s.x, s.xn)
		rmsNorm(s.xn, s.x, l.postNorm, T, h, eps)
		matmulMulti(threads, s.xn, T, h, job{l.gate, s.gate}, job{l.up, s.up})
		parallelFor(threads, len(s.gate), 4096, func(lo, hi int) { swiglu(s.gate[lo:hi], s.up[lo:hi]) })
		matmulMulti(threads, s.gate, T, c.IntermediateSize, job{l.down, s.xn})
		addInPlace(s.x, s.xn)
	}
	for r, toks := range tokens {
		kc.Len[r] += len(toks)
	}
	// Only the positions whose logits are wanted go through the final norm and lm_head:
	// a prompt's prefill needs just its last token.
	for t := range T {
		if all || t == T-1 || rowOf[t+1] != rowOf[t] {
			pick = append(pick, t)
		}
	}
	hs = make([]float32, len(pick)*h)
	for i, t := range pick {
		copy(hs[i*h:(i+1)*h], s.x[t*h:(t+1)*h])
	}
	rmsNorm(hs, hs, m.norm, len(pick), h, eps)
	return hs, pick, rowOf, nil
}

func (m *Model) threads() int {
	if m.Threads > 0 {
		return m.Threads
	}
	return runtime.GOMAXPROCS(0)
}

// ropeTables returns cos and sin per token, [T][head_dim/2], computed as torch does: the
// angle pos·inv_freq rounded to float32 before cos and sin.
func (m *Model) ropeTables(pos []int) (cos, sin []float32) {
	half := len(m.invFreq)
	cos = make([]float32, len(pos)*half)
	sin = make([]float32, len(pos)*half)
	for t, p := range pos {
		for i, f := range m.invFreq {
			a := float64(float32(p) * f)
			cos[t*half+i] = float32(math.Cos(a))
			sin[t*half+i] = float32(math.Sin(a))
		}
	}
	return cos, sin
}

// applyRope rotates each head with HF's rotate_half convention: element i pairs with
// element i+head_dim/2, not with its neighbour.
func applyRope(x []float32, T, heads, hd int, cos, sin []float32) {
	half := hd / 2
	for t := range T {
		c := cos[t*half : (t+1)*half]
		s := sin[t*half : (t+1)*half]
		for hh := range heads {
			v := x[(t*heads+hh)*hd : (t*heads+hh+1)*hd]
			a, b := v[:half], v[half:]
			for i := range half {
				x1, x2 := a[i], b[i]
				a[i] = x1*c[i] - x2*s[i]
				b[i] = x2*c[i] + x1*s[i]
			}
		}
	}
}

// rmsNorm matches HF's LlamaRMSNorm: x / sqrt(mean(x²) + eps), then times the weight.
func rmsNorm(dst, x, w []float32, T, h int, eps float32) {
	for t := range T {
		row := x[t*h : (t+1)*h]
		var ss float64
		for _, v := range row {
			ss += float64(v) * float64(v)
		}
		scale := float32(1 / math.Sqrt(ss/float64(h)+float64(eps)))
		d := dst[t*h : (t+1)*h]
		for i, v := range row {
			d[i] = w[i] * (v * scale)
		}
	}
}

func addInPlace(dst, src []float32) {
	src = src[:len(dst)]
	for i := range dst {
		dst[i] += src[i]
	}
}

// attention fills s.attn with softmax(q·kᵀ/√d)·v per token and head, each token attending to
// its own row's cache positions 0..pos (causal). Work is split over (token, head) pairs.
func (m *Model) attention(threads int, kc *Cache, li int, s *scratch, T int, rowOf, posOf []int) {
	c := m.Config
	hd, heads, kvHeads := c.HeadDim, c.NumAttentionHeads, c.NumKeyValueHeads
	group := heads / kvHeads
	scale := float32(1 / math.Sqrt(float64(hd)))
	kCache, vCache := kc.k[li], kc.v[li]
	qDim := heads * hd
	maxPos := 0
	for _, p := range posOf {
		maxPos = max(maxPos, p+1)
	}
	// A (token, head) pair costs about 4·positions·head_dim flops; a goroutine hand-off costs
	// more than a short decode's whole attention, so chunks carry at least ~256k flops.
	minChunk := max(1, (1<<16)/(maxPos*hd))
	parallelFor(threads, T*heads, minChunk, func(lo, hi int) {
		scores := make([]float32, maxPos)
		for i := lo; i < hi; i++ {
			t, hh := i/heads, i%heads
			g := hh / group
			n := posOf[t] + 1
			base := (rowOf[t]*kvHeads + g) * kc.MaxLen * hd
			q := s.q[t*qDim+hh*hd : t*qDim+(hh+1)*hd]
			key := func(j int) []float32 { return kCache[base+j*hd : base+(j+1)*hd] }
			val := func(j int) []float32 { return vCache[base+j*hd : base+(j+1)*hd] }
			j := 0
			for ; j+4 <= n; j += 4 {
				scores[j], scores[j+1], scores[j+2], scores[j+3] = dot4(q, key(j), key(j+1), key(j+2), key(j+3))
			}
			for ; j < n; j++ {
				scores[j] = dot(key(j), q)
			}
			mx := float32(math.Inf(-1))
			for j := range n {
				scores[j] *= scale
				mx = max(mx, scores[j])
			}
			for j := range n {
				scores[j] -= mx
			}
			expInPlace(scores[:n])
			var sum float32
			for _, e := range scores[:n] {
				sum += e
			}
			o := s.attn[t*qDim+hh*hd : t*qDim+(hh+1)*hd]
			clear(o)
			inv := 1 / sum
			j = 0
			for ; j+4 <= n; j += 4 {
				w := [4]float32{scores[j] * inv, scores[j+1] * inv, scores[j+2] * inv, scores[j+3] * inv}
				axpy4(o, val(j), val(j+1), val(j+2), val(j+3), &w)
			}
			for ; j < n; j++ {
				axpy(o, val(j), scores[j]*inv)
			}
		}
	})
}

// parallelFor runs fn over [0, n) on up to threads goroutines (the caller's among them).
// The range is cut into several chunks per goroutine, of at least minChunk, handed out
// through an atomic counter: on a shared machine a descheduled thread then delays only the
// chunk it holds, where an even static split would make every region wait for it.
func parallelFor(threads, n, minChunk int, fn func(lo, hi int)) {
	parallelForChunks(threads, n, minChunk, 0, fn)
}

// parallelForChunks is parallelFor cutting the range into at least chunks chunks (still of
// at least minChunk).
func parallelForChunks(threads, n, minChunk, chunks int, fn func(lo, hi int)) {
	if n <= 0 {
		return
	}
	workers := min(threads, (n+minChunk-1)/minChunk)
	if workers <= 1 {
		fn(0, n)
		return
	}
	chunks = min(max(chunks, workers*4), (n+minChunk-1)/minChunk)
	var next atomic.Int64
	work := func() {
		for {
			i := int(next.Add(1)) - 1
			if i >= chunks {
				return
			}
			fn(i*n/chunks, (i+1)*n/chunks)
		}
	}
	var wg sync.WaitGroup
	for range workers - 1 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			work()
		}()
	}
	work()
	wg.Wait()
}

// linear is Linear as the forward pass reads it: out = x·wᵀ + bias (bias nil when absent).
type linear struct {
	w    mat
	bias []float32
	lora *loraLinear // nil without an adapter on this projection
}

// loraLinear is one projection's adapter as the forward pass reads it: out += scale·(x·Aᵀ)·Bᵀ.
type loraLinear struct {
	a, b  []float32 // A [r, in], B [out, r]
	r     int
	scale float32
}

func linearOf(l Linear) linear {
	lin := linear{w: matOf(l.Weight)}
	if l.Bias != nil {
		lin.bias = l.Bias.Data
	}
	return lin
}

// matmulChunkBytes caps the weight bytes of one chunk of a matmul's parallel region: a
// decode step's big matrices (the lm_head is 272 MB in BF16 at the 0.5B shape) would
// otherwise be cut into a few chunks per thread, and on a shared machine a descheduled
// thread holding one makes the other wait out the whole chunk. Measured at the 0.5B shape,
// batch 1, under a load average of 5-8 on 2 cores: best of 5 rounds 18.3 against 17.7
// tokens/s, and up to 1.4x in the most loaded rounds.
const matmulChunkBytes = 1 << 20

// job is one linear layer of a fused matmul: out[T, Out] = x·wᵀ + bias.
type job struct {
	l   linear
	out []float32
}

// matmulMulti runs several linear layers that read the same input as one parallel region,
// splitting their concatenated output columns across goroutines (q/k/v and gate/up share
// an input, so this is the fusion without copying weights).
func matmulMulti(threads int, x []float32, T, K int, jobs ...job) {
	total := 0
	for _, j := range jobs {
		if j.l.w.cols != K {
			panic(fmt.Sprintf("matmul: %s has %d inputs, activation has %d", j.l.w.name, j.l.w.cols, K))
		}
		total += j.l.w.rows
	}
	// Column chunks small enough to balance, large enough that a chunk's weight rows stream.
	var bytes int64
	for _, j := range jobs {
		bytes += j.l.w.bytes()
	}
	parallelForChunks(threads, total, 16, int(bytes/matmulChunkBytes), func(lo, hi int) {
		base := 0
		for _, j := range jobs {
			n := j.l.w.rows
			a, b := max(lo, base), min(hi, base+n)
			if a < b {
				matmulRange(j.out, x, &j.l.w, j.l.bias, T, n, K, a-base, b-base)
			}
			base += n
		}
	})
	for _, j := range jobs {
		if j.l.lora != nil {
			loraAdd(threads, j.l.lora, x, T, K, j.out, j.l.w.rows)
		}
	}
}

// loraAdd adds an adapter's low-rank product to out[T, N]: u = scale·x·Aᵀ ([T, r], r small)
// then out += u·Bᵀ, so the base matrix is never widened or copied.
func loraAdd(threads int, l *loraLinear, x []float32, T, K int, out []float32, N int) {
	r := l.r
	u := make([]float32, T*r)
	for t := range T {
		xr := x[t*K : (t+1)*K]
		for k := range r {
			u[t*r+k] = l.scale * dot(l.a[k*K:(k+1)*K], xr)
		}
	}
	parallelFor(threads, N, 256, func(lo, hi int) {
		for t := range T {
			ur, o := u[t*r:(t+1)*r], out[t*N:(t+1)*N]
			for n := lo; n < hi; n++ {
				o[n] += dot(l.b[n*r:(n+1)*r], ur)
			}
		}
	})
}

// matmulRange computes out[t][j] for j in [j0, j1) and all t. Decode batches (small T) take
// weight rows two at a time and run them against every activation row while the pair is in
// L1; prefill (large T) takes weight rows in L2-sized blocks reused across the activation rows.
func matmulRange(out, x []float32, w *mat, bias []float32, T, N, K, j0, j1 int) {
	if T == 1 {
		// A batch-1 decode step: one pass over the weight rows, run as one stream.
		o := out[j0:j1]
		w.dotRows(o, j0, x[:K])
		if bias != nil {
			for j := range o {
				o[j] += bias[j0+j]
			}
		}
		return
	}
	block := 32
	if T <= 16 {
		block = 2
	}
	for jb := j0; jb < j1; jb += block {
		je := min(jb+block, j1)
		t := 0
		for ; t+4 <= T; t += 4 {
			x0 := x[t*K : (t+1)*K]
			x1 := x[(t+1)*K : (t+2)*K]
			x2 := x[(t+2)*K : (t+3)*K]
			x3 := x[(t+3)*K : (t+4)*K]
			j := jb
			for ; j+2 <= je; j += 2 {
				var o [8]float32
				w.dot2x4(j, x0, x1, x2, x3, &o)
				if bias != nil {
					for r := range 4 {
						o[r] += bias[j]
						o[4+r] += bias[j+1]
					}
				}
				for r := range 4 {
					out[(t+r)*N+j] = o[r]
					out[(t+r)*N+j+1] = o[4+r]
				}
			}
			for ; j < je; j++ {
				s0, s1, s2, s3 := w.dot4(j, x0, x1, x2, x3)
				if bias != nil {
					b := bias[j]
					s0, s1, s2, s3 = s0+b, s1+b, s2+b, s3+b
				}
				out[t*N+j] = s0
				out[(t+1)*N+j] = s1
				out[(t+2)*N+j] = s2
				out[(t+3)*N+j] = s3
			}
		}
		for ; t < T; t++ {
			xr := x[t*K : (t+1)*K]
			for j := jb; j < je; j++ {
				s := w.dot(j, xr)
				if bias != nil {
					s += bias[j]
				}
				out[t*N+j] = s
			}
		}
	}
}
