package tokenizer

import (
	"encoding/json"
	"errors"
	"fmt"

	"golang.org/x/text/unicode/norm"
)

// fileJSON is the subset of tokenizer.json this package interprets. Parts
// whose shape depends on their "type" stay raw until dispatched.
type fileJSON struct {
	AddedTokens   []AddedToken    `json:"added_tokens"`
	Normalizer    json.RawMessage `json:"normalizer"`
	PreTokenizer  json.RawMessage `json:"pre_tokenizer"`
	PostProcessor json.RawMessage `json:"post_processor"`
	Decoder       json.RawMessage `json:"decoder"`
	Model         modelJSON       `json:"model"`
}

type modelJSON struct {
	Type                    string            `json:"type"`
	Dropout                 *float64          `json:"dropout"`
	UnkToken                *string           `json:"unk_token"`
	ContinuingSubwordPrefix string            `json:"continuing_subword_prefix"`
	EndOfWordSuffix         string            `json:"end_of_word_suffix"`
	ByteFallback            bool              `json:"byte_fallback"`
	IgnoreMerges            bool              `json:"ignore_merges"`
	Vocab                   map[string]int    `json:"vocab"`
	Merges                  []json.RawMessage `json:"merges"`
}

type componentJSON struct {
	Type string `json:"type"`

	// Sequence
	Normalizers   []json.RawMessage `json:"normalizers"`
	Pretokenizers []json.RawMessage `json:"pretokenizers"`
	Processors    []json.RawMessage `json:"processors"`
	Decoders      []json.RawMessage `json:"decoders"`

	// ByteLevel
	AddPrefixSpace bool  `json:"add_prefix_space"`
	UseRegex       *bool `json:"use_regex"`

	// Split
	Pattern  struct{ Regex, String *string } `json:"pattern"`
	Behavior string                          `json:"behavior"`
	Invert   bool                            `json:"invert"`

	// Digits
	IndividualDigits bool `json:"individual_digits"`

	// TemplateProcessing
	Single        []templatePieceJSON `json:"single"`
	SpecialTokens map[string]struct {
		IDs []int `json:"ids"`
	} `json:"special_tokens"`

	// RobertaProcessing / BertProcessing: [token, id]
	Cls []json.RawMessage `json:"cls"`
	Sep []json.RawMessage `json:"sep"`
}

type templatePieceJSON struct {
	SpecialToken *struct {
		ID string `json:"id"`
	} `json:"SpecialToken"`
	Sequence *struct {
		ID string `json:"id"`
	} `json:"Sequence"`
}

func isNull(raw json.RawMessage) bool { return len(raw) == 0 || string(raw) == "null" }

func parseComponent(raw json.RawMessage) (*componentJSON, error) {
	var c componentJSON
	if err := json.Unmarshal(raw, &c); err != nil {
		return nil, err
	}
	return &c, nil
}

func buildNormalizer(raw json.RawMessage) (func(string) string, error) {
	if isNull(raw) {
		return nil, nil
	}
	c, err := parseComponent(raw)
	if err != nil {
		return nil, err
	}
	switch c.Type {
	case "NFC":
		return norm.NFC.String, nil
	case "Sequence":
		var steps []func(string) string
		for _, r := range c.Normalizers {
			f, err := buildNormalizer(r)
			if err != nil {
				return nil, err
			}
			if f != nil {
				steps = append(steps, f)
			}
		}
		if len(steps) == 0 {
			return nil, nil
		}
		return func(s string) string {
			for _, f := range steps {
				s = f(s)
			}
			return s
		}, nil
	}
	return nil, fmt.Errorf("normalizer type %q is not supported (supported: NFC, Sequence)", c.Type)
}

func buildPreTokenizer(raw json.RawMessage, byteLevel *bool) ([]preStep, error) {
	if isNull(raw) {
		return nil, nil
	}
	c, err := parseComponent(raw)
	if err != nil {
		return nil, err
	}
	switch c.Type {
	case "Sequence":
		var steps []preStep
		for _, r := range c.Pretokenizers {
			s, err := buildPreTokenizer(r, byteLevel)
			if err != nil {
				return nil, err
			}
			steps = append(steps, s...)
		}
		return steps, nil
	case "ByteLevel":
		*byteLevel = true
		var steps []preStep
		if c.AddPrefixSpace {
			// HF prepends to every piece reaching this step that lacks one.
			steps = append(steps, func(p string, emit func(string)) {
				if p != "" && p[0] != ' ' {
					p = " " + p
				}
				emit(p)
			})
		}
		if c.UseRegex == nil || *c.UseRegex {
			steps = append(steps, func(p string, emit func(string)) { splitIsolated(matchGPT2, p, emit) })
		}
		return steps, nil
	case "Split":
		if c.Pattern.Regex == nil {
			return nil, errors.New("Split with a String pattern is not supported (only the known Regex patterns)")
		}
		if c.Behavior != "Isolated" || c.Invert {
			return nil, fmt.Errorf("Split behavior %q (invert %v) is not supported (only Isolated)", c.Behavior, c.Invert)
		}
		m, err := matcherFor(*c.Pattern.Regex)
		if err != nil {
			return nil, err
		}
		return []preStep{func(p string, emit func(string)) { splitIsolated(m, p, emit) }}, nil
	case "Digits":
		individual := c.IndividualDigits
		return []preStep{func(p string, emit func(string)) { splitDigits(p, individual, emit) }}, nil
	}
	return nil, fmt.Errorf("pre-tokenizer type %q is not supported (supported: ByteLevel, Split, Digits, Sequence)", c.Type)
}

