package model

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"sort"

	"github.com/autoif/autoif/atomicfile"
)

// DType names a safetensors element type.
type DType string

const (
	F32  DType = "F32"
	F16  DType = "F16"
	BF16 DType = "BF16"
	F64  DType = "F64"
)

func (d DType) size() int {
	switch d {
	case F32:
		return 4
	case F16, BF16:
		return 2
	case F64:
		return 8
	}
	return 0
}

// maxHeaderSize matches the reference implementation's limit: a larger header is a corrupt
// or hostile file, not a model.
const maxHeaderSize = 100 << 20

// TensorInfo is one entry of a safetensors header. Offsets are absolute file offsets.
type TensorInfo struct {
	Name  string
	DType DType
	Shape []int
	Begin int64
	End   int64
}

// Elements is the product of the shape (1 for a scalar).
func (t TensorInfo) Elements() int64 {
	n := int64(1)
	for _, d := range t.Shape {
		n *= int64(d)
	}
	return n
}

// ParseSafetensorsHeader parses the first bytes of a safetensors file of fileSize bytes and
// checks every offset: within the file, exactly dtype size × elements long, no overlaps and no
// gaps (the reference reader rejects gaps too). buf must hold at least the 8-byte length and
// the header it announces.
func ParseSafetensorsHeader(buf []byte, fileSize int64) ([]TensorInfo, map[string]string, error) {
	if len(buf) < 8 || fileSize < 8 {
		return nil, nil, errors.New("truncated: shorter than the 8-byte header length")
	}
	n := binary.LittleEndian.Uint64(buf[:8])
	if n > maxHeaderSize {
		return nil, nil, fmt.Errorf("header length %d exceeds %d bytes", n, maxHeaderSize)
	}
	if int64(n) > fileSize-8 || int64(n) > int64(len(buf)-8) {
		return nil, nil, fmt.Errorf("truncated: header length %d but only %d bytes follow", n, fileSize-8)
	}
	dataStart := 8 + int64(n)
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(buf[8:dataStart], &raw); err != nil {
		return nil, nil, fmt.Errorf("header JSON: %w", err)
	}
	var meta map[string]string
	infos := make([]TensorInfo, 0, len(raw))
	for name, v := range raw {
		if name == "__metadata__" {
			if err := json.Unmarshal(v, &meta); err != nil {
				return nil, nil, fmt.Errorf("header __metadata__: %w", err)
			}
			continue
		}
		var e struct {
			DType   DType     `json:"dtype"`
			Shape   []int64   `json:"shape"`
			Offsets []float64 `json:"data_offsets"`
		}
		if err := json.Unmarshal(v, &e); err != nil {
			return nil, nil, fmt.Errorf("tensor %s: %w", name, err)
		}
		if e.DType.size() == 0 {
			return nil, nil, fmt.Errorf("tensor %s: unsupported dtype %q", name, e.DType)
		}
		if len(e.Offsets) != 2 {
			return nil, nil, fmt.Errorf("tensor %s: data_offsets has %d entries, want 2", name, len(e.Offsets))
		}
		info := TensorInfo{Name: name, DType: e.DType}
		elems := int64(1)
		for _, d := range e.Shape {
			if d < 0 || d > math.MaxInt32 {
				return nil, nil, fmt.Errorf("tensor %s: bad dimension %d in shape %v", name, d, e.Shape)
			}
			info.Shape = append(info.Shape, int(d))
			if d != 0 && elems > math.MaxInt64/8/d {
				return nil, nil, fmt.Errorf("tensor %s: shape %v overflows", name, e.Shape)
			}
			elems *= d
		}
		b, en := e.Offsets[0], e.Offsets[1]
		if b < 0 || en < b || b != math.Trunc(b) || en != math.Trunc(en) || en > float64(fileSize) {
			return nil, nil, fmt.Errorf("tensor %s: data_offsets [%v, %v] outside the %d-byte data section", name, b, en, fileSize-dataStart)
		}
		info.Begin, info.End = dataStart+int64(b), dataStart+int64(en)
		if info.End > fileSize {
			return nil, nil, fmt.Errorf("tensor %s: data_offsets [%v, %v] run past the end of the %d-byte data section (truncated file?)", name, b, en, fileSize-dataStart)
		}
		if want := elems * int64(info.DType.size()); info.End-info.Begin != want {
			return nil, nil, fmt.Errorf("tensor %s: %d bytes for %s %v, want %d", name, info.End-info.Begin, info.DType, info.Shape, want)
		}
		infos = append(infos, info)
	}
	sort.Slice(infos, func(i, j int) bool {
		if infos[i].Begin != infos[j].Begin {
			return infos[i].Begin < infos[j].Begin
		}
		return infos[i].End < infos[j].End
	})
	pos := dataStart
	for i, t := range infos {
		if t.Begin < pos {
			return nil, nil, fmt.Errorf("tensor %s: data_offsets overlap tensor %s", t.Name, infos[i-1].Name)
		}
		if t.Begin > pos {
			return nil, nil, fmt.Errorf("tensor %s: %d-byte gap before its data", t.Name, t.Begin-pos)
		}
		pos = t.End
	}
	if pos != fileSize {
		return nil, nil, fmt.Errorf("data section is %d bytes but tensors cover %d (truncated or trailing bytes)", fileSize-dataStart, pos-dataStart)
	}
	sort.Slice(infos, func(i, j int) bool { return infos[i].Name < infos[j].Name })
	return infos, meta, nil
}

