package proto

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
	"strconv"
	"sync"
	"time"
	"unsafe"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/ipc"
	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/nats-io/nats.go"
)

const metaSchema = "autoif.schema"

// schemaNames lists every codec, to name the schema of a payload sent to the wrong decoder.
var schemaNames []string

// Codec encodes batches of rows of type T as Arrow IPC streams of one versioned schema.
type Codec[T any] struct {
	name   string
	fields []arrow.Field
	cols   []column[T]

	schemaOnce sync.Once
	schema     []byte
}

// column maps one field of T to one Arrow column.
type column[T any] struct {
	field arrow.Field
	build func(rows []T) arrow.Array
	// check validates the decoded array (offsets, lengths) before any value is read.
	check func(a arrow.Array) error
	read  func(a arrow.Array, rows []T)
}

func newCodec[T any](name string, cols ...column[T]) *Codec[T] {
	c := &Codec[T]{name: name, cols: cols}
	for _, col := range cols {
		c.fields = append(c.fields, col.field)
	}
	schemaNames = append(schemaNames, name)
	return c
}

// Name is the schema's name and version, as carried in HeaderSchema.
func (c *Codec[T]) Name() string { return c.name }

// Schema is the Arrow schema of this codec's payloads.
func (c *Codec[T]) Schema() *arrow.Schema {
	md := arrow.NewMetadata([]string{metaSchema}, []string{c.name})
	return arrow.NewSchema(c.fields, &md)
}

// Encode writes rows as one Arrow IPC stream holding one record batch.
func (c *Codec[T]) Encode(rows []T) ([]byte, error) {
	mem := memory.DefaultAllocator
	schema := c.Schema()
	arrs := make([]arrow.Array, len(c.cols))
	for j, col := range c.cols {
		arrs[j] = col.build(rows)
		defer arrs[j].Release()
	}
	rec := array.NewRecordBatch(schema, arrs, int64(len(rows)))
	defer rec.Release()

	var buf bytes.Buffer
	buf.Grow(c.sizeHint(rec))
	w := ipc.NewWriter(&buf, ipc.WithSchema(schema), ipc.WithAllocator(mem))
	if err := w.Write(rec); err != nil {
		return nil, fmt.Errorf("encode %s: %w", c.name, err)
	}
	if err := w.Close(); err != nil {
		return nil, fmt.Errorf("encode %s: %w", c.name, err)
	}
	return buf.Bytes(), nil
}

func (c *Codec[T]) sizeHint(rec arrow.RecordBatch) int {
	n := 1024
	for _, col := range rec.Columns() {
		for _, b := range col.Data().Buffers() {
			if b != nil {
				n += b.Len() + 8
			}
		}
		for _, child := range col.Data().Children() {
			for _, b := range child.Buffers() {
				if b != nil {
					n += b.Len() + 8
				}
			}
		}
	}
	return n
}

// Msg builds the NATS message for a batch: payload, schema and checksum headers, and the
// de-duplication id (which must identify the batch's content, so a retried publish of the
// same batch is dropped by JetStream).
func (c *Codec[T]) Msg(subject, msgID string, rows []T) (*nats.Msg, error) {
	payload, err := c.Encode(rows)
	if err != nil {
		return nil, err
	}
	m := nats.NewMsg(subject)
	m.Data = payload
	m.Header.Set(HeaderSchema, c.name)
	m.Header.Set(HeaderChecksum, Checksum(payload))
	m.Header.Set(HeaderRows, strconv.Itoa(len(rows)))
	if msgID != "" {
		m.Header.Set(HeaderMsgID, msgID)
	}
	return m, nil
}

// DecodeMsg checks a message's headers and decodes its payload.
func (c *Codec[T]) DecodeMsg(h nats.Header, payload []byte) ([]T, error) {
	if err := VerifyHeaders(h, c.name, payload); err != nil {
		return nil, err
	}
	return c.Decode(payload)
}