func checkDecoder(raw json.RawMessage) error {
	if isNull(raw) {
		return errors.New("missing; a ByteLevel decoder is required")
	}
	c, err := parseComponent(raw)
	if err != nil {
		return err
	}
	if c.Type == "ByteLevel" {
		return nil
	}
	if c.Type == "Sequence" && len(c.Decoders) == 1 {
		return checkDecoder(c.Decoders[0])
	}
	return fmt.Errorf("decoder type %q is not supported (only ByteLevel)", c.Type)
}

// buildPostProcessor records the ids Encode adds around a single sequence
// when addSpecial is set.
func (t *Tokenizer) buildPostProcessor(raw json.RawMessage) error {
	if isNull(raw) {
		return nil
	}
	c, err := parseComponent(raw)
	if err != nil {
		return err
	}
	switch c.Type {
	case "ByteLevel":
		return nil // only adjusts offsets
	case "Sequence":
		for _, r := range c.Processors {
			if err := t.buildPostProcessor(r); err != nil {
				return err
			}
		}
		return nil
	case "TemplateProcessing":
		seen := false
		for _, p := range c.Single {
			switch {
			case p.Sequence != nil:
				if p.Sequence.ID != "A" {
					return fmt.Errorf("single template uses sequence %q; only A is supported", p.Sequence.ID)
				}
				seen = true
			case p.SpecialToken != nil:
				st, ok := c.SpecialTokens[p.SpecialToken.ID]
				if !ok {
					return fmt.Errorf("special token %q is missing from special_tokens", p.SpecialToken.ID)
				}
				if seen {
					t.suffix = append(t.suffix, st.IDs...)
				} else {
					t.prefix = append(t.prefix, st.IDs...)
				}
			default:
				return errors.New("template piece is neither SpecialToken nor Sequence")
			}
		}
		return nil
	case "RobertaProcessing", "BertProcessing":
		cls, err := processorTokenID(c.Cls)
		if err != nil {
			return fmt.Errorf("cls: %w", err)
		}
		sep, err := processorTokenID(c.Sep)
		if err != nil {
			return fmt.Errorf("sep: %w", err)
		}
		t.prefix = append(t.prefix, cls)
		t.suffix = append(t.suffix, sep)
		return nil
	}
	return fmt.Errorf("post-processor type %q is not supported (supported: ByteLevel, TemplateProcessing, RobertaProcessing, BertProcessing, Sequence)", c.Type)
}

func processorTokenID(pair []json.RawMessage) (int, error) {
	var id int
	if len(pair) != 2 || json.Unmarshal(pair[1], &id) != nil {
		return 0, errors.New("want [token, id]")
	}
	return id, nil
}

type tokenizerConfigJSON struct {
	BOSToken     json.RawMessage `json:"bos_token"`
	EOSToken     json.RawMessage `json:"eos_token"`
	ChatTemplate json.RawMessage `json:"chat_template"`
}

type generationConfigJSON struct {
	BOSTokenID json.RawMessage `json:"bos_token_id"`
	EOSTokenID json.RawMessage `json:"eos_token_id"`
}

// tokenName reads a token field written as "text", {"content": "text"} or null.
func tokenName(raw json.RawMessage) (string, error) {
	if isNull(raw) {
		return "", nil
	}
	var s string
	if json.Unmarshal(raw, &s) == nil {
		return s, nil
	}
	var obj struct {
		Content string `json:"content"`
	}
	if err := json.Unmarshal(raw, &obj); err != nil {
		return "", fmt.Errorf("%s is neither a string nor {\"content\": ...}", raw)
	}
	return obj.Content, nil
}

func intOrList(raw json.RawMessage) ([]int, error) {
	if isNull(raw) {
		return nil, nil
	}
	var one int
	if json.Unmarshal(raw, &one) == nil {
		return []int{one}, nil
	}
	var many []int
	if err := json.Unmarshal(raw, &many); err != nil {
		return nil, fmt.Errorf("%s is neither an id nor a list of ids", raw)
	}
	return many, nil
}

// chatTemplateSource reads chat_template written as a string or as a list of
// named templates (in which case "default" is used).
func chatTemplateSource(raw json.RawMessage) (string, error) {
	if isNull(raw) {
		return "", nil
	}
	var s string
	if json.Unmarshal(raw, &s) == nil {
		return s, nil
	}
	var named []struct {
		Name     string `json:"name"`
		Template string `json:"template"`
	}
	if err := json.Unmarshal(raw, &named); err != nil {
		return "", fmt.Errorf("neither a string nor a list of {name, template}")
	}
	for _, n := range named {
		if n.Name == "default" {
			return n.Template, nil
		}
	}
	return "", errors.New("no template named \"default\"")
}