// SafetensorsFile is an open safetensors file whose tensors are read on demand.
type SafetensorsFile struct {
	Path     string
	Tensors  []TensorInfo
	Metadata map[string]string
	f        *os.File
}

// OpenSafetensors opens path and validates its header.
func OpenSafetensors(path string) (*SafetensorsFile, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, err
	}
	size := st.Size()
	var lenBuf [8]byte
	if _, err := io.ReadFull(f, lenBuf[:]); err != nil {
		f.Close()
		return nil, fmt.Errorf("%s: truncated: shorter than the 8-byte header length", path)
	}
	n := binary.LittleEndian.Uint64(lenBuf[:])
	if n > maxHeaderSize || int64(n) > size-8 {
		f.Close()
		return nil, fmt.Errorf("%s: truncated or corrupt: header length %d, file %d bytes", path, n, size)
	}
	buf := make([]byte, 8+n)
	copy(buf, lenBuf[:])
	if _, err := io.ReadFull(f, buf[8:]); err != nil {
		f.Close()
		return nil, fmt.Errorf("%s: read header: %w", path, err)
	}
	infos, meta, err := ParseSafetensorsHeader(buf, size)
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return &SafetensorsFile{Path: path, Tensors: infos, Metadata: meta, f: f}, nil
}

// Close closes the file.
func (s *SafetensorsFile) Close() error { return s.f.Close() }

// Read returns the tensor converted to float32.
func (s *SafetensorsFile) Read(t TensorInfo) ([]float32, error) {
	raw, err := s.readRaw(t)
	if err != nil {
		return nil, err
	}
	return decodeFloats(raw, t.DType), nil
}

func (s *SafetensorsFile) readRaw(t TensorInfo) ([]byte, error) {
	raw := make([]byte, t.End-t.Begin)
	if _, err := s.f.ReadAt(raw, t.Begin); err != nil {
		return nil, fmt.Errorf("%s: tensor %s: %w", s.Path, t.Name, err)
	}
	return raw, nil
}

// readTensor reads one tensor: float32 Data, or with keepHalf a BF16/F16 matrix as its bits.
func (s *SafetensorsFile) readTensor(t TensorInfo, keepHalf bool) (*Tensor, error) {
	raw, err := s.readRaw(t)
	if err != nil {
		return nil, err
	}
	out := &Tensor{Name: t.Name, Shape: t.Shape}
	// Only matrices stay half: norms and biases are tiny and the kernels that read them
	// (RMSNorm, bias adds) take float32.
	if keepHalf && (t.DType == BF16 || t.DType == F16) && len(t.Shape) == 2 {
		out.half, out.dtype = make([]uint16, len(raw)/2), t.DType
		for i := range out.half {
			out.half[i] = binary.LittleEndian.Uint16(raw[2*i:])
		}
		return out, nil
	}
	out.Data = decodeFloats(raw, t.DType)
	return out, nil
}