// Decode reads a payload written by Encode. A payload of another schema or version, or one
// that is truncated or malformed, is an error; Decode never panics and never allocates much
// more than the payload's size, whatever the payload claims.
//
// Decoding does not copy: the rows' strings and token ids point into payload, which must not
// be modified while they are in use.
func (c *Codec[T]) Decode(payload []byte) (rows []T, err error) {
	defer func() {
		// The Arrow IPC reader trusts flatbuffer offsets; a malformed payload can make it
		// index out of range. That is a bad payload, not a crash.
		if r := recover(); r != nil {
			rows, err = nil, fmt.Errorf("decode %s: malformed payload: %v", c.name, r)
		}
	}()
	// Arrow sizes its schema from the (untrusted) flatbuffer before anything can check it, so
	// the schema message must be byte-for-byte the one this codec writes.
	if !bytes.HasPrefix(payload, c.schemaMsg()) {
		return nil, c.schemaMismatch(payload)
	}
	mem := &boundedAllocator{limit: len(payload)}
	r, err := ipc.NewReaderFromMessageReader(&payloadMessages{payload: payload}, ipc.WithAllocator(mem))
	if err != nil {
		return nil, fmt.Errorf("decode %s: %w", c.name, err)
	}
	defer r.Release()
	records := 0
	for r.Next() {
		records++
		if records > 1 {
			return nil, fmt.Errorf("decode %s: payload holds more than one record batch", c.name)
		}
		rec := r.RecordBatch()
		if err := c.checkRecord(rec); err != nil {
			return nil, err
		}
		rows = make([]T, rec.NumRows())
		for j, col := range c.cols {
			col.read(rec.Column(j), rows)
		}
	}
	if err := r.Err(); err != nil {
		return nil, fmt.Errorf("decode %s: %w", c.name, err)
	}
	if records == 0 {
		return nil, fmt.Errorf("decode %s: truncated payload: no record batch", c.name)
	}
	return rows, nil
}

// schemaMsg is the encapsulated IPC schema message every payload of this codec starts with.
func (c *Codec[T]) schemaMsg() []byte {
	c.schemaOnce.Do(func() {
		var buf bytes.Buffer
		w := ipc.NewWriter(&buf, ipc.WithSchema(c.Schema()))
		if err := w.Close(); err != nil {
			panic(fmt.Sprintf("proto: write %s schema: %v", c.name, err))
		}
		b := buf.Bytes()
		// Encapsulated message: 0xFFFFFFFF continuation, int32 metadata length, metadata.
		n := int(binary.LittleEndian.Uint32(b[4:8]))
		c.schema = b[:8+n]
	})
	return c.schema
}

// schemaMismatch explains a payload that does not start with this codec's schema.
func (c *Codec[T]) schemaMismatch(payload []byte) error {
	head := payload[:min(len(payload), 4096)]
	for _, name := range schemaNames {
		if name != c.name && bytes.Contains(head, []byte(name)) {
			return fmt.Errorf("decode %s: payload schema is %q", c.name, name)
		}
	}
	if bytes.Contains(head, []byte(c.name)) {
		return fmt.Errorf("decode %s: payload columns differ from the %s schema", c.name, c.name)
	}
	return fmt.Errorf("decode %s: not an autoif %s payload (schema message differs or is truncated)", c.name, c.name)
}

func (c *Codec[T]) checkRecord(rec arrow.RecordBatch) error {
	if int(rec.NumCols()) != len(c.cols) {
		return fmt.Errorf("decode %s: record has %d columns, want %d", c.name, rec.NumCols(), len(c.cols))
	}
	for j, col := range c.cols {
		a := rec.Column(j)
		if a.Len() != int(rec.NumRows()) {
			return fmt.Errorf("decode %s: column %s has %d values for %d rows", c.name, col.field.Name, a.Len(), rec.NumRows())
		}
		if a.NullN() != 0 {
			return fmt.Errorf("decode %s: column %s has nulls", c.name, col.field.Name)
		}
		if err := col.check(a); err != nil {
			return fmt.Errorf("decode %s: column %s: %w", c.name, col.field.Name, err)
		}
	}
	return nil
}

