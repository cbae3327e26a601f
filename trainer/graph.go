package trainer

import (
	"errors"
	"fmt"
	"math"
	"runtime"
	"sync"

	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"

	"github.com/autoif/autoif/model"
)

// Seq is one sequence the graph scores: the prompt conditions, the completion's tokens are
// scored.
type Seq struct {
	Prompt, Completion []int
}

// graph is the gorgonia expression graph of the model from model/ (see model/config.go for the
// forward definition) for one padded batch shape: S sequences of T positions (right-padded),
// M scored completion tokens. It returns each sequence's summed completion log-prob and the
// gradient of a loss of those log-probs: the loss is a lossOp wrapping a plain Go function
// (loss.go) that returns the loss and its derivative per log-prob, so the DPO math reads like
// TRL's dpo_loss instead of a tangle of graph nodes.
//
// The graph is a chain of fused ops: the batch's embeddings (gathered in run, so the input x0
// is a plain matrix), one op per decoder layer (layer.go), the head (final norm, lm_head and
// the scored tokens' log-probs, head.go), the loss. gorgonia derives the backward chain from
// the ops' own backward ops; the weights are not graph nodes but params the ops read, whose
// gradients the backward ops add straight into the trainer's accumulators, and run scatters
// x0's gradient into the embedding's. Each op is gradient-checked in gradcheck_test.go.
// gorgonia's generic ops were tried first: Reshape aliases its input while the compiler
// treats it as a fresh buffer (an in-place op after it overwrote a bound weight),
// InverseSqrt's gradient is wrong, ByIndices' gradient along the last axis is wrong and along
// the first a dense vocab-sized tensor per run, and the model spent most of its time
// transposing and copying.
type graph struct {
	S, T, M, D int
	dt         tensor.Dtype
	g          *G.ExprGraph
	vm         G.VM
	params     []*param // parallel to Weights.Tensors()
	// trainable are the params whose gradients run adds up: params, or with a LoRA adapter
	// the adapter's (parallel to Adapter.Tensors()) while params stay frozen.
	trainable []*param
	embed     *param
	x0        *G.Node
	ar        *arena
	*batchState
	// f64 holds the float64 copies of the trainable weights when dt is Float64 (gradient
	// checks only), last the float64 gradients of the last run.
	f64, last [][]float64
	// withGrad is false for a forward-only graph (the frozen reference).
	withGrad bool
}

// batchState is what the loss ops read during a run: the batch and its loss function. The ops
// point at it rather than at the graph: gorgonia's tape machine carries a finalizer, and a
// reference cycle through an object with a finalizer is never collected (an op pointing back
// at the graph that owns the machine kept every discarded graph's activations alive,
// hundreds of MB per batch shape).
type batchState struct {
	dt    tensor.Dtype
	M     int
	loss  lossFunc
	cur   *packed
	logps []float64 // per-sequence log-probs of the last run
	// costVal receives the loss, dx0 the gradient of the embeddings (G.Read keeps pointers to
	// them, so they live here too).
	costVal, dx0 G.Value
}

// graphOptions shape newGraph.
type graphOptions struct {
	dt       tensor.Dtype
	withGrad bool
	// checkpoint recomputes each decoder layer's forward in its backward instead of keeping
	// its internals (activation checkpointing).
	checkpoint bool
	// headChunk is the scored rows per lm_head block (0: defaultHeadChunk).
	headChunk int
	// arena holds the activations and scratch; nil gives the graph its own.
	arena *arena
	// vals, when set, supplies the weights' values (the frozen reference, or the frozen base
	// under a LoRA adapter; w gives the shapes).
	vals *frozenWeights
	// adapter, when set, adds a LoRA adapter to the projections it targets; a graph with a
	// backward then trains the adapter only (its tensors' own float32 slices, as for w).
	adapter *model.Adapter
	// dropSeed is the adapter's dropout seed for the next run (training graphs only).
	dropSeed *uint64
}

// buildGraph builds the graph for shape (S, T, M). With dt Float32 the ops read the weights'
// own float32 slices, so an optimiser step on the weights is seen by the next run without
// copying; Float64 copies them (for finite-difference checks).
func buildGraph(w *model.Weights, S, T, M int, dt tensor.Dtype) (*graph, error) {
	return newGraph(w, S, T, M, graphOptions{dt: dt, withGrad: true})
}

// buildForwardGraph builds a graph without the backward pass.
func buildForwardGraph(w *model.Weights, S, T, M int) (*graph, error) {
	return newGraph(w, S, T, M, graphOptions{dt: tensor.Float32})
}

