package tokenizer

import (
	"bytes"
	"container/heap"
	"encoding/json"
	"fmt"
	"path/filepath"
	"slices"
	"strconv"

	"github.com/autoif/autoif/atomicfile"
)

// ByteLevelOptions describes a small byte-level BPE tokenizer to generate.
type ByteLevelOptions struct {
	// VocabSize is the target number of tokens: 256 byte tokens, the special
	// tokens and as many learned merges as fit. 0 means no merges.
	VocabSize int
	// Corpus is the training text for merges; merges need VocabSize too.
	Corpus []string
	// MinFrequency is the fewest occurrences a pair needs to be merged (default 2).
	MinFrequency int
	// ExtraSpecialTokens are added after <|endoftext|>, <|im_start|>, <|im_end|>.
	ExtraSpecialTokens []string
	// ModelMaxLength goes into tokenizer_config.json (default 2048).
	ModelMaxLength int
}

// ByteLevelFiles are the generated Hugging Face files.
type ByteLevelFiles struct {
	TokenizerJSON       []byte // tokenizer.json
	TokenizerConfigJSON []byte // tokenizer_config.json (ChatML chat template, eos <|im_end|>)
}

// DefaultSpecialTokens are always present in generated tokenizers, in this order.
var DefaultSpecialTokens = []string{"<|endoftext|>", "<|im_start|>", "<|im_end|>"}

// chatMLTemplate is the plain ChatML template written for generated tokenizers.
const chatMLTemplate = "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"

// NewByteLevelJSON builds a Qwen2-style byte-level BPE tokenizer: token i is
// byte i for i < 256, then learned merges, then the special tokens. Text is
// split with the Qwen2 pattern and there is no normalizer, so decoding
// returns exactly the encoded bytes. Output is deterministic.
func NewByteLevelJSON(opts ByteLevelOptions) (*ByteLevelFiles, error) {
	specials := append(slices.Clone(DefaultSpecialTokens), opts.ExtraSpecialTokens...)
	seen := map[string]bool{}
	for _, s := range specials {
		if s == "" || seen[s] {
			return nil, fmt.Errorf("byte-level tokenizer: special token %q is empty or repeated", s)
		}
		seen[s] = true
	}
	minFreq := opts.MinFrequency
	if minFreq == 0 {
		minFreq = 2
	}
	maxLen := opts.ModelMaxLength
	if maxLen == 0 {
		maxLen = 2048
	}
	base := 256 + len(specials)
	if opts.VocabSize != 0 && opts.VocabSize < base {
		return nil, fmt.Errorf("byte-level tokenizer: vocab size %d is below the %d byte and special tokens", opts.VocabSize, base)
	}
	if opts.VocabSize > base && len(opts.Corpus) == 0 {
		return nil, fmt.Errorf("byte-level tokenizer: vocab size %d needs a corpus to learn merges from", opts.VocabSize)
	}

	tokens := make([][]byte, 256) // id → raw bytes
	for b := range tokens {
		tokens[b] = []byte{byte(b)}
	}
	var merges [][2]int
	if opts.VocabSize > base {
		tokens, merges = trainBPE(opts.Corpus, opts.VocabSize-len(specials), minFreq)
	}

	var vocab orderedVocab
	for id, raw := range tokens {
		vocab = append(vocab, vocabEntry{byteLevelString(raw), id})
	}
	mergeStrs := make([]string, len(merges))
	for i, m := range merges {
		mergeStrs[i] = byteLevelString(tokens[m[0]]) + " " + byteLevelString(tokens[m[1]])
	}
	var added []AddedToken
	addedDecoder := orderedAdded{}
	for i, s := range specials {
		a := AddedToken{ID: len(tokens) + i, Content: s, Special: true}
		added = append(added, a)
		addedDecoder = append(addedDecoder, a)
	}
	byteLevel := map[string]any{"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": false, "use_regex": false}
	file := struct {
		Version       string       `json:"version"`
		Truncation    any          `json:"truncation"`
		Padding       any          `json:"padding"`
		AddedTokens   []AddedToken `json:"added_tokens"`
		Normalizer    any          `json:"normalizer"`
		PreTokenizer  any          `json:"pre_tokenizer"`
		PostProcessor any          `json:"post_processor"`
		Decoder       any          `json:"decoder"`
		Model         any          `json:"model"`
	}{
		Version:     "1.0",
		AddedTokens: added,
		PreTokenizer: map[string]any{"type": "Sequence", "pretokenizers": []any{
			map[string]any{"type": "Split", "pattern": map[string]string{"Regex": patternQwen2}, "behavior": "Isolated", "invert": false},
			byteLevel,
		}},
		PostProcessor: byteLevel,
		Decoder:       byteLevel,
		Model: struct {
			Type                    string       `json:"type"`
			Dropout                 any          `json:"dropout"`
			UnkToken                any          `json:"unk_token"`
			ContinuingSubwordPrefix string       `json:"continuing_subword_prefix"`
			EndOfWordSuffix         string       `json:"end_of_word_suffix"`
			FuseUnk                 bool         `json:"fuse_unk"`
			ByteFallback            bool         `json:"byte_fallback"`
			IgnoreMerges            bool         `json:"ignore_merges"`
			Vocab                   orderedVocab `json:"vocab"`
			Merges                  []string     `json:"merges"`
		}{Type: "BPE", Vocab: vocab, Merges: mergeStrs},
	}
	tokJSON, err := marshalJSON(file)
	if err != nil {
		return nil, fmt.Errorf("byte-level tokenizer: %w", err)
	}
	cfg := struct {
		AddBOSToken               bool         `json:"add_bos_token"`
		AddEOSToken               bool         `json:"add_eos_token"`
		AddedTokensDecoder        orderedAdded `json:"added_tokens_decoder"`
		AdditionalSpecialTokens   []string     `json:"additional_special_tokens"`
		BOSToken                  any          `json:"bos_token"`
		ChatTemplate              string       `json:"chat_template"`
		CleanUpTokenizationSpaces bool         `json:"clean_up_tokenization_spaces"`
		EOSToken                  string       `json:"eos_token"`
		ModelMaxLength            int          `json:"model_max_length"`
		PadToken                  string       `json:"pad_token"`
		TokenizerClass            string       `json:"tokenizer_class"`
		UnkToken                  any          `json:"unk_token"`
	}{
		AddedTokensDecoder:      addedDecoder,
		AdditionalSpecialTokens: specials[1:],
		ChatTemplate:            chatMLTemplate,
		EOSToken:                "<|im_end|>",
		ModelMaxLength:          maxLen,
		PadToken:                "<|endoftext|>",
		TokenizerClass:          "PreTrainedTokenizerFast",
	}
	cfgJSON, err := marshalJSON(cfg)
	if err != nil {
		return nil, fmt.Errorf("byte-level tokenizer config: %w", err)
	}
	return &ByteLevelFiles{TokenizerJSON: tokJSON, TokenizerConfigJSON: cfgJSON}, nil
}

