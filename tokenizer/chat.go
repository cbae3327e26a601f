package tokenizer

import (
	"errors"
	"fmt"
	"strings"
	"unicode"
)

// Message is one turn of a conversation.
type Message struct {
	Role    string `json:"role"`
	Content string `json:"content"`
}

// chatFamily is a template family whose Jinja source this package recognises
// and renders natively (there is no Jinja interpreter).
type chatFamily int

const (
	// familyChatML: <|im_start|>{role}\n{content}<|im_end|>\n per message, an
	// optional default system turn, <|im_start|>assistant\n as generation
	// prompt (SmolLM2, Qwen2-Instruct as published, Qwen2.5).
	familyChatML chatFamily = iota + 1
	// familyQwen2Legacy: the early Qwen2 template that ignores
	// add_generation_prompt: it always emits a system turn and opens an
	// assistant turn after every user message.
	familyQwen2Legacy
	// familyLlama3: Llama-3(.0) Instruct headers, bos_token first, contents trimmed.
	familyLlama3
)

type chatTemplate struct {
	family        chatFamily
	defaultSystem *string // ChatML: system turn used when messages[0] is not one
	bos           string  // Llama-3: the text of bos_token
}

// ApplyChatTemplate renders msgs as the tokenizer's chat template would.
// Encode the result with addSpecial false: the template spells out any BOS.
func (t *Tokenizer) ApplyChatTemplate(msgs []Message, addGenerationPrompt bool) (string, error) {
	if t.chatErr != nil {
		return "", t.chatErr
	}
	if t.chat == nil {
		return "", errors.New("apply chat template: no chat template loaded (use Load with a directory holding tokenizer_config.json)")
	}
	return t.chat.render(msgs, addGenerationPrompt)
}

// RenderPrompt returns the token ids a model conditions on for a user prompt, and the text
// those ids spell. Every path that turns a prompt into ids (training data, rollout sampling,
// evaluation, `autoif generate`) goes through it, so the trainer and the sampler always see
// the same ids. With chat, text is one user message through the chat template, with the
// generation prompt, encoded without added special tokens: the template spells out any BOS
// it wants, as in transformers, and adding one would double it. Without chat, text is encoded
// as is with the tokenizer's special tokens (its BOS, where it adds one). Chat on a tokenizer
// without a usable template is an error, never a quiet fallback to plain text, which would
// train on one format and sample on another.
func (t *Tokenizer) RenderPrompt(text string, chat bool) ([]int, string, error) {
	if !chat {
		return t.Encode(text, true), text, nil
	}
	return t.RenderChat([]Message{{Role: "user", Content: text}})
}

// RenderChat is RenderPrompt for a whole conversation (system, user and assistant turns, as
// an OpenAI chat request sends it): the messages through the chat template with the
// generation prompt, encoded without added special tokens. A one-user-message conversation
// gives exactly RenderPrompt's ids.
func (t *Tokenizer) RenderChat(msgs []Message) ([]int, string, error) {
	rendered, err := t.ApplyChatTemplate(msgs, true)
	if err != nil {
		return nil, "", fmt.Errorf("chat template: %w", err)
	}
	return t.Encode(rendered, false), rendered, nil
}