// Column constructors. Every column is non-nullable: a row always has every field. Columns
// are built a whole column at a time straight into their final buffers (Arrow's builders
// grow and copy, which made encoding three times slower), and read without copying.

// bufferOf views a slice's memory as an Arrow buffer without copying.
func bufferOf[E int32 | int64 | float64 | byte](xs []E) *memory.Buffer {
	if len(xs) == 0 {
		return memory.NewBufferBytes(nil)
	}
	return memory.NewBufferBytes(unsafe.Slice((*byte)(unsafe.Pointer(&xs[0])), len(xs)*int(unsafe.Sizeof(xs[0]))))
}

func stringCol[T any](name string, get func(*T) string, set func(*T, string)) column[T] {
	return column[T]{
		field: arrow.Field{Name: name, Type: arrow.BinaryTypes.String},
		build: func(rows []T) arrow.Array {
			return stringArray(len(rows), func(i int) string { return get(&rows[i]) })
		},
		check: func(a arrow.Array) error { return a.(*array.String).ValidateFull() },
		read: func(a arrow.Array, rows []T) {
			s := a.(*array.String)
			for i := range rows {
				set(&rows[i], s.Value(i))
			}
		},
	}
}

func stringArray(n int, get func(int) string) *array.String {
	total := 0
	for i := 0; i < n; i++ {
		total += len(get(i))
	}
	offsets := make([]int32, n+1)
	data := make([]byte, 0, total)
	for i := 0; i < n; i++ {
		data = append(data, get(i)...)
		offsets[i+1] = int32(len(data))
	}
	d := array.NewData(arrow.BinaryTypes.String, n, []*memory.Buffer{nil, bufferOf(offsets), bufferOf(data)}, nil, 0, 0)
	defer d.Release()
	return array.NewStringData(d)
}

func fixedCol[T any, V int32 | int64 | float64](name string, typ arrow.DataType, get func(*T) V, set func(*T, V)) column[T] {
	var zero V
	return column[T]{
		field: arrow.Field{Name: name, Type: typ},
		build: func(rows []T) arrow.Array {
			vals := make([]V, len(rows))
			for i := range rows {
				vals[i] = get(&rows[i])
			}
			d := array.NewData(typ, len(rows), []*memory.Buffer{nil, bufferOf(vals)}, nil, 0, 0)
			defer d.Release()
			return array.MakeFromData(d)
		},
		check: checkFixedWidth(int(unsafe.Sizeof(zero))),
		read: func(a arrow.Array, rows []T) {
			if len(rows) == 0 {
				return
			}
			d := a.Data()
			raw := d.Buffers()[1].Bytes()
			vals := unsafe.Slice((*V)(unsafe.Pointer(unsafe.SliceData(raw))), d.Offset()+d.Len())[d.Offset():]
			for i := range rows {
				set(&rows[i], vals[i])
			}
		},
	}
}

func int64Col[T any](name string, get func(*T) int64, set func(*T, int64)) column[T] {
	return fixedCol(name, arrow.PrimitiveTypes.Int64, get, set)
}

func int32Col[T any](name string, get func(*T) int32, set func(*T, int32)) column[T] {
	return fixedCol(name, arrow.PrimitiveTypes.Int32, get, set)
}

func float64Col[T any](name string, get func(*T) float64, set func(*T, float64)) column[T] {
	return fixedCol(name, arrow.PrimitiveTypes.Float64, get, set)
}

var timestampType = &arrow.TimestampType{Unit: arrow.Microsecond, TimeZone: "UTC"}