// WriteDir writes tokenizer.json and tokenizer_config.json into dir, each via
// a temporary file and rename so a reader never sees half a file.
func (f *ByteLevelFiles) WriteDir(dir string) error {
	for _, file := range []struct {
		name string
		data []byte
	}{{"tokenizer.json", f.TokenizerJSON}, {"tokenizer_config.json", f.TokenizerConfigJSON}} {
		if err := atomicfile.WriteFile(filepath.Join(dir, file.name), file.data, 0o644); err != nil {
			return err
		}
	}
	return nil
}

func marshalJSON(v any) ([]byte, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false) // keep "<|im_end|>" readable
	enc.SetIndent("", "  ")
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// orderedVocab marshals as a JSON object in id order (a Go map would sort by key).
type orderedVocab []vocabEntry

type vocabEntry struct {
	token string
	id    int
}

func (v orderedVocab) MarshalJSON() ([]byte, error) {
	var b bytes.Buffer
	b.WriteByte('{')
	for i, e := range v {
		if i > 0 {
			b.WriteByte(',')
		}
		k, err := marshalNoEscape(e.token)
		if err != nil {
			return nil, err
		}
		b.Write(k)
		b.WriteByte(':')
		b.WriteString(strconv.Itoa(e.id))
	}
	b.WriteByte('}')
	return b.Bytes(), nil
}

// orderedAdded marshals as tokenizer_config's added_tokens_decoder: {"id": {...}}.
type orderedAdded []AddedToken

func (a orderedAdded) MarshalJSON() ([]byte, error) {
	var b bytes.Buffer
	b.WriteByte('{')
	for i, t := range a {
		if i > 0 {
			b.WriteByte(',')
		}
		v, err := marshalNoEscape(struct {
			Content    string `json:"content"`
			LStrip     bool   `json:"lstrip"`
			Normalized bool   `json:"normalized"`
			RStrip     bool   `json:"rstrip"`
			SingleWord bool   `json:"single_word"`
			Special    bool   `json:"special"`
		}{t.Content, t.LStrip, t.Normalized, t.RStrip, t.SingleWord, t.Special})
		if err != nil {
			return nil, err
		}
		b.WriteString(strconv.Quote(strconv.Itoa(t.ID)) + ":")
		b.Write(v)
	}
	b.WriteByte('}')
	return b.Bytes(), nil
}