func (c *chatTemplate) render(msgs []Message, addGenerationPrompt bool) (string, error) {
	if len(msgs) == 0 {
		return "", errors.New("apply chat template: no messages")
	}
	var b strings.Builder
	switch c.family {
	case familyChatML:
		if c.defaultSystem != nil && msgs[0].Role != "system" {
			b.WriteString("<|im_start|>system\n" + *c.defaultSystem + "<|im_end|>\n")
		}
		for i, m := range msgs {
			switch m.Role {
			case "system", "user", "assistant":
			default:
				return "", fmt.Errorf("apply chat template: message %d: role %q is not supported (system, user, assistant)", i, m.Role)
			}
			b.WriteString("<|im_start|>" + m.Role + "\n" + m.Content + "<|im_end|>\n")
		}
		if addGenerationPrompt {
			b.WriteString("<|im_start|>assistant\n")
		}
	case familyQwen2Legacy:
		system := *c.defaultSystem
		if msgs[0].Role == "system" {
			system = msgs[0].Content
		}
		b.WriteString("<|im_start|>system\n" + system + "<|im_end|>\n")
		for _, m := range msgs {
			switch m.Role { // other roles, including later system turns, are dropped by the template
			case "user":
				b.WriteString("<|im_start|>user\n" + m.Content + "<|im_end|>\n<|im_start|>assistant\n")
			case "assistant":
				b.WriteString(m.Content + "<|im_end|>\n")
			}
		}
	case familyLlama3:
		b.WriteString(c.bos)
		for _, m := range msgs {
			b.WriteString("<|start_header_id|>" + m.Role + "<|end_header_id|>\n\n" + strings.TrimFunc(m.Content, isPythonSpace) + "<|eot_id|>")
		}
		if addGenerationPrompt {
			b.WriteString("<|start_header_id|>assistant<|end_header_id|>\n\n")
		}
	}
	return b.String(), nil
}

// isPythonSpace matches Python's str.isspace, which Jinja's trim filter uses.
func isPythonSpace(r rune) bool { return unicode.IsSpace(r) || (r >= 0x1c && r <= 0x1f) }

// Fingerprints are Jinja fragments; both they and the template are lexed and
// canonicalised the same way, so formatting differences do not matter.
var (
	fpChatMLMessage  = `{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}`
	fpChatMLGen      = `{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}`
	fpSystemFirst    = `messages[0]['role'] == 'system'`
	fpSystemNotFirst = `messages[0]['role'] != 'system'`

	fpLegacyUser      = `{% if message['role'] == 'user' %}{{ '<|im_start|>user\n' + content + '<|im_end|>\n<|im_start|>assistant\n' }}`
	fpLegacyAssistant = `{% elif message['role'] == 'assistant' %}{{ content + '<|im_end|>' + '\n' }}`
	fpLegacySystem    = `{% if messages[0]['role'] == 'system' %}{% set system_message = messages[0]['content'] %}{% endif %}`
	fpLegacyDefined   = `{% if system_message is defined %}{{ '<|im_start|>system\n' + system_message + '<|im_end|>\n' }}{% endif %}`

	fpLlama3Content = `{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n' + message['content'] | trim + '<|eot_id|>' %}`
	fpLlama3BOS     = `{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}{{ content }}`
	fpLlama3Gen     = `{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}`
)

// parseChatTemplate recognises the family of a Jinja chat template.
func parseChatTemplate(src, bosToken string) (*chatTemplate, error) {
	toks, err := canonicalJinja(src)
	if err != nil {
		return nil, err
	}
	has := func(fragment string) bool {
		lex := canonicalJinja
		if !strings.HasPrefix(fragment, "{") { // a bare expression, as inside a tag
			lex = func(s string) ([]jinjaToken, error) {
				toks, err := lexTagBody(s)
				return foldConcat(toks), err
			}
		}
		f, err := lex(fragment)
		if err != nil {
			panic(err) // fingerprints are constants
		}
		return indexTokens(toks, f) >= 0
	}
	switch {
	case strings.Contains(src, "<|im_start|>"):
		if strings.Contains(src, "<think>") {
			return nil, errors.New("ChatML template with <think> handling (Qwen3 style) is not supported")
		}
		if has(fpLegacyUser) && has(fpLegacyAssistant) && has(fpLegacySystem) && has(fpLegacyDefined) {
			def, ok := setStringLiteral(toks, "system_message")
			if !ok {
				return nil, errors.New("Qwen2 template without a literal default system_message")
			}
			return &chatTemplate{family: familyQwen2Legacy, defaultSystem: &def}, nil
		}
		if !has(fpChatMLMessage) || !has(fpChatMLGen) {
			return nil, errors.New("unrecognised ChatML-style template (no per-message <|im_start|>{role} block or add_generation_prompt block)")
		}
		c := &chatTemplate{family: familyChatML}
		if has(fpSystemFirst) || has(fpSystemNotFirst) {
			for _, tk := range toks {
				if tk.kind != tokString {
					continue
				}
				if rest, ok := strings.CutPrefix(tk.text, "<|im_start|>system\n"); ok {
					if def, ok := strings.CutSuffix(rest, "<|im_end|>\n"); ok {
						c.defaultSystem = &def
						break
					}
				}
			}
		}
		return c, nil
	case strings.Contains(src, "<|start_header_id|>"):
		if !has(fpLlama3Content) || !has(fpLlama3BOS) || !has(fpLlama3Gen) {
			return nil, errors.New("unrecognised Llama-3-style template (only the Llama-3.0 Instruct template is supported)")
		}
		return &chatTemplate{family: familyLlama3, bos: bosToken}, nil
	}
	return nil, errors.New("unrecognised chat template: neither ChatML (<|im_start|>) nor Llama-3 (<|start_header_id|>)")
}