// buildMu serialises graph construction: gorgonia's is not goroutine-safe, and a step builds
// the reference's graph while it builds (or runs) the policy's.
var buildMu sync.Mutex

func newGraph(w *model.Weights, S, T, M int, o graphOptions) (gr *graph, err error) {
	buildMu.Lock()
	defer buildMu.Unlock()
	defer func() {
		// gorgonia reports some shape errors by panicking.
		if r := recover(); r != nil {
			err = fmt.Errorf("build graph S=%d T=%d M=%d: %v", S, T, M, r)
		}
	}()
	c := w.Config
	dt := o.dt
	H, KV, hd, D := c.NumAttentionHeads, c.NumKeyValueHeads, c.HeadDim, c.HiddenSize
	N := S * T
	ar := o.arena
	if ar == nil {
		ar = newArena()
	}
	g := G.NewGraph()
	gr = &graph{S: S, T: T, M: M, D: D, dt: dt, g: g, withGrad: o.withGrad, batchState: &batchState{dt: dt, M: M}}
	paramOf := map[*model.Tensor]*param{}
	// newParam is a param over t's values (src when not nil), a float64 copy in a float64
	// graph.
	newParam := func(t *model.Tensor, src []float32, bf16 []uint16, trainable bool) *param {
		p := &param{shape: t.Shape}
		switch {
		case dt == tensor.Float32:
			p.f32, p.bf16 = src, bf16
		default:
			f := make([]float64, max(len(src), len(bf16)))
			for i, v := range src {
				f[i] = float64(v)
			}
			for i, b := range bf16 {
				f[i] = float64(math.Float32frombits(uint32(b) << 16))
			}
			if trainable {
				gr.f64 = append(gr.f64, f)
			}
			p.f64 = f
		}
		paramOf[t] = p
		return p
	}
	for i, t := range w.Tensors() {
		src, bf16 := t.Data, []uint16(nil)
		if o.vals != nil {
			src, bf16 = o.vals.f32[i], o.vals.bf16[i]
		} else if h, _ := t.Half(); h != nil {
			return nil, fmt.Errorf("build graph: tensor %s is half-precision; the trainer reads frozen half weights through a frozen view", t.Name)
		}
		gr.params = append(gr.params, newParam(t, src, bf16, o.adapter == nil))
	}
	if o.adapter != nil {
		if err := o.adapter.Fits(c); err != nil {
			return nil, fmt.Errorf("build graph: %w", err)
		}
		for _, t := range o.adapter.Tensors() {
			gr.trainable = append(gr.trainable, newParam(t, t.Data, nil, true))
		}
	} else {
		gr.trainable = gr.params
	}
	var adapted map[string]*model.LoRA
	lin := func(l model.Linear, target string) linParams {
		lp := linParams{w: paramOf[l.Weight]}
		if l.Bias != nil {
			lp.b = paramOf[l.Bias]
		}
		if a := adapted[target]; a != nil {
			lp.lora = &loraParams{a: paramOf[a.A], b: paramOf[a.B], scale: o.adapter.Config.Scale(),
				dropout: o.adapter.Config.Dropout, seed: o.dropSeed}
		}
		return lp
	}
	must := func(n *G.Node, err error) *G.Node {
		if err != nil {
			panic(err)
		}
		return n
	}
	attn := newAttnSpec(S, T, H, KV, hd, model.RopeInvFreq(c))
	gr.embed = paramOf[w.EmbedTokens]
	gr.x0, gr.ar = G.NewMatrix(g, dt, G.WithShape(N, D), G.WithName("x0")), ar
	x := gr.x0
	for li := range w.Layers {
		l := &w.Layers[li]
		if o.adapter != nil {
			adapted = o.adapter.Layers[li]
		}
		x = must(layerOp(&layerSpec{
			idx: li, inNorm: paramOf[l.InputLayernorm], postNorm: paramOf[l.PostAttentionLayernorm],
			q: lin(l.QProj, "q_proj"), k: lin(l.KProj, "k_proj"), v: lin(l.VProj, "v_proj"), o: lin(l.OProj, "o_proj"),
			gate: lin(l.GateProj, "gate_proj"), up: lin(l.UpProj, "up_proj"), down: lin(l.DownProj, "down_proj"),
			attn: attn, eps: c.RMSNormEps, D: D, I: c.IntermediateSize, qw: H * hd, kvw: KV * hd,
			checkpoint: o.checkpoint, keep: o.withGrad, ar: ar,
		}, x))
	}
	head := w.LMHead
	if head == nil || c.TieWordEmbeddings { // tied: lm_head is embed_tokens
		head = w.EmbedTokens
	}
	elem := 4
	if dt == tensor.Float64 {
		elem = 8
	}
	chunk := o.headChunk
	if chunk <= 0 {
		chunk = defaultHeadChunk(c.VocabSize, elem)
	}
	tok := must(headOp(&headSpec{norm: paramOf[w.Norm], head: paramOf[head], eps: c.RMSNormEps, D: D, V: c.VocabSize,
		chunk: chunk, st: gr.batchState, ar: ar}, x)) // log p(token) per scored slot
	// The per-sequence sums happen inside lossOp, in Go: a selection-matrix product would
	// multiply one sequence's NaN by another's zero weight and poison the whole batch.
	cost := must(G.ApplyOp(lossOp{gr.batchState}, tok))
	G.Read(cost, &gr.costVal)
	if !o.withGrad {
		gr.vm = G.NewTapeMachine(g)
		return gr, nil
	}
	dx0, err := G.Grad(cost, gr.x0)
	if err != nil {
		return nil, fmt.Errorf("build graph: gradients: %w", err)
	}
	G.Read(dx0[0], &gr.dx0)
	gr.vm = G.NewTapeMachine(g)
	if dt == tensor.Float64 {
		gr.last = make([][]float64, len(gr.trainable))
		for i, f := range gr.f64 {
			gr.last[i] = make([]float64, len(f))
		}
	}
	return gr, nil
}

