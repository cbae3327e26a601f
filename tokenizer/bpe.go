package tokenizer

import (
	"container/heap"
	"strings"
	"sync"
)

// bpe is a byte-level BPE model working directly on token ids: a word's
// bytes start as the 256 byte tokens and merges are looked up by id pair, so
// encoding never materialises the "Ġ"-spelled strings of the vocabulary.
type bpe struct {
	byteIDs      [256]int32
	merges       map[uint64]merge
	wholeWords   map[string]int32 // raw bytes → id, used by ignore_merges
	ignoreMerges bool

	mu    sync.Mutex
	cache map[string][]int32
}

type merge struct {
	rank int32
	id   int32
}

func pairKey(a, b int32) uint64 { return uint64(uint32(a))<<32 | uint64(uint32(b)) }

const (
	maxCacheEntries = 1 << 16
	// Words longer than this use the heap; the quadratic scan is faster below.
	linearMergeLimit = 48
	noRank           = int32(1<<31 - 1)
)

// appendWord appends the ids of one pre-tokenized word.
func (m *bpe) appendWord(dst []int, word string) []int {
	if len(word) == 1 {
		return append(dst, int(m.byteIDs[word[0]]))
	}
	m.mu.Lock()
	ids, ok := m.cache[word]
	m.mu.Unlock()
	if !ok {
		ids = m.encodeWord(word)
		m.mu.Lock()
		if len(m.cache) >= maxCacheEntries {
			clear(m.cache)
		}
		// Clone the key: word is a slice of the caller's (possibly huge) text.
		m.cache[strings.Clone(word)] = ids
		m.mu.Unlock()
	}
	for _, id := range ids {
		dst = append(dst, int(id))
	}
	return dst
}

func (m *bpe) encodeWord(word string) []int32 {
	if m.ignoreMerges {
		if id, ok := m.wholeWords[word]; ok {
			return []int32{id}
		}
	}
	syms := make([]int32, len(word))
	for i := 0; i < len(word); i++ {
		syms[i] = m.byteIDs[word[i]]
	}
	if len(syms) <= linearMergeLimit {
		return m.mergeLinear(syms)
	}
	return m.mergeHeap(syms)
}

func (m *bpe) rankOf(a, b int32) (int32, int32) {
	if mg, ok := m.merges[pairKey(a, b)]; ok {
		return mg.rank, mg.id
	}
	return noRank, -1
}

// mergeLinear repeatedly merges the lowest-ranked adjacent pair, leftmost
// first on ties — the order Hugging Face's BPE and GPT-2's encoder.py agree on.
func (m *bpe) mergeLinear(syms []int32) []int32 {
	n := len(syms)
	ranks := make([]int32, n) // ranks[i]: pair (i, i+1); last entry unused
	ids := make([]int32, n)
	for i := 0; i+1 < n; i++ {
		ranks[i], ids[i] = m.rankOf(syms[i], syms[i+1])
	}
	for n > 1 {
		best := -1
		bestRank := noRank
		for i := 0; i+1 < n; i++ {
			if ranks[i] < bestRank {
				best, bestRank = i, ranks[i]
			}
		}
		if best < 0 {
			break
		}
		syms[best] = ids[best]
		copy(syms[best+1:n-1], syms[best+2:n])
		copy(ranks[best+1:n-1], ranks[best+2:n])
		copy(ids[best+1:n-1], ids[best+2:n])
		n--
		if best+1 < n {
			ranks[best], ids[best] = m.rankOf(syms[best], syms[best+1])
		} else {
			ranks[best] = noRank
		}
		if best > 0 {
			ranks[best-1], ids[best-1] = m.rankOf(syms[best-1], syms[best])
		}
	}
	return syms[:n:n]
}

// mergeHeap is the O(n log n) equivalent of mergeLinear for long words (a
// run of thousands of identical characters must not take quadratic time).
// Symbols stay in place and are linked; stale heap entries are skipped.
func (m *bpe) mergeHeap(syms []int32) []int32 {
	n := len(syms)
	prev := make([]int, n)
	nxt := make([]int, n)
	alive := make([]bool, n)
	for i := range syms {
		prev[i], nxt[i], alive[i] = i-1, i+1, true
	}
	nxt[n-1] = -1
	h := &mergeHeap{}
	push := func(i int) {
		j := nxt[i]
		if j < 0 {
			return
		}
		if r, id := m.rankOf(syms[i], syms[j]); r != noRank {
			heap.Push(h, heapItem{rank: r, pos: i, left: syms[i], right: syms[j], id: id})
		}
	}
	for i := 0; i+1 < n; i++ {
		push(i)
	}
	for h.Len() > 0 {
		it := heap.Pop(h).(heapItem)
		i := it.pos
		j := nxt[i]
		if !alive[i] || j < 0 || syms[i] != it.left || syms[j] != it.right {
			continue // stale: one side has been merged since this entry was pushed
		}
		syms[i] = it.id
		alive[j] = false
		nxt[i] = nxt[j]
		if nxt[j] >= 0 {
			prev[nxt[j]] = i
		}
		if prev[i] >= 0 {
			push(prev[i])
		}
		push(i)
	}
	out := make([]int32, 0, n)
	for i := 0; i >= 0; i = nxt[i] {
		out = append(out, syms[i])
	}
	return out
}

type heapItem struct {
	rank, id    int32
	left, right int32
	pos         int
}

type mergeHeap []heapItem

func (h mergeHeap) Len() int { return len(h) }
func (h mergeHeap) Less(a, b int) bool {
	if h[a].rank != h[b].rank {
		return h[a].rank < h[b].rank
	}
	return h[a].pos < h[b].pos
}
func (h mergeHeap) Swap(a, b int) { h[a], h[b] = h[b], h[a] }
func (h *mergeHeap) Push(x any)   { *h = append(*h, x.(heapItem)) }
func (h *mergeHeap) Pop() any {
	old := *h
	it := old[len(old)-1]
	*h = old[:len(old)-1]
	return it
}
