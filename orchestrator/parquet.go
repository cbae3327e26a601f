package orchestrator

import (
	"context"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/apache/arrow-go/v18/parquet"
	"github.com/apache/arrow-go/v18/parquet/compress"
	"github.com/apache/arrow-go/v18/parquet/pqarrow"

	"github.com/autoif/autoif/atomicfile"
)

// File names in a run directory.
const (
	MetricsFile = "metrics.parquet"
	SamplesFile = "samples.parquet"
	StateFile   = "state.json"
	CurvesFile  = "curves.png"
)

// MetricRow is one row of metrics.parquet: a metric event as it came off the run's metrics
// stream, with where it came from.
type MetricRow struct {
	Time      time.Time
	Component string
	Step      int64
	Name      string
	Value     float64
	Label     string
	// PolicyVersion is the batch's Autoif-Policy-Version header (-1 when it had none).
	PolicyVersion int64
	// Seq is the metrics stream sequence of the batch, so a resumed run never applies a
	// batch twice.
	Seq uint64
}

// SampleRow is one row of samples.parquet: one prompt's responses at one step, with their
// scores and the pairs made from them.
type SampleRow struct {
	Step          int64
	PolicyVersion int64
	PromptID      string
	InstructionID string
	Prompt        string
	Responses     []string
	Scores        []float64
	Chosen        []string
	Rejected      []string
	// Verdicts are the verification functions' outcomes on each response, for live
	// observers only: samples.parquet does not keep them.
	Verdicts []Verdict
	// RolloutsSeq and PairsSeq are the stream sequences the row's data came from (0: none
	// yet), so a resumed run drops what its state does not cover.
	RolloutsSeq uint64
	PairsSeq    uint64
}

// Verdict is how a response fared with its prompt's verification functions.
type Verdict struct {
	Passed, Failed, Errors, Timeouts, Skipped int32
	// ErrorKinds names each error ("exception:ValueError", "timeout").
	ErrorKinds []string
}

var tsUTC = &arrow.TimestampType{Unit: arrow.Microsecond, TimeZone: "UTC"}

var metricsSchema = arrow.NewSchema([]arrow.Field{
	{Name: "time", Type: tsUTC},
	{Name: "component", Type: arrow.BinaryTypes.String},
	{Name: "step", Type: arrow.PrimitiveTypes.Int64},
	{Name: "name", Type: arrow.BinaryTypes.String},
	{Name: "value", Type: arrow.PrimitiveTypes.Float64},
	{Name: "label", Type: arrow.BinaryTypes.String},
	{Name: "policy_version", Type: arrow.PrimitiveTypes.Int64},
	{Name: "seq", Type: arrow.PrimitiveTypes.Uint64},
}, nil)

var samplesSchema = arrow.NewSchema([]arrow.Field{
	{Name: "step", Type: arrow.PrimitiveTypes.Int64},
	{Name: "policy_version", Type: arrow.PrimitiveTypes.Int64},
	{Name: "prompt_id", Type: arrow.BinaryTypes.String},
	{Name: "instruction_id", Type: arrow.BinaryTypes.String},
	{Name: "prompt", Type: arrow.BinaryTypes.String},
	{Name: "responses", Type: arrow.ListOf(arrow.BinaryTypes.String)},
	{Name: "scores", Type: arrow.ListOf(arrow.PrimitiveTypes.Float64)},
	{Name: "chosen", Type: arrow.ListOf(arrow.BinaryTypes.String)},
	{Name: "rejected", Type: arrow.ListOf(arrow.BinaryTypes.String)},
	{Name: "rollouts_seq", Type: arrow.PrimitiveTypes.Uint64},
	{Name: "pairs_seq", Type: arrow.PrimitiveTypes.Uint64},
}, nil)

