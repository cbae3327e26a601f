package model

import (
	"bufio"
	"fmt"
	"os"
	"strconv"
	"strings"
)

// KVCacheBytes is the memory of a Cache for rows sequences of up to positions tokens each
// (float32 keys and values, every layer).
func (c *Config) KVCacheBytes(rows, positions int) int64 {
	return 2 * 4 * int64(c.NumHiddenLayers) * int64(rows) * int64(positions) * int64(c.NumKeyValueHeads) * int64(c.HeadDim)
}

// CheckDecode says, before anything is allocated, whether decoding rows sequences of up to
// positions tokens fits the model's context window and the KV cache fits this machine's
// memory: one sentence naming the limit, or nil.
func (c *Config) CheckDecode(rows, positions int) error {
	if positions > c.MaxPositionEmbeddings {
		return fmt.Errorf("%d positions exceed the model's context of %d (max_position_embeddings)", positions, c.MaxPositionEmbeddings)
	}
	return c.checkKVMemory(rows, positions)
}

// checkKVMemory refuses a KV cache larger than the machine's memory, which would otherwise
// end the process with the runtime's "out of memory" and a stack dump.
func (c *Config) checkKVMemory(rows, positions int) error {
	if total := PhysicalMemory(); total > 0 {
		if need := c.KVCacheBytes(rows, positions); need > total {
			return fmt.Errorf("the KV cache for %d rows × %d positions needs %s, more than this machine's %s of memory", rows, positions, formatBytes(need), formatBytes(total))
		}
	}
	return nil
}

// PhysicalMemory is this machine's memory in bytes (MemTotal of /proc/meminfo), or 0 where
// it cannot be read.
func PhysicalMemory() int64 {
	f, err := os.Open("/proc/meminfo")
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) >= 2 && fields[0] == "MemTotal:" {
			kb, err := strconv.ParseInt(fields[1], 10, 64)
			if err != nil {
				return 0
			}
			return kb << 10
		}
	}
	return 0
}

func formatBytes(n int64) string {
	const gib = 1 << 30
	if n >= gib {
		return fmt.Sprintf("%.1f GiB", float64(n)/gib)
	}
	return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
}

// CheckWeightsMemory refuses a model whose float32 weights alone exceed this machine's memory.
func (c *Config) CheckWeightsMemory() error {
	if total := PhysicalMemory(); total > 0 {
		if need := 4 * c.NumParams(); need > total {
			return fmt.Errorf("the float32 weights of %d parameters need %s, more than this machine's %s of memory", c.NumParams(), formatBytes(need), formatBytes(total))
		}
	}
	return nil
}
