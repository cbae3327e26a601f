// Package tokenizer reads Hugging Face byte-level BPE tokenizers (GPT-2,
// Llama-3, Qwen2 and compatible tokenizer.json files), encodes text to the
// same ids as the Hugging Face tokenizers library, decodes ids back to the
// exact bytes (where Hugging Face would replace invalid UTF-8), renders the
// chat templates of the ChatML and Llama-3 families, and writes small
// byte-level tokenizers for freshly initialised models.
//
// Supported tokenizer.json components: model BPE (merges as "a b" or
// ["a","b"], ignore_merges); normalizer NFC or a Sequence of it; pre-tokenizers
// ByteLevel, Split with the GPT-2, Llama-3 or Qwen2 regex (behavior Isolated),
// Digits and Sequence; post-processors ByteLevel, TemplateProcessing,
// Roberta/BertProcessing and Sequence; decoder ByteLevel. Anything else is a
// load error naming it, never a silent approximation.
package tokenizer

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
)

// Tokenizer encodes text to token ids and back. It is safe for concurrent use.
type Tokenizer struct {
	model      *bpe
	vocab      map[string]int // vocabulary spelling (e.g. "Ġthe", "<|im_end|>") → id
	pieces     [][]byte       // id → decoded bytes; nil where no token has that id
	special    []bool         // id → is a special added token
	normalizer func(string) string
	pre        []preStep
	rawAdded   *addedMatcher // added tokens with normalized=false, matched before normalisation
	normAdded  *addedMatcher // added tokens with normalized=true, matched after it
	prefix     []int         // post-processor ids before the sequence when addSpecial
	suffix     []int         // and after it

	bos, eos int // -1 when unknown
	eosIDs   []int
	chat     *chatTemplate
	chatErr  error
}

// preStep is one pre-tokenizer of the (flattened) pipeline.
type preStep func(piece string, emit func(string))

// Load reads dir/tokenizer.json and, when present, dir/tokenizer_config.json
// (bos/eos tokens, chat template), dir/chat_template.jinja and
// dir/generation_config.json (bos/eos ids). A chat template this package
// cannot render does not fail Load; ApplyChatTemplate reports it.
func Load(dir string) (*Tokenizer, error) {
	path := filepath.Join(dir, "tokenizer.json")
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("load tokenizer: %w", err)
	}
	t, err := FromJSON(data)
	if err != nil {
		return nil, fmt.Errorf("load tokenizer %s: %w", path, err)
	}
	if err := t.loadConfigs(dir); err != nil {
		return nil, err
	}
	return t, nil
}

// FromJSON builds a tokenizer from the contents of a tokenizer.json file
// alone (no bos/eos or chat template; see Load).
func FromJSON(data []byte) (*Tokenizer, error) {
	var f fileJSON
	if err := json.Unmarshal(data, &f); err != nil {
		return nil, fmt.Errorf("parse: %w", err)
	}
	t := &Tokenizer{bos: -1, eos: -1}
	if err := t.buildModel(&f.Model); err != nil {
		return nil, fmt.Errorf("model: %w", err)
	}
	if err := t.buildAdded(f.AddedTokens); err != nil {
		return nil, fmt.Errorf("added_tokens: %w", err)
	}
	norm, err := buildNormalizer(f.Normalizer)
	if err != nil {
		return nil, fmt.Errorf("normalizer: %w", err)
	}
	t.normalizer = norm
	byteLevel := false
	if t.pre, err = buildPreTokenizer(f.PreTokenizer, &byteLevel); err != nil {
		return nil, fmt.Errorf("pre_tokenizer: %w", err)
	}
	if !byteLevel {
		return nil, errors.New("pre_tokenizer: no ByteLevel step; only byte-level BPE tokenizers are supported")
	}
	if err := checkDecoder(f.Decoder); err != nil {
		return nil, fmt.Errorf("decoder: %w", err)
	}
	if err := t.buildPostProcessor(f.PostProcessor); err != nil {
		return nil, fmt.Errorf("post_processor: %w", err)
	}
	// Normalized added tokens are searched for in their normalised spelling.
	var raw, normed []AddedToken
	for _, a := range f.AddedTokens {
		if a.Normalized && t.normalizer != nil {
			normed = append(normed, a)
		} else {
			raw = append(raw, a)
		}
	}
	t.rawAdded = newAddedMatcher(raw, func(a AddedToken) string { return a.Content })
	t.normAdded = newAddedMatcher(normed, func(a AddedToken) string { return t.normalizer(a.Content) })
	return t, nil
}

func (t *Tokenizer) setPiece(id int, tok string, special bool) {
	if id >= len(t.pieces) {
		t.pieces = slices.Grow(t.pieces, id+1-len(t.pieces))[:id+1]
		t.special = slices.Grow(t.special, id+1-len(t.special))[:id+1]
	}
	t.pieces[id] = byteLevelDecode(tok)
	t.special[id] = special
	t.vocab[tok] = id
}

