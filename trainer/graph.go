package trainer

import (
	"errors"
	"fmt"
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
// The layers are the fused ops of fused.go and attention.go; gorgonia's own ops on the path
// are the embedding and scored-row gathers (ByIndices along axis 0 — along the last axis its
// gradient is wrong) and the residual Adds. Each is gradient-checked in gradcheck_test.go.
// gorgonia's generic ops were tried first: Reshape aliases its input while the compiler
// treats it as a fresh buffer (an in-place op after it overwrote a bound weight),
// InverseSqrt's gradient is wrong, and the model spent most of its time transposing and
// copying.
type graph struct {
	S, T, M int
	dt      tensor.Dtype
	g       *G.ExprGraph
	vm      G.VM
	params  []*G.Node // parallel to Weights.Tensors()
	grads   G.Nodes
	// Per-batch inputs.
	ids, rows *G.Node
	*batchState
	// f64 holds the float64 copies of the weights when dt is Float64 (gradient checks only),
	// last the float64 gradients of the last run.
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
	loss  lossFunc
	cur   *packed
	logps []float64 // per-sequence log-probs of the last run
	// costVal receives the loss (G.Read keeps a pointer to it, so it lives here too).
	costVal G.Value
}

// buildGraph builds the graph for shape (S, T, M). With dt Float32 the parameter nodes alias
// the weights' own float32 slices, so an optimiser step on the weights is seen by the next
// run without copying; Float64 copies them (for finite-difference checks).
func buildGraph(w *model.Weights, S, T, M int, dt tensor.Dtype) (*graph, error) {
	return newGraph(w, S, T, M, dt, true)
}

// buildForwardGraph builds a graph without the backward pass, for the reference policy.
func buildForwardGraph(w *model.Weights, S, T, M int) (*graph, error) {
	return newGraph(w, S, T, M, tensor.Float32, false)
}

// buildMu serialises graph construction: gorgonia's is not goroutine-safe, and a step builds
// the reference's graph while it builds (or runs) the policy's.
var buildMu sync.Mutex

func newGraph(w *model.Weights, S, T, M int, dt tensor.Dtype, withGrad bool) (gr *graph, err error) {
	buildMu.Lock()
	defer buildMu.Unlock()
	defer func() {
		// gorgonia reports some shape errors by panicking.
		if r := recover(); r != nil {
			err = fmt.Errorf("build graph S=%d T=%d M=%d: %v", S, T, M, r)
		}
	}()
	c := w.Config
	H, KV, hd := c.NumAttentionHeads, c.NumKeyValueHeads, c.HeadDim
	N := S * T
	g := G.NewGraph()
	gr = &graph{S: S, T: T, M: M, dt: dt, g: g, withGrad: withGrad, batchState: &batchState{dt: dt}}
	bs := gr.batchState

	param := func(t *model.Tensor) *G.Node {
		var backing any
		if dt == tensor.Float32 {
			backing = t.Data
		} else {
			f := make([]float64, len(t.Data))
			for i, v := range t.Data {
				f[i] = float64(v)
			}
			gr.f64 = append(gr.f64, f)
			backing = f
		}
		val := tensor.New(tensor.WithShape(t.Shape...), tensor.WithBacking(backing))
		n := G.NodeFromAny(g, val, G.WithName(t.Name))
		gr.params = append(gr.params, n)
		return n
	}
	nodeOf := map[*model.Tensor]*G.Node{}
	for _, t := range w.Tensors() {
		nodeOf[t] = param(t)
	}
	must := func(n *G.Node, err error) *G.Node {
		if err != nil {
			panic(err)
		}
		return n
	}
	linear := func(x *G.Node, l model.Linear) *G.Node {
		var b *G.Node
		if l.Bias != nil {
			b = nodeOf[l.Bias]
		}
		return must(linearOp(x, nodeOf[l.Weight], b))
	}
	rms := func(x *G.Node, wt *model.Tensor) *G.Node { return must(rmsNormOp(x, nodeOf[wt], c.RMSNormEps)) }
	attn := newAttnSpec(S, T, H, KV, hd, model.RopeInvFreq(c))

	gr.ids = G.NewVector(g, tensor.Int, G.WithShape(N), G.WithName("ids"))
	gr.rows = G.NewVector(g, tensor.Int, G.WithShape(M), G.WithName("rows"))

	x := must(G.ByIndices(nodeOf[w.EmbedTokens], gr.ids, 0)) // [N, D]
	for li := range w.Layers {
		l := &w.Layers[li]
		h := rms(x, l.InputLayernorm)
		a := must(attentionOp(attn, linear(h, l.QProj), linear(h, l.KProj), linear(h, l.VProj)))
		x = must(G.Add(x, linear(a, l.OProj)))
		h = rms(x, l.PostAttentionLayernorm)
		x = must(G.Add(x, linear(must(swigluOp(linear(h, l.GateProj), linear(h, l.UpProj))), l.DownProj)))
	}
	x = rms(x, w.Norm)
	// Only positions that predict a scored token go through lm_head.
	xm := must(G.ByIndices(x, gr.rows, 0)) // [M, D]
	head := w.LMHead
	if head == nil || c.TieWordEmbeddings { // tied: lm_head is embed_tokens
		head = w.EmbedTokens
	}
	logits := linear(xm, model.Linear{Weight: head})                      // [M, V]
	tok := must(tokenLogpOp(logits, func() []int { return bs.cur.toks })) // log p(token) per scored position
	// The per-sequence sums happen inside lossOp, in Go: a selection-matrix product would
	// multiply one sequence's NaN by another's zero weight and poison the whole batch.
	cost := must(G.ApplyOp(lossOp{bs}, tok))
	G.Read(cost, &bs.costVal)
	if !withGrad {
		gr.vm = G.NewTapeMachine(g)
		return gr, nil
	}
	if gr.grads, err = G.Grad(cost, gr.params...); err != nil {
		return nil, fmt.Errorf("build graph: gradients: %w", err)
	}
	gr.vm = G.NewTapeMachine(g, G.BindDualValues(gr.params...))
	if dt == tensor.Float64 {
		gr.last = make([][]float64, len(gr.params))
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

// run evaluates the graph on p with loss, adds the parameter gradients into grads (parallel
// to params; nil skips reading them) and returns the per-sequence log-probs and the loss.
func (gr *graph) run(p *packed, loss lossFunc, grads [][]float32) ([]float64, float64, error) {
	gr.loss, gr.cur = loss, p
	lets := []struct {
		n *G.Node
		v tensor.Tensor
	}{
		{gr.ids, tensor.New(tensor.WithShape(len(p.ids)), tensor.WithBacking(p.ids))},
		{gr.rows, tensor.New(tensor.WithShape(len(p.rows)), tensor.WithBacking(p.rows))},
	}
	for _, l := range lets {
		if err := G.Let(l.n, l.v); err != nil {
			return nil, 0, fmt.Errorf("graph input %s: %w", l.n.Name(), err)
		}
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
	// The tape machine adds each run's parameter gradients to the last run's (vm.Reset does
	// not clear them), so take them out and zero them; a graph_test check pins this.
	for i, n := range gr.params {
		gv, err := n.Grad()
		if err != nil {
			return nil, 0, fmt.Errorf("gradient of %s: %w", n.Name(), err)
		}
		switch d := gv.Data().(type) {
		case []float32:
			parallelBlocks(len(d), func(_, j0, j1 int) {
				if grads != nil {
					g := grads[i][j0:j1]
					for j, v := range d[j0:j1] {
						g[j] += v
					}
				}
				clear(d[j0:j1])
			})
		case []float64:
			if gr.last != nil {
				gr.last[i] = append(gr.last[i][:0], d...)
			}
			if grads != nil {
				for j, v := range d {
					grads[i][j] += float32(v)
				}
			}
			clear(d)
		}
	}
	return logps, cost, nil
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