// WriteMetrics writes rows to path atomically: a reader sees the old file or the new one,
// never half of one.
func WriteMetrics(path string, rows []MetricRow) error {
	b := array.NewRecordBuilder(memory.DefaultAllocator, metricsSchema)
	defer b.Release()
	for i := range rows {
		r := &rows[i]
		b.Field(0).(*array.TimestampBuilder).Append(arrow.Timestamp(r.Time.UnixMicro()))
		b.Field(1).(*array.StringBuilder).Append(r.Component)
		b.Field(2).(*array.Int64Builder).Append(r.Step)
		b.Field(3).(*array.StringBuilder).Append(r.Name)
		b.Field(4).(*array.Float64Builder).Append(r.Value)
		b.Field(5).(*array.StringBuilder).Append(r.Label)
		b.Field(6).(*array.Int64Builder).Append(r.PolicyVersion)
		b.Field(7).(*array.Uint64Builder).Append(r.Seq)
	}
	rec := b.NewRecordBatch()
	defer rec.Release()
	return writeParquet(path, rec)
}

// WriteSamples writes rows to path atomically.
func WriteSamples(path string, rows []SampleRow) error {
	b := array.NewRecordBuilder(memory.DefaultAllocator, samplesSchema)
	defer b.Release()
	strList := func(i int, vs []string) {
		lb := b.Field(i).(*array.ListBuilder)
		lb.Append(true)
		vb := lb.ValueBuilder().(*array.StringBuilder)
		for _, v := range vs {
			vb.Append(v)
		}
	}
	for i := range rows {
		r := &rows[i]
		b.Field(0).(*array.Int64Builder).Append(r.Step)
		b.Field(1).(*array.Int64Builder).Append(r.PolicyVersion)
		b.Field(2).(*array.StringBuilder).Append(r.PromptID)
		b.Field(3).(*array.StringBuilder).Append(r.InstructionID)
		b.Field(4).(*array.StringBuilder).Append(r.Prompt)
		strList(5, r.Responses)
		lb := b.Field(6).(*array.ListBuilder)
		lb.Append(true)
		fb := lb.ValueBuilder().(*array.Float64Builder)
		for _, v := range r.Scores {
			fb.Append(v)
		}
		strList(7, r.Chosen)
		strList(8, r.Rejected)
		b.Field(9).(*array.Uint64Builder).Append(r.RolloutsSeq)
		b.Field(10).(*array.Uint64Builder).Append(r.PairsSeq)
	}
	rec := b.NewRecordBatch()
	defer rec.Release()
	return writeParquet(path, rec)
}

func writeParquet(path string, rec arrow.RecordBatch) error {
	err := atomicfile.Write(path, 0o644, func(out io.Writer) error {
		props := parquet.NewWriterProperties(parquet.WithCompression(compress.Codecs.Zstd), parquet.WithDictionaryDefault(true))
		w, err := pqarrow.NewFileWriter(rec.Schema(), out, props, pqarrow.NewArrowWriterProperties(pqarrow.WithStoreSchema()))
		if err != nil {
			return err
		}
		if err := w.Write(rec); err != nil {
			w.Close()
			return err
		}
		return w.Close() // writes the footer
	})
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}

// readTable reads a whole Parquet file; a missing file is (nil, os.ErrNotExist).
func readTable(ctx context.Context, path string) (arrow.Table, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	mem := memory.DefaultAllocator
	tbl, err := pqarrow.ReadTable(ctx, f, parquet.NewReaderProperties(mem), pqarrow.ArrowReadProperties{}, mem)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	return tbl, nil
}

// ReadMetrics reads a metrics.parquet file.
func ReadMetrics(ctx context.Context, path string) ([]MetricRow, error) {
	tbl, err := readTable(ctx, path)
	if err != nil {
		return nil, err
	}
	defer tbl.Release()
	rows := make([]MetricRow, tbl.NumRows())
	var errs []error
	fill := func(name string, set func(chunk arrow.Array, i, row int)) {
		idx := tbl.Schema().FieldIndices(name)
		if len(idx) == 0 {
			errs = append(errs, fmt.Errorf("read %s: no column %q", path, name))
			return
		}
		row := 0
		for _, chunk := range tbl.Column(idx[0]).Data().Chunks() {
			for i := 0; i < chunk.Len(); i++ {
				set(chunk, i, row)
				row++
			}
		}
	}
	if err := checkTypes(tbl, path, metricsSchema); err != nil {
		return nil, err
	}
	fill("time", func(c arrow.Array, i, r int) {
		rows[r].Time = time.UnixMicro(int64(c.(*array.Timestamp).Value(i))).UTC()
	})
	fill("component", func(c arrow.Array, i, r int) { rows[r].Component = c.(*array.String).Value(i) })
	fill("step", func(c arrow.Array, i, r int) { rows[r].Step = c.(*array.Int64).Value(i) })
	fill("name", func(c arrow.Array, i, r int) { rows[r].Name = c.(*array.String).Value(i) })
	fill("value", func(c arrow.Array, i, r int) { rows[r].Value = c.(*array.Float64).Value(i) })
	fill("label", func(c arrow.Array, i, r int) { rows[r].Label = c.(*array.String).Value(i) })
	fill("policy_version", func(c arrow.Array, i, r int) { rows[r].PolicyVersion = c.(*array.Int64).Value(i) })
	fill("seq", func(c arrow.Array, i, r int) { rows[r].Seq = c.(*array.Uint64).Value(i) })
	if len(errs) > 0 {
		return nil, errs[0]
	}
	return rows, nil
}