// packed is one batch laid out for a graph of shape (S, T, M).
type packed struct {
	S               int
	ids, rows, toks []int
	seqOf           []int     // [M]: the sequence scored token m belongs to, -1 for padding
	weight          []float64 // [M]: its weight in the sequence's log-prob (1, or 1/len)
}

// seqLogps sums token log-probs into per-sequence log-probs.
func (p *packed) seqLogps(tok []float64) []float64 {
	out := make([]float64, p.S)
	for m, s := range p.seqOf {
		if s >= 0 {
			out[s] += p.weight[m] * tok[m]
		}
	}
	return out
}

// graphShape returns the padded shape for seqs: T and M rounded up so that batches of
// similar lengths share a compiled graph.
func graphShape(seqs []Seq) (T, M int) {
	for _, s := range seqs {
		T = max(T, len(s.Prompt)+len(s.Completion)-1)
		M += len(s.Completion)
	}
	return roundUp(T, 8), roundUp(M, 16)
}

func roundUp(n, k int) int { return (n + k - 1) / k * k }

// pack lays seqs out for a graph of shape (len(seqs)..S, T, M). weights[s] scales sequence
// s's token log-probs (1 for a sum, 1/len for a length-normalised mean). Padding tokens are 0
// and padding scored slots have weight 0.
func pack(seqs []Seq, weights []float64, S, T, M, vocab int) (*packed, error) {
	p := &packed{S: S, ids: make([]int, S*T), rows: make([]int, M), toks: make([]int, M), seqOf: make([]int, M), weight: make([]float64, M)}
	m := 0
	for s, q := range seqs {
		if len(q.Completion) == 0 {
			continue // padding row: scores nothing
		}
		if len(q.Prompt) == 0 {
			return nil, fmt.Errorf("pack: sequence %d has an empty prompt", s)
		}
		full := append(append([]int(nil), q.Prompt...), q.Completion...)
		full = full[:len(full)-1]
		if len(full) > T {
			return nil, fmt.Errorf("pack: sequence %d has %d positions, graph has %d", s, len(full), T)
		}
		for t, id := range full {
			if id < 0 || id >= vocab {
				return nil, fmt.Errorf("pack: sequence %d: token id %d outside vocab of %d", s, id, vocab)
			}
			p.ids[s*T+t] = id
		}
		for j, tok := range q.Completion {
			if tok < 0 || tok >= vocab {
				return nil, fmt.Errorf("pack: sequence %d: token id %d outside vocab of %d", s, tok, vocab)
			}
			p.rows[m] = s*T + len(q.Prompt) - 1 + j
			p.toks[m] = tok
			p.seqOf[m], p.weight[m] = s, weights[s]
			m++
		}
	}
	if m > M {
		return nil, errors.New("pack: more scored tokens than the graph holds")
	}
	for ; m < M; m++ {
		p.seqOf[m] = -1
	}
	return p, nil
}

