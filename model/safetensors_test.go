package model

import (
	"encoding/binary"
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// rawSafetensors builds a file from a literal header and a data section.
func rawSafetensors(header string, data int) []byte {
	b := make([]byte, 8, 8+len(header)+data)
	binary.LittleEndian.PutUint64(b, uint64(len(header)))
	b = append(b, header...)
	return append(b, make([]byte, data)...)
}

func TestSafetensorsRejectsMalformedFiles(t *testing.T) {
	cases := []struct {
		name    string
		file    []byte
		wantErr string
	}{
		{"shorter than length prefix", []byte{1, 2, 3}, "truncated"},
		{"header length beyond file", func() []byte {
			b := rawSafetensors(`{}`, 0)
			binary.LittleEndian.PutUint64(b, 1000)
			return b
		}(), "truncated"},
		{"header not JSON", rawSafetensors(`{"a":`, 0), "header JSON"},
		{"offsets beyond file", rawSafetensors(`{"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}`, 4), "tensor w"},
		{"truncated data", rawSafetensors(`{"w":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}}`, 12), "tensor w"},
		{"size disagrees with dtype and shape", rawSafetensors(`{"w":{"dtype":"BF16","shape":[4],"data_offsets":[0,16]}}`, 16), "want 8"},
		{"overlapping tensors", rawSafetensors(`{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}`, 12), "overlap"},
		{"gap between tensors", rawSafetensors(`{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"b":{"dtype":"F32","shape":[1],"data_offsets":[8,12]}}`, 12), "gap"},
		{"trailing bytes", rawSafetensors(`{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}`, 8), "cover"},
		{"negative offset", rawSafetensors(`{"a":{"dtype":"F32","shape":[1],"data_offsets":[-4,0]}}`, 4), "tensor a"},
		{"unsupported dtype", rawSafetensors(`{"a":{"dtype":"I64","shape":[1],"data_offsets":[0,8]}}`, 8), "unsupported dtype"},
		{"negative dimension", rawSafetensors(`{"a":{"dtype":"F32","shape":[-1],"data_offsets":[0,4]}}`, 4), "bad dimension"},
		{"one offset", rawSafetensors(`{"a":{"dtype":"F32","shape":[1],"data_offsets":[0]}}`, 4), "data_offsets"},
	}
	dir := t.TempDir()
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(dir, strings.ReplaceAll(tc.name, " ", "_")+".safetensors")
			if err := os.WriteFile(path, tc.file, 0o644); err != nil {
				t.Fatal(err)
			}
			_, err := OpenSafetensors(path)
			if err == nil {
				t.Fatal("opened a malformed file without error")
			}
			if !strings.Contains(err.Error(), tc.wantErr) || !strings.Contains(err.Error(), path) {
				t.Errorf("error %q should name the file and mention %q", err, tc.wantErr)
			}
		})
	}
}

func TestSafetensorsRoundTripsF32AndBF16(t *testing.T) {
	vals := []float32{0, 1, -2.5, 3.1415927, 1e-30, -65504, 0.1}
	for _, dt := range []DType{F32, BF16} {
		t.Run(string(dt), func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "m.safetensors")
			in := []*Tensor{
				{Name: "b", Shape: []int{7}, Data: vals},
				{Name: "a.weight", Shape: []int{1, 2}, Data: []float32{5, 6}},
			}
			if err := WriteSafetensors(path, in, dt, map[string]string{"format": "pt"}); err != nil {
				t.Fatal(err)
			}
			st, err := OpenSafetensors(path)
			if err != nil {
				t.Fatal(err)
			}
			defer st.Close()
			if len(st.Tensors) != 2 || st.Tensors[1].Name != "b" || st.Metadata["format"] != "pt" {
				t.Fatalf("header %+v metadata %v", st.Tensors, st.Metadata)
			}
			got, err := st.Read(st.Tensors[1])
			if err != nil {
				t.Fatal(err)
			}
			for i, v := range vals {
				tol := 0.0
				if dt == BF16 {
					tol = math.Abs(float64(v)) / 128 // 8 significant bits
				}
				if math.Abs(float64(got[i]-v)) > tol {
					t.Errorf("element %d: got %v, want %v (±%g)", i, got[i], v, tol)
				}
			}
		})
	}
}