func (t *Tokenizer) buildModel(m *modelJSON) error {
	if m.Type != "" && m.Type != "BPE" {
		return fmt.Errorf("model type %q is not supported (only BPE)", m.Type)
	}
	if m.Dropout != nil && *m.Dropout != 0 {
		return fmt.Errorf("BPE dropout %v is not supported", *m.Dropout)
	}
	if m.ContinuingSubwordPrefix != "" || m.EndOfWordSuffix != "" {
		return errors.New("continuing_subword_prefix/end_of_word_suffix are not supported by byte-level BPE")
	}
	if len(m.Vocab) == 0 {
		return errors.New("empty vocab")
	}
	t.vocab = make(map[string]int, len(m.Vocab))
	b := &bpe{
		merges:       make(map[uint64]merge, len(m.Merges)),
		wholeWords:   make(map[string]int32, len(m.Vocab)),
		ignoreMerges: m.IgnoreMerges,
		cache:        make(map[string][]int32),
	}
	maxID := 0
	for _, id := range m.Vocab {
		maxID = max(maxID, id)
	}
	t.pieces = make([][]byte, maxID+1)
	t.special = make([]bool, maxID+1)
	for tok, id := range m.Vocab {
		if id < 0 {
			return fmt.Errorf("token %q has negative id %d", tok, id)
		}
		t.setPiece(id, tok, false)
		b.wholeWords[string(t.pieces[id])] = int32(id)
	}
	for c := 0; c < 256; c++ {
		id, ok := m.Vocab[string(byteToRune[c])]
		if !ok {
			return fmt.Errorf("vocab lacks the byte-level token %q for byte 0x%02x", string(byteToRune[c]), c)
		}
		b.byteIDs[c] = int32(id)
	}
	for rank, raw := range m.Merges {
		left, right, err := parseMerge(raw)
		if err != nil {
			return fmt.Errorf("merge %d: %w", rank, err)
		}
		l, okL := m.Vocab[left]
		r, okR := m.Vocab[right]
		n, okN := m.Vocab[left+right]
		if !okL || !okR || !okN {
			return fmt.Errorf("merge %d (%q %q) uses a token outside the vocab", rank, left, right)
		}
		// A repeated pair takes its last rank, as HF's map construction does.
		b.merges[pairKey(int32(l), int32(r))] = merge{rank: int32(rank), id: int32(n)}
	}
	t.model = b
	return nil
}

// parseMerge accepts both spellings used by tokenizer.json: "a b" and ["a","b"].
func parseMerge(raw json.RawMessage) (string, string, error) {
	var s string
	if err := json.Unmarshal(raw, &s); err == nil {
		left, right, ok := strings.Cut(s, " ")
		if !ok || strings.Contains(right, " ") {
			return "", "", fmt.Errorf("%q is not two space-separated tokens", s)
		}
		return left, right, nil
	}
	var pair []string
	if err := json.Unmarshal(raw, &pair); err != nil || len(pair) != 2 {
		return "", "", fmt.Errorf("%s is neither \"a b\" nor [\"a\",\"b\"]", raw)
	}
	return pair[0], pair[1], nil
}

func (t *Tokenizer) buildAdded(added []AddedToken) error {
	for _, a := range added {
		if a.ID < 0 || a.Content == "" {
			return fmt.Errorf("invalid added token %+v", a)
		}
		t.setPiece(a.ID, a.Content, a.Special)
	}
	return nil
}

// Encode turns text into token ids. Added and special tokens written in the
// text (e.g. "<|im_end|>") become their ids, as in Hugging Face's encode.
// addSpecial applies the post-processor (e.g. Llama-3's leading
// <|begin_of_text|>); GPT-2 and Qwen2 add nothing. Chat-template output that
// already spells out a BOS should be encoded with addSpecial false.
func (t *Tokenizer) Encode(text string, addSpecial bool) []int {
	e := &encoding{t: t, ids: make([]int, 0, len(text)/3+len(t.prefix)+len(t.suffix)+1)}
	if addSpecial {
		e.ids = append(e.ids, t.prefix...)
	}
	// Chain the pre-tokenizer steps once per call, so that pieces flow straight
	// into BPE without per-piece allocations.
	emit := e.word
	for k := len(t.pre) - 1; k >= 0; k-- {
		step, then := t.pre[k], emit
		emit = func(p string) { step(p, then) }
	}
	t.rawAdded.split(text, func(piece string, id int) {
		if id >= 0 {
			e.ids = append(e.ids, id)
			return
		}
		if t.normalizer != nil {
			piece = t.normalizer(piece)
		}
		t.normAdded.split(piece, func(p string, id int) {
			if id >= 0 {
				e.ids = append(e.ids, id)
			} else if p != "" {
				emit(p)
			}
		})
	})
	if addSpecial {
		e.ids = append(e.ids, t.suffix...)
	}
	return e.ids
}