func decodeFloats(raw []byte, dt DType) []float32 {
	out := make([]float32, len(raw)/dt.size())
	switch dt {
	case F32:
		for i := range out {
			out[i] = math.Float32frombits(binary.LittleEndian.Uint32(raw[4*i:]))
		}
	case BF16:
		for i := range out {
			out[i] = math.Float32frombits(uint32(binary.LittleEndian.Uint16(raw[2*i:])) << 16)
		}
	case F16:
		for i := range out {
			out[i] = f16ToF32(binary.LittleEndian.Uint16(raw[2*i:]))
		}
	case F64:
		for i := range out {
			out[i] = float32(math.Float64frombits(binary.LittleEndian.Uint64(raw[8*i:])))
		}
	}
	return out
}

func f16ToF32(h uint16) float32 {
	sign := uint32(h>>15) << 31
	exp := uint32(h>>10) & 0x1f
	mant := uint32(h) & 0x3ff
	switch {
	case exp == 0 && mant == 0:
		return math.Float32frombits(sign)
	case exp == 0: // subnormal: value = mant × 2^-24
		f := float32(mant) * (1.0 / (1 << 24))
		if sign != 0 {
			f = -f
		}
		return f
	case exp == 0x1f:
		return math.Float32frombits(sign | 0xff<<23 | mant<<13)
	}
	return math.Float32frombits(sign | (exp+112)<<23 | mant<<13)
}

// toBF16 rounds to nearest even, as torch's .to(torch.bfloat16) does.
func toBF16(f float32) uint16 {
	b := math.Float32bits(f)
	if b&0x7fffffff > 0x7f800000 { // NaN: keep it a quiet NaN
		return uint16(b>>16) | 0x40
	}
	b += 0x7fff + (b>>16)&1
	return uint16(b >> 16)
}

// Tensor is a named float32 tensor, row-major.
type Tensor struct {
	Name  string
	Shape []int
	Data  []float32
	// half, when set, holds the tensor's BF16 or F16 bits (dtype says which) instead of Data:
	// only LoadModel keeps weights so, for the inference kernels; Load, and so the trainer,
	// always gets float32 Data.
	half  []uint16
	dtype DType
}

// Half returns the tensor's half-precision bits and their dtype (BF16 or F16) when it is held
// so (LoadWeights, LoadModel), or nil and F32 when its values are in Data.
func (t *Tensor) Half() ([]uint16, DType) {
	if t.half == nil {
		return nil, F32
	}
	return t.half, t.dtype
}

// at returns element i as float32, whichever way the tensor is held.
func (t *Tensor) at(i int) float32 {
	if t.half == nil {
		return t.Data[i]
	}
	if t.dtype == BF16 {
		return bf16ToF32(t.half[i])
	}
	return f16ToF32(t.half[i])
}

// Len is the number of elements held.
func (t *Tensor) Len() int {
	if t.half != nil {
		return len(t.half)
	}
	return len(t.Data)
}