func marshalNoEscape(v any) ([]byte, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return bytes.TrimRight(buf.Bytes(), "\n"), nil
}

// trainBPE learns merges over byte-level words of the corpus (split with the
// Qwen2 pattern) until there are vocabSize tokens or no pair occurs
// minFreq times. Ties go to the smaller (left, right) id pair, so the result
// is deterministic. It returns every token's bytes (ids 0..255 are the bytes)
// and the merges in rank order.
func trainBPE(corpus []string, vocabSize, minFreq int) ([][]byte, [][2]int) {
	counts := map[string]int{}
	for _, doc := range corpus {
		splitIsolated(func(s string, i int) int { return matchLlama3Style(s, i, 1) }, doc, func(w string) { counts[w]++ })
	}
	words := make([]trainWord, 0, len(counts))
	for w, c := range counts {
		syms := make([]int, len(w))
		for i := 0; i < len(w); i++ {
			syms[i] = int(w[i])
		}
		words = append(words, trainWord{syms, c})
	}
	// Map iteration order is random; sort so where-lists and ties are stable.
	slices.SortFunc(words, func(a, b trainWord) int { return slices.Compare(a.syms, b.syms) })

	tokens := make([][]byte, 256)
	byBytes := map[string]int{}
	for b := range tokens {
		tokens[b] = []byte{byte(b)}
		byBytes[string(tokens[b])] = b
	}
	pairCount := map[[2]int]int{}
	where := map[[2]int][]int{}
	h := &pairHeap{}
	for wi, w := range words {
		for i := 0; i+1 < len(w.syms); i++ {
			p := [2]int{w.syms[i], w.syms[i+1]}
			pairCount[p] += w.count
			where[p] = append(where[p], wi)
		}
	}
	for p, c := range pairCount {
		heap.Push(h, pairEntry{p, c})
	}
	var merges [][2]int
	for len(tokens) < vocabSize && h.Len() > 0 {
		top := heap.Pop(h).(pairEntry)
		if pairCount[top.pair] != top.count || top.count == 0 {
			continue // stale entry
		}
		if top.count < minFreq {
			break
		}
		p := top.pair
		raw := append(slices.Clone(tokens[p[0]]), tokens[p[1]]...)
		id, ok := byBytes[string(raw)]
		if !ok {
			id = len(tokens)
			tokens = append(tokens, raw)
			byBytes[string(raw)] = id
		}
		merges = append(merges, p)
		touched := map[[2]int]bool{}
		done := map[int]bool{}
		for _, wi := range where[p] {
			if done[wi] {
				continue
			}
			done[wi] = true
			w := &words[wi]
			for i := 0; i+1 < len(w.syms); i++ {
				q := [2]int{w.syms[i], w.syms[i+1]}
				pairCount[q] -= w.count
				touched[q] = true
			}
			out := w.syms[:0]
			for i := 0; i < len(w.syms); i++ {
				if i+1 < len(w.syms) && w.syms[i] == p[0] && w.syms[i+1] == p[1] {
					out = append(out, id)
					i++
				} else {
					out = append(out, w.syms[i])
				}
			}
			w.syms = out
			for i := 0; i+1 < len(w.syms); i++ {
				q := [2]int{w.syms[i], w.syms[i+1]}
				pairCount[q] += w.count
				if q[0] == id || q[1] == id { // pairs without id were indexed already
					where[q] = append(where[q], wi)
				}
				touched[q] = true
			}
		}
		delete(where, p)
		for q := range touched {
			if pairCount[q] > 0 {
				heap.Push(h, pairEntry{q, pairCount[q]})
			} else {
				delete(pairCount, q)
			}
		}
	}
	return tokens, merges
}

type trainWord struct {
	syms  []int
	count int
}

type pairEntry struct {
	pair  [2]int
	count int
}

type pairHeap []pairEntry

func (h pairHeap) Len() int { return len(h) }
func (h pairHeap) Less(a, b int) bool {
	if h[a].count != h[b].count {
		return h[a].count > h[b].count
	}
	if h[a].pair[0] != h[b].pair[0] {
		return h[a].pair[0] < h[b].pair[0]
	}
	return h[a].pair[1] < h[b].pair[1]
}
func (h pairHeap) Swap(a, b int) { h[a], h[b] = h[b], h[a] }
func (h *pairHeap) Push(x any)   { *h = append(*h, x.(pairEntry)) }
func (h *pairHeap) Pop() any {
	old := *h
	e := old[len(old)-1]
	*h = old[:len(old)-1]
	return e
}