// ReadSamples reads a samples.parquet file.
func ReadSamples(ctx context.Context, path string) ([]SampleRow, error) {
	tbl, err := readTable(ctx, path)
	if err != nil {
		return nil, err
	}
	defer tbl.Release()
	if err := checkTypes(tbl, path, samplesSchema); err != nil {
		return nil, err
	}
	rows := make([]SampleRow, tbl.NumRows())
	fill := func(name string, set func(chunk arrow.Array, i, row int)) {
		row := 0
		for _, chunk := range tbl.Column(tbl.Schema().FieldIndices(name)[0]).Data().Chunks() {
			for i := 0; i < chunk.Len(); i++ {
				set(chunk, i, row)
				row++
			}
		}
	}
	strs := func(c arrow.Array, i int) []string {
		l := c.(*array.List)
		start, end := l.ValueOffsets(i)
		vals := l.ListValues().(*array.String)
		out := make([]string, 0, end-start)
		for j := start; j < end; j++ {
			out = append(out, vals.Value(int(j)))
		}
		return out
	}
	fill("step", func(c arrow.Array, i, r int) { rows[r].Step = c.(*array.Int64).Value(i) })
	fill("policy_version", func(c arrow.Array, i, r int) { rows[r].PolicyVersion = c.(*array.Int64).Value(i) })
	fill("prompt_id", func(c arrow.Array, i, r int) { rows[r].PromptID = c.(*array.String).Value(i) })
	fill("instruction_id", func(c arrow.Array, i, r int) { rows[r].InstructionID = c.(*array.String).Value(i) })
	fill("prompt", func(c arrow.Array, i, r int) { rows[r].Prompt = c.(*array.String).Value(i) })
	fill("responses", func(c arrow.Array, i, r int) { rows[r].Responses = strs(c, i) })
	fill("scores", func(c arrow.Array, i, r int) {
		l := c.(*array.List)
		start, end := l.ValueOffsets(i)
		vals := l.ListValues().(*array.Float64)
		for j := start; j < end; j++ {
			rows[r].Scores = append(rows[r].Scores, vals.Value(int(j)))
		}
	})
	fill("chosen", func(c arrow.Array, i, r int) { rows[r].Chosen = strs(c, i) })
	fill("rejected", func(c arrow.Array, i, r int) { rows[r].Rejected = strs(c, i) })
	fill("rollouts_seq", func(c arrow.Array, i, r int) { rows[r].RolloutsSeq = c.(*array.Uint64).Value(i) })
	fill("pairs_seq", func(c arrow.Array, i, r int) { rows[r].PairsSeq = c.(*array.Uint64).Value(i) })
	return rows, nil
}

// checkTypes makes sure every column of want is there with its type, so a file from
// another program is an error rather than a panic.
func checkTypes(tbl arrow.Table, path string, want *arrow.Schema) error {
	for _, f := range want.Fields() {
		idx := tbl.Schema().FieldIndices(f.Name)
		if len(idx) == 0 {
			return fmt.Errorf("read %s: no column %q", path, f.Name)
		}
		if got := tbl.Schema().Field(idx[0]).Type; !arrow.TypeEqual(got, f.Type) {
			return fmt.Errorf("read %s: column %q has type %s, want %s", path, f.Name, got, f.Type)
		}
	}
	return nil
}