// setStringLiteral finds {% set name = 'literal' %}.
func setStringLiteral(toks []jinjaToken, name string) (string, bool) {
	for i := 0; i+5 < len(toks); i++ {
		if toks[i] == (jinjaToken{tokOpen, "{%"}) && toks[i+1] == (jinjaToken{tokName, "set"}) &&
			toks[i+2] == (jinjaToken{tokName, name}) && toks[i+3] == (jinjaToken{tokPunct, "="}) &&
			toks[i+4].kind == tokString && toks[i+5] == (jinjaToken{tokClose, "%}"}) {
			return toks[i+4].text, true
		}
	}
	return "", false
}

func indexTokens(hay, needle []jinjaToken) int {
	for i := 0; i+len(needle) <= len(hay); i++ {
		match := true
		for j := range needle {
			if hay[i+j] != needle[j] {
				match = false
				break
			}
		}
		if match {
			return i
		}
	}
	return -1
}

type tokenKind uint8

const (
	tokString tokenKind = iota + 1
	tokName
	tokPunct
	tokOpen  // "{{" or "{%"
	tokClose // "}}" or "%}"
)

type jinjaToken struct {
	kind tokenKind
	text string // decoded value for strings
}

// canonicalJinja lexes a template into tokens with whitespace control and
// transformers' trim_blocks/lstrip_blocks applied, raw text turned into
// {{ 'text' }}, obj.attr turned into obj['attr'] and adjacent string literal
// concatenations folded, so equivalent spellings compare equal.
func canonicalJinja(src string) ([]jinjaToken, error) {
	var toks []jinjaToken
	trimNextLeft := false // previous tag ended with "-"
	prevWasBlock := false // previous tag was {% %} or {# #} (trim_blocks)
	for len(src) > 0 {
		open := indexTagOpen(src)
		raw := src
		if open >= 0 {
			raw = src[:open]
		}
		if trimNextLeft {
			raw = strings.TrimLeft(raw, " \t\r\n")
		} else if prevWasBlock {
			raw = strings.TrimPrefix(raw, "\n")
		}
		var kind string
		if open >= 0 {
			kind = src[open : open+2]
			after := src[open+2:]
			switch {
			case strings.HasPrefix(after, "-"):
				raw = strings.TrimRight(raw, " \t\r\n")
			case kind != "{{" && !strings.HasPrefix(after, "+"):
				// lstrip_blocks: a block tag alone on its line loses its indentation.
				line := raw[strings.LastIndexByte(raw, '\n')+1:]
				if strings.Trim(line, " \t") == "" {
					raw = raw[:len(raw)-len(line)]
				}
			}
		}
		if raw != "" {
			toks = append(toks, jinjaToken{tokOpen, "{{"}, jinjaToken{tokString, raw}, jinjaToken{tokClose, "}}"})
		}
		if open < 0 {
			break
		}
		closeTag := map[string]string{"{{": "}}", "{%": "%}", "{#": "#}"}[kind]
		body := src[open+2:]
		end := strings.Index(body, closeTag)
		if end < 0 {
			return nil, fmt.Errorf("unterminated %s tag", kind)
		}
		src = body[end+2:]
		inner := body[:end]
		trimNextLeft = strings.HasSuffix(inner, "-")
		prevWasBlock = kind != "{{"
		inner = strings.TrimSuffix(strings.TrimPrefix(strings.TrimPrefix(inner, "-"), "+"), "-")
		if kind == "{#" {
			continue
		}
		inside, err := lexTagBody(inner)
		if err != nil {
			return nil, err
		}
		toks = append(toks, jinjaToken{tokOpen, kind})
		toks = append(toks, inside...)
		toks = append(toks, jinjaToken{tokClose, closeTag})
	}
	return foldConcat(toks), nil
}