func TestBF16RoundsToNearestEven(t *testing.T) {
	cases := []struct {
		in   uint32
		want uint16
	}{
		{0x3f800000, 0x3f80}, // 1.0 exact
		{0x3f808000, 0x3f80}, // halfway, even stays
		{0x3f818000, 0x3f82}, // halfway, odd rounds up
		{0x3f808001, 0x3f81}, // above halfway
		{0x7f800000, 0x7f80}, // +Inf
	}
	for _, c := range cases {
		if got := toBF16(math.Float32frombits(c.in)); got != c.want {
			t.Errorf("toBF16(%#x) = %#x, want %#x", c.in, got, c.want)
		}
	}
}

func TestF16DecodesNormalSubnormalAndInf(t *testing.T) {
	cases := []struct {
		in   uint16
		want float32
	}{
		{0x3c00, 1}, {0xc000, -2}, {0x7bff, 65504}, {0x0001, 5.9604645e-08}, {0x0000, 0},
		{0x7c00, float32(math.Inf(1))}, {0x3555, 0.33325195},
	}
	for _, c := range cases {
		if got := f16ToF32(c.in); got != c.want {
			t.Errorf("f16ToF32(%#x) = %v, want %v", c.in, got, c.want)
		}
	}
}

func TestReadTensorsFollowsShardIndex(t *testing.T) {
	dir := t.TempDir()
	if err := WriteSafetensors(filepath.Join(dir, "model-00001-of-00002.safetensors"), []*Tensor{{Name: "a", Shape: []int{1}, Data: []float32{1}}}, F32, nil); err != nil {
		t.Fatal(err)
	}
	if err := WriteSafetensors(filepath.Join(dir, "model-00002-of-00002.safetensors"), []*Tensor{{Name: "b", Shape: []int{2}, Data: []float32{2, 3}}}, BF16, nil); err != nil {
		t.Fatal(err)
	}
	writeIndex := func(m map[string]string) {
		data, _ := json.Marshal(map[string]any{"metadata": map[string]any{}, "weight_map": m})
		if err := os.WriteFile(filepath.Join(dir, "model.safetensors.index.json"), data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	writeIndex(map[string]string{"a": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors"})
	got, _, err := ReadTensors(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got["b"].Data[1] != 3 {
		t.Fatalf("got %v", got)
	}
	writeIndex(map[string]string{"a": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors", "c": "model-00002-of-00002.safetensors"})
	if _, _, err := ReadTensors(dir); err == nil || !strings.Contains(err.Error(), "tensor c") {
		t.Errorf("index naming a tensor no shard has: error %v, want one naming tensor c", err)
	}
	writeIndex(map[string]string{"a": "../escape.safetensors"})
	if _, _, err := ReadTensors(dir); err == nil {
		t.Error("index pointing outside the directory was accepted")
	}
}

func FuzzSafetensorsHeader(f *testing.F) {
	f.Add(rawSafetensors(`{"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}`, 8))
	f.Add(rawSafetensors(`{"__metadata__":{"format":"pt"},"a":{"dtype":"BF16","shape":[1,2],"data_offsets":[0,4]},"b":{"dtype":"F16","shape":[],"data_offsets":[4,6]}}`, 6))
	f.Add(rawSafetensors(`{"a":{"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,4]}}`, 4))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		infos, _, err := ParseSafetensorsHeader(b, int64(len(b)))
		if err != nil {
			return
		}
		// Whatever parses must be safe to read: in bounds, exact size, disjoint.
		for _, ti := range infos {
			if ti.Begin < 8 || ti.End > int64(len(b)) || ti.End-ti.Begin != ti.Elements()*int64(ti.DType.size()) {
				t.Fatalf("accepted bad tensor %+v in %d-byte file", ti, len(b))
			}
			_ = decodeFloats(b[ti.Begin:ti.End], ti.DType)
		}
	})
}