func timeCol[T any](name string, get func(*T) time.Time, set func(*T, time.Time)) column[T] {
	c := fixedCol(name, timestampType,
		func(r *T) int64 { return get(r).UnixMicro() },
		func(r *T, v int64) { set(r, time.UnixMicro(v).UTC()) })
	return c
}

// listOf wraps a child array into a list array with the given offsets.
func listOf(typ arrow.DataType, offsets []int32, child arrow.ArrayData) *array.List {
	d := array.NewData(typ, len(offsets)-1, []*memory.Buffer{nil, bufferOf(offsets)}, []arrow.ArrayData{child}, 0, 0)
	defer d.Release()
	return array.NewListData(d)
}

func tokenListCol[T any](name string, get func(*T) []int32, set func(*T, []int32)) column[T] {
	return numListCol(name, arrow.PrimitiveTypes.Int32, func(a arrow.Array) []int32 { return a.(*array.Int32).Int32Values() }, get, set)
}

// numListCol is a list<int32> or list<float64> column: every row's values back to back in one
// child buffer, and offsets into it.
func numListCol[T any, V int32 | float64](name string, elem arrow.DataType, values func(arrow.Array) []V,
	get func(*T) []V, set func(*T, []V)) column[T] {
	typ := arrow.ListOfNonNullable(elem)
	width := elem.(arrow.FixedWidthDataType).BitWidth() / 8
	return column[T]{
		field: arrow.Field{Name: name, Type: typ},
		build: func(rows []T) arrow.Array {
			total := 0
			for i := range rows {
				total += len(get(&rows[i]))
			}
			offsets := make([]int32, len(rows)+1)
			vals := make([]V, 0, total)
			for i := range rows {
				vals = append(vals, get(&rows[i])...)
				offsets[i+1] = int32(len(vals))
			}
			child := array.NewData(elem, len(vals), []*memory.Buffer{nil, bufferOf(vals)}, nil, 0, 0)
			defer child.Release()
			return listOf(typ, offsets, child)
		},
		check: func(a arrow.Array) error {
			l := a.(*array.List)
			if err := l.ValidateFull(); err != nil {
				return err
			}
			return checkFixedWidth(width)(l.ListValues())
		},
		read: func(a arrow.Array, rows []T) {
			l := a.(*array.List)
			vals := values(l.ListValues())
			for i := range rows {
				start, end := l.ValueOffsets(i)
				// Capacity is capped so that appending to one row's values copies instead of
				// overwriting the next row's.
				set(&rows[i], vals[start:end:end])
			}
		},
	}
}

func stringListCol[T any](name string, get func(*T) []string, set func(*T, []string)) column[T] {
	typ := arrow.ListOfNonNullable(arrow.BinaryTypes.String)
	return column[T]{
		field: arrow.Field{Name: name, Type: typ},
		build: func(rows []T) arrow.Array {
			var flat []string
			offsets := make([]int32, len(rows)+1)
			for i := range rows {
				flat = append(flat, get(&rows[i])...)
				offsets[i+1] = int32(len(flat))
			}
			child := stringArray(len(flat), func(i int) string { return flat[i] })
			defer child.Release()
			return listOf(typ, offsets, child.Data())
		},
		check: func(a arrow.Array) error {
			l := a.(*array.List)
			if err := l.ValidateFull(); err != nil {
				return err
			}
			s, ok := l.ListValues().(*array.String)
			if !ok {
				return fmt.Errorf("list values are %s", l.ListValues().DataType())
			}
			return s.ValidateFull()
		},
		read: func(a arrow.Array, rows []T) {
			l := a.(*array.List)
			s := l.ListValues().(*array.String)
			for i := range rows {
				start, end := l.ValueOffsets(i)
				out := make([]string, 0, end-start)
				for k := start; k < end; k++ {
					out = append(out, s.Value(int(k)))
				}
				set(&rows[i], out)
			}
		},
	}
}

