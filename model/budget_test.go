package model

import (
	"strings"
	"testing"
)

// A decode that cannot fit is refused up front, naming the limit: the context window, or the
// machine's memory for the KV cache (which Generate itself also refuses, before allocating).
func TestCheckDecodeRefusesWhatCannotFit(t *testing.T) {
	c := &Config{NumHiddenLayers: 2, NumKeyValueHeads: 2, HeadDim: 8, MaxPositionEmbeddings: 512}
	if got, want := c.KVCacheBytes(3, 100), int64(2*4*2*3*100*2*8); got != want {
		t.Errorf("KVCacheBytes(3, 100) = %d, want %d", got, want)
	}
	if err := c.CheckDecode(4, 512); err != nil {
		t.Errorf("a decode that fits: %v", err)
	}
	if err := c.CheckDecode(1, 513); err == nil || !strings.Contains(err.Error(), "context of 512") {
		t.Errorf("513 positions of 512: got %v", err)
	}
	if PhysicalMemory() <= 0 {
		t.Fatal("no MemTotal in /proc/meminfo")
	}
	c.HiddenSize, c.IntermediateSize, c.VocabSize, c.NumAttentionHeads = 64, 128, 100, 8
	if err := c.CheckWeightsMemory(); err != nil {
		t.Errorf("a tiny model: %v", err)
	}
	c.HiddenSize, c.NumHiddenLayers = 1<<16, 1024
	if err := c.CheckWeightsMemory(); err == nil || !strings.Contains(err.Error(), "more than this machine's") {
		t.Errorf("%d parameters: got %v", c.NumParams(), err)
	}
	c.HiddenSize, c.NumHiddenLayers = 64, 2
	c.MaxPositionEmbeddings = 1 << 30
	if err := c.CheckDecode(1<<20, 1<<20); err == nil || !strings.Contains(err.Error(), "more than this machine's") {
		t.Errorf("a KV cache of %d bytes: got %v", c.KVCacheBytes(1<<20, 1<<20), err)
	}
}