// encoding accumulates the ids of one Encode call.
type encoding struct {
	t   *Tokenizer
	ids []int
}

func (e *encoding) word(w string) {
	if w != "" {
		e.ids = e.t.model.appendWord(e.ids, w)
	}
}

// VocabSize is one more than the largest token id, i.e. the number of rows an
// embedding needs to cover every id this tokenizer can produce.
func (t *Tokenizer) VocabSize() int { return len(t.pieces) }

// TokenID looks a token up by its vocabulary spelling ("Ġthe", "<|im_end|>").
func (t *Tokenizer) TokenID(token string) (int, bool) {
	id, ok := t.vocab[token]
	return id, ok
}

// IsSpecial reports whether id is a special added token such as <|im_end|>.
func (t *Tokenizer) IsSpecial(id int) bool { return id >= 0 && id < len(t.special) && t.special[id] }

// BOS is the configured beginning-of-sequence id. Whether Encode prepends it
// is the post-processor's decision, not this value's.
func (t *Tokenizer) BOS() (int, bool) { return t.bos, t.bos >= 0 }

// EOS is the primary end-of-sequence id (tokenizer_config's eos_token, else
// the first of generation_config's eos_token_id).
func (t *Tokenizer) EOS() (int, bool) { return t.eos, t.eos >= 0 }

// EOSIDs lists every id that ends generation (EOS plus generation_config's
// eos_token_id list, e.g. Qwen2's <|im_end|> and <|endoftext|>).
func (t *Tokenizer) EOSIDs() []int { return slices.Clone(t.eosIDs) }

func (t *Tokenizer) loadConfigs(dir string) error {
	path := filepath.Join(dir, "tokenizer_config.json")
	var cfg tokenizerConfigJSON
	if err := readJSONIfExists(path, &cfg); err != nil {
		return err
	}
	var bosName, eosName string
	var err error
	if bosName, err = tokenName(cfg.BOSToken); err != nil {
		return fmt.Errorf("load tokenizer config %s: bos_token: %w", path, err)
	}
	if eosName, err = tokenName(cfg.EOSToken); err != nil {
		return fmt.Errorf("load tokenizer config %s: eos_token: %w", path, err)
	}
	lookup := func(field, name string) (int, error) {
		if name == "" {
			return -1, nil
		}
		id, ok := t.TokenID(name)
		if !ok {
			return -1, fmt.Errorf("load tokenizer config %s: %s %q is not in the vocabulary", path, field, name)
		}
		return id, nil
	}
	if t.bos, err = lookup("bos_token", bosName); err != nil {
		return err
	}
	if t.eos, err = lookup("eos_token", eosName); err != nil {
		return err
	}

	genPath := filepath.Join(dir, "generation_config.json")
	var gen generationConfigJSON
	if err := readJSONIfExists(genPath, &gen); err != nil {
		return err
	}
	genEOS, err := intOrList(gen.EOSTokenID)
	if err != nil {
		return fmt.Errorf("load generation config %s: eos_token_id: %w", genPath, err)
	}
	genBOS, err := intOrList(gen.BOSTokenID)
	if err != nil {
		return fmt.Errorf("load generation config %s: bos_token_id: %w", genPath, err)
	}
	if t.bos < 0 && len(genBOS) > 0 {
		t.bos = genBOS[0]
	}
	if t.eos < 0 && len(genEOS) > 0 {
		t.eos = genEOS[0]
	}
	if t.eos >= 0 {
		t.eosIDs = append(t.eosIDs, t.eos)
	}
	for _, id := range genEOS {
		if !slices.Contains(t.eosIDs, id) {
			t.eosIDs = append(t.eosIDs, id)
		}
	}

	tmpl, err := chatTemplateSource(cfg.ChatTemplate)
	if err != nil {
		return fmt.Errorf("load tokenizer config %s: chat_template: %w", path, err)
	}
	jinjaPath := filepath.Join(dir, "chat_template.jinja")
	if tmpl == "" {
		data, err := os.ReadFile(jinjaPath)
		switch {
		case err == nil:
			tmpl = string(data)
		case !errors.Is(err, fs.ErrNotExist):
			return fmt.Errorf("load chat template: %w", err)
		}
	}
	if tmpl == "" {
		t.chatErr = fmt.Errorf("no chat template in %s or %s", path, jinjaPath)
	} else {
		t.chat, t.chatErr = parseChatTemplate(tmpl, bosName)
		if t.chatErr != nil {
			t.chatErr = fmt.Errorf("chat template of %s: %w", dir, t.chatErr)
		}
	}
	return nil
}

func readJSONIfExists(path string, v any) error {
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("load tokenizer config: %w", err)
	}
	if err := json.Unmarshal(data, v); err != nil {
		return fmt.Errorf("load tokenizer config %s: %w", path, err)
	}
	return nil
}