// checkFixedWidth verifies that a fixed-width array's value buffer really holds Len values:
// the IPC reader takes buffer lengths from the (untrusted) message.
func checkFixedWidth(width int) func(arrow.Array) error {
	return func(a arrow.Array) error {
		d := a.Data()
		bufs := d.Buffers()
		if len(bufs) < 2 || (a.Len() > 0 && bufs[1] == nil) {
			return fmt.Errorf("missing value buffer")
		}
		if a.Len() == 0 {
			return nil
		}
		if need := (d.Offset() + d.Len()) * width; bufs[1].Len() < need {
			return fmt.Errorf("value buffer holds %d bytes, %d values need %d", bufs[1].Len(), a.Len(), need)
		}
		return nil
	}
}

// boundedAllocator refuses any single allocation larger than the payload being decoded:
// buffer sizes in an IPC message are untrusted.
type boundedAllocator struct{ limit int }

func (a *boundedAllocator) Allocate(size int) []byte {
	if size < 0 || size > a.limit+64 {
		panic(fmt.Sprintf("allocation of %d bytes for a %d-byte payload", size, a.limit))
	}
	return memory.DefaultAllocator.Allocate(size)
}

func (a *boundedAllocator) Reallocate(size int, b []byte) []byte {
	if size < 0 || size > a.limit+64 {
		panic(fmt.Sprintf("allocation of %d bytes for a %d-byte payload", size, a.limit))
	}
	return memory.DefaultAllocator.Reallocate(size, b)
}

func (a *boundedAllocator) Free(b []byte) { memory.DefaultAllocator.Free(b) }

// payloadMessages reads the encapsulated IPC messages of an in-memory payload without copying
// their bodies, checking every length against the payload before anything is sliced.
type payloadMessages struct {
	payload []byte
	off     int
	refs    int64
}

func (p *payloadMessages) Message() (*ipc.Message, error) {
	rest := p.payload[p.off:]
	if len(rest) == 0 {
		return nil, io.EOF
	}
	if len(rest) < 8 {
		return nil, fmt.Errorf("truncated message header at byte %d", p.off)
	}
	if binary.LittleEndian.Uint32(rest) != 0xFFFFFFFF {
		return nil, fmt.Errorf("no message continuation marker at byte %d", p.off)
	}
	metaLen := int(binary.LittleEndian.Uint32(rest[4:]))
	if metaLen == 0 {
		p.off = len(p.payload) // end-of-stream marker
		return nil, io.EOF
	}
	if metaLen < 8 || metaLen > len(rest)-8 {
		return nil, fmt.Errorf("message metadata of %d bytes at byte %d overruns the payload", metaLen, p.off)
	}
	meta := memory.NewBufferBytes(rest[8 : 8+metaLen])
	probe := ipc.NewMessage(meta, memory.NewBufferBytes(nil))
	bodyLen := probe.BodyLen()
	probe.Release()
	bodyStart := 8 + metaLen
	if bodyLen < 0 || bodyLen > int64(len(rest)-bodyStart) {
		return nil, fmt.Errorf("message body of %d bytes at byte %d overruns the payload", bodyLen, p.off)
	}
	body := memory.NewBufferBytes(rest[bodyStart : bodyStart+int(bodyLen)])
	p.off += bodyStart + int(bodyLen)
	return ipc.NewMessage(meta, body), nil
}

func (p *payloadMessages) Retain()  { p.refs++ }
func (p *payloadMessages) Release() { p.refs-- }

// int32ListCol is a list<int32> column of any meaning (tokenListCol is the same layout).
func int32ListCol[T any](name string, get func(*T) []int32, set func(*T, []int32)) column[T] {
	return tokenListCol(name, get, set)
}

func float64ListCol[T any](name string, get func(*T) []float64, set func(*T, []float64)) column[T] {
	return numListCol(name, arrow.PrimitiveTypes.Float64, func(a arrow.Array) []float64 { return a.(*array.Float64).Float64Values() }, get, set)
}