// WriteSafetensors writes tensors to path in dtype (F32 or BF16), names sorted, the header
// padded to 8 bytes like the reference writer.
func WriteSafetensors(path string, tensors []*Tensor, dtype DType, metadata map[string]string) error {
	if dtype != F32 && dtype != BF16 {
		return fmt.Errorf("write %s: dtype %s not supported: want F32 or BF16", path, dtype)
	}
	sorted := append([]*Tensor(nil), tensors...)
	sort.Slice(sorted, func(i, j int) bool { return sorted[i].Name < sorted[j].Name })
	header := map[string]any{}
	if len(metadata) > 0 {
		header["__metadata__"] = metadata
	}
	var off int64
	for _, t := range sorted {
		n := int64(1)
		for _, d := range t.Shape {
			n *= int64(d)
		}
		if n != int64(len(t.Data)) {
			return fmt.Errorf("write %s: tensor %s: shape %v holds %d elements, data has %d", path, t.Name, t.Shape, n, len(t.Data))
		}
		if _, dup := header[t.Name]; dup {
			return fmt.Errorf("write %s: tensor %s twice", path, t.Name)
		}
		size := n * int64(dtype.size())
		shape := t.Shape
		if shape == nil {
			shape = []int{}
		}
		header[t.Name] = map[string]any{"dtype": dtype, "shape": shape, "data_offsets": []int64{off, off + size}}
		off += size
	}
	hj, err := json.Marshal(header)
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	for len(hj)%8 != 0 {
		hj = append(hj, ' ')
	}
	// Atomic, so a checkpoint file is complete or absent even outside a replaced directory.
	return atomicfile.Write(path, 0o644, func(w io.Writer) error {
		var lenBuf [8]byte
		binary.LittleEndian.PutUint64(lenBuf[:], uint64(len(hj)))
		w.Write(lenBuf[:])
		w.Write(hj)
		buf := make([]byte, 0, 64<<10)
		for _, t := range sorted {
			for _, v := range t.Data {
				if dtype == F32 {
					buf = binary.LittleEndian.AppendUint32(buf, math.Float32bits(v))
				} else {
					buf = binary.LittleEndian.AppendUint16(buf, toBF16(v))
				}
				if len(buf) == cap(buf) {
					if _, err := w.Write(buf); err != nil {
						return err
					}
					buf = buf[:0]
				}
			}
		}
		_, err := w.Write(buf)
		return err
	})
}

// ReadTensors reads every tensor of a checkpoint directory as float32: model.safetensors, or
// the shards listed in model.safetensors.index.json. The second map names each tensor's file,
// for errors.
func ReadTensors(dir string) (map[string]*Tensor, map[string]string, error) {
	return readTensors(dir, false)
}

// readTensors is ReadTensors; with keepHalf, BF16/F16 matrices keep their bits (see Tensor).
func readTensors(dir string, keepHalf bool) (map[string]*Tensor, map[string]string, error) {
	index := filepath.Join(dir, "model.safetensors.index.json")
	var files []string
	want := map[string]string{} // tensor -> shard file, from the index
	if data, err := os.ReadFile(index); err == nil {
		var idx struct {
			WeightMap map[string]string `json:"weight_map"`
		}
		if err := json.Unmarshal(data, &idx); err != nil {
			return nil, nil, fmt.Errorf("%s: %w", index, err)
		}
		if len(idx.WeightMap) == 0 {
			return nil, nil, fmt.Errorf("%s: empty weight_map", index)
		}
		seen := map[string]bool{}
		for name, f := range idx.WeightMap {
			if f != filepath.Base(f) {
				return nil, nil, fmt.Errorf("%s: tensor %s: shard %q is not a file name in the checkpoint directory", index, name, f)
			}
			want[name] = f
			if !seen[f] {
				seen[f] = true
				files = append(files, f)
			}
		}
		sort.Strings(files)
	} else if errors.Is(err, os.ErrNotExist) {
		files = []string{"model.safetensors"}
	} else {
		return nil, nil, err
	}
	out := map[string]*Tensor{}
	source := map[string]string{}
	for _, name := range files {
		path := filepath.Join(dir, name)
		st, err := OpenSafetensors(path)
		if err != nil {
			return nil, nil, err
		}
		for _, info := range st.Tensors {
			if prev, dup := source[info.Name]; dup {
				st.Close()
				return nil, nil, fmt.Errorf("%s: tensor %s also in %s", path, info.Name, prev)
			}
			if f, ok := want[info.Name]; len(want) > 0 && (!ok || f != name) {
				st.Close()
				return nil, nil, fmt.Errorf("%s: tensor %s is not mapped to this shard by %s", path, info.Name, index)
			}
			t, err := st.readTensor(info, keepHalf)
			if err != nil {
				st.Close()
				return nil, nil, err
			}
			out[info.Name] = t
			source[info.Name] = path
		}
		st.Close()
	}
	for name, f := range want {
		if _, ok := out[name]; !ok {
			return nil, nil, fmt.Errorf("%s: tensor %s listed in %s is missing", filepath.Join(dir, f), name, index)
		}
	}
	return out, source, nil
}
