package trainer

import (
	"fmt"
	"hash"

	"github.com/chewxy/hm"
	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"
)

// lossFunc maps the graph's per-sequence log-probs to a scalar loss and its derivative with
// respect to each log-prob.
type lossFunc func(logps []float64) (loss float64, dlogps []float64)

// lossOp sums the [M] scored-token log-probs into per-sequence log-probs (batchState.cur's layout)
// and applies the graph's current lossFunc; its gradient is lossGradOp. Both are read at run
// time, so one compiled graph serves every batch.
type lossOp struct{ st *batchState }

func (op lossOp) Arity() int { return 1 }
func (op lossOp) Type() hm.Type {
	a := hm.TypeVariable('a')
	return hm.NewFnType(G.TensorType{Dims: 1, Of: a}, a)
}
func (op lossOp) InferShape(...G.DimSizer) (tensor.Shape, error) { return tensor.ScalarShape(), nil }
func (op lossOp) Do(vals ...G.Value) (G.Value, error) {
	if op.st.loss == nil {
		return nil, fmt.Errorf("loss op: no loss function set")
	}
	op.st.logps = op.st.cur.seqLogps(toFloat64(vals[0].Data()))
	loss, _ := op.st.loss(op.st.logps)
	if op.st.dt == tensor.Float64 {
		return G.NewF64(loss), nil
	}
	return G.NewF32(float32(loss)), nil
}
func (op lossOp) ReturnsPtr() bool      { return false }
func (op lossOp) CallsExtern() bool     { return false }
func (op lossOp) OverwritesInput() int  { return -1 }
func (op lossOp) WriteHash(h hash.Hash) { fmt.Fprint(h, "autoifLoss") }
func (op lossOp) Hashcode() uint32      { return 0x10551 }
func (op lossOp) String() string        { return "Loss" }
func (op lossOp) DiffWRT(int) []bool    { return []bool{true} }
func (op lossOp) SymDiff(inputs G.Nodes, output, grad *G.Node) (G.Nodes, error) {
	d, err := G.ApplyOp(lossGradOp{op.st}, inputs[0], grad)
	if err != nil {
		return nil, err
	}
	return G.Nodes{d}, nil
}

// lossGradOp is dLoss/dtoken-log-prob scaled by the incoming (scalar) gradient.
type lossGradOp struct{ st *batchState }

func (op lossGradOp) Arity() int { return 2 }
func (op lossGradOp) Type() hm.Type {
	a := hm.TypeVariable('a')
	v := G.TensorType{Dims: 1, Of: a}
	return hm.NewFnType(v, a, v)
}
func (op lossGradOp) InferShape(ds ...G.DimSizer) (tensor.Shape, error) {
	s, ok := ds[0].(tensor.Shape)
	if !ok {
		return nil, fmt.Errorf("loss gradient: input shape %v", ds[0])
	}
	return s.Clone(), nil
}
func (op lossGradOp) Do(vals ...G.Value) (G.Value, error) {
	p := op.st.cur
	_, dseq := op.st.loss(p.seqLogps(toFloat64(vals[0].Data())))
	scale := toFloat64(vals[1].Data())[0]
	d := make([]float64, len(p.seqOf))
	for m, s := range p.seqOf {
		if s >= 0 {
			d[m] = scale * dseq[s] * p.weight[m]
		}
	}
	return makeTensor(op.st.dt, []int{len(d)}, d), nil
}
func (op lossGradOp) ReturnsPtr() bool      { return false }
func (op lossGradOp) CallsExtern() bool     { return false }
func (op lossGradOp) OverwritesInput() int  { return -1 }
func (op lossGradOp) WriteHash(h hash.Hash) { fmt.Fprint(h, "autoifLossGrad") }
func (op lossGradOp) Hashcode() uint32      { return 0x10552 }
func (op lossGradOp) String() string        { return "LossGrad" }