// run evaluates the graph on p with loss, adds the gradients of the trainable parameters into
// grads (parallel to trainable; nil skips them) and returns the per-sequence log-probs and the
// loss.
func (gr *graph) run(p *packed, loss lossFunc, grads [][]float32) ([]float64, float64, error) {
	gr.loss, gr.cur = loss, p
	if gr.withGrad {
		for i, pr := range gr.trainable {
			switch {
			case gr.last != nil:
				clear(gr.last[i])
				pr.grad64 = gr.last[i]
			case grads != nil:
				pr.grad32 = grads[i]
			default:
				pr.grad32 = nil
			}
		}
	}
	var x0 *tensor.Dense
	if gr.dt == tensor.Float64 {
		x0 = denseOf[float64](gr.ar, ownInput, 0, len(p.ids), gr.D)
		gatherRows(gr.embed, p.ids, data[float64](x0), gr.D)
	} else {
		x0 = denseOf[float32](gr.ar, ownInput, 0, len(p.ids), gr.D)
		gatherRows(gr.embed, p.ids, data[float32](x0), gr.D)
	}
	if err := G.Let(gr.x0, x0); err != nil {
		return nil, 0, fmt.Errorf("graph input x0: %w", err)
	}
	gr.vm.Reset()
	if err := gr.vm.RunAll(); err != nil {
		return nil, 0, fmt.Errorf("graph run: %w", err)
	}
	logps := gr.logps
	cost := toFloat64(gr.costVal.Data())[0]
	if !gr.withGrad {
		return logps, cost, nil
	}
	switch d := gr.dx0.Data().(type) {
	case []float32:
		scatterRows(gr.embed.grad32, p.ids, d, gr.D)
	case []float64:
		scatterRows(gr.embed.grad64, p.ids, d, gr.D)
		if grads != nil {
			for i, g := range gr.last {
				for j, v := range g {
					grads[i][j] += float32(v)
				}
			}
		}
	}
	return logps, cost, nil
}

// gatherRows sets x's rows to the embedding rows of ids.
func gatherRows[T num](e *param, ids []int, x []T, D int) {
	var scratch []T
	for n, id := range ids {
		copy(x[n*D:(n+1)*D], rowsOf(e, id, id+1, &scratch))
	}
}

// scatterRows adds dx's rows into the embedding gradient at ids (nil: none wanted). Workers
// own column ranges, so repeated ids never race.
func scatterRows[T num](de []T, ids []int, dx []T, D int) {
	if de == nil {
		return
	}
	splitBlocks(D, len(dx), func(_, c0, c1 int) {
		for n, id := range ids {
			dst, src := de[id*D+c0:id*D+c1], dx[n*D+c0:n*D+c1]
			for i, v := range src {
				dst[i] += v
			}
		}
	})
}

// gradsF64 returns the parameter gradients of the last run of a Float64 graph (checks only).
func (gr *graph) gradsF64() ([][]float64, error) {
	if gr.last == nil {
		return nil, errors.New("gradsF64: not a float64 graph, or not run")
	}
	return gr.last, nil
}

func makeTensor(dt tensor.Dtype, shape []int, data []float64) tensor.Tensor {
	if dt == tensor.Float64 {
		return tensor.New(tensor.WithShape(shape...), tensor.WithBacking(append([]float64(nil), data...)))
	}
	f := make([]float32, len(data))
	for i, v := range data {
		f[i] = float32(v)
	}
	return tensor.New(tensor.WithShape(shape...), tensor.WithBacking(f))
}

func toFloat64(data any) []float64 {
	switch d := data.(type) {
	case []float32:
		out := make([]float64, len(d))
		for i, v := range d {
			out[i] = float64(v)
		}
		return out
	case []float64:
		return append([]float64(nil), d...)
	case float32:
		return []float64{float64(d)}
	case float64:
		return []float64{d}
	}
	panic(fmt.Sprintf("unexpected gorgonia value %T", data))
}

// release frees an evicted graph now. The tape machine's finalizer (it frees CUDA memory,
// which a CPU graph has none of) would keep the machine, and through it every activation of
// the graph, alive for one more collection; dropping it after Close lets one collection free
// it all, so the heap does not balloon while shapes come and go.
func (gr *graph) release() {
	gr.vm.Close()
	runtime.SetFinalizer(gr.vm, nil)
	gr.cur, gr.loss, gr.logps = nil, nil, nil
}