func indexTagOpen(s string) int {
	for i := 0; i+1 < len(s); i++ {
		if s[i] == '{' && (s[i+1] == '{' || s[i+1] == '%' || s[i+1] == '#') {
			return i
		}
	}
	return -1
}

func lexTagBody(s string) ([]jinjaToken, error) {
	var toks []jinjaToken
	for i := 0; i < len(s); {
		c := s[i]
		switch {
		case c == ' ' || c == '\t' || c == '\n' || c == '\r':
			i++
		case c == '\'' || c == '"':
			var b strings.Builder
			j := i + 1
			for ; j < len(s) && s[j] != c; j++ {
				if s[j] == '\\' && j+1 < len(s) {
					j++
					switch s[j] {
					case 'n':
						b.WriteByte('\n')
					case 't':
						b.WriteByte('\t')
					case 'r':
						b.WriteByte('\r')
					case '\\', '\'', '"':
						b.WriteByte(s[j])
					default:
						b.WriteByte('\\')
						b.WriteByte(s[j])
					}
					continue
				}
				b.WriteByte(s[j])
			}
			if j >= len(s) {
				return nil, errors.New("unterminated string literal in template")
			}
			toks = append(toks, jinjaToken{tokString, b.String()})
			i = j + 1
		case c == '_' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9':
			j := i
			for j < len(s) && (s[j] == '_' || s[j] >= 'a' && s[j] <= 'z' || s[j] >= 'A' && s[j] <= 'Z' || s[j] >= '0' && s[j] <= '9') {
				j++
			}
			toks = append(toks, jinjaToken{tokName, s[i:j]})
			i = j
		default:
			n := 1
			if i+1 < len(s) {
				switch s[i : i+2] {
				case "==", "!=", "<=", ">=", "//", "**":
					n = 2
				}
			}
			toks = append(toks, jinjaToken{tokPunct, s[i : i+n]})
			i += n
		}
	}
	// obj.attr → obj['attr'] (but not method calls obj.attr(...)).
	var out []jinjaToken
	for i := 0; i < len(toks); i++ {
		if toks[i] == (jinjaToken{tokPunct, "."}) && i+1 < len(toks) && toks[i+1].kind == tokName &&
			!(i+2 < len(toks) && toks[i+2] == (jinjaToken{tokPunct, "("})) {
			out = append(out, jinjaToken{tokPunct, "["}, jinjaToken{tokString, toks[i+1].text}, jinjaToken{tokPunct, "]"})
			i++
			continue
		}
		out = append(out, toks[i])
	}
	return out, nil
}

// foldConcat rewrites 'a' + 'b' (or ~) into 'ab'.
func foldConcat(toks []jinjaToken) []jinjaToken {
	var out []jinjaToken
	for _, tk := range toks {
		n := len(out)
		if tk.kind == tokString && n >= 2 && out[n-2].kind == tokString &&
			(out[n-1] == (jinjaToken{tokPunct, "+"}) || out[n-1] == (jinjaToken{tokPunct, "~"})) {
			out[n-2].text += tk.text
			out = out[:n-1]
			continue
		}
		out = append(out, tk)
	}
	return out
}
