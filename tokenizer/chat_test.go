package tokenizer

import (
	"slices"
	"strings"
	"testing"
)

// Template sources as they appear after JSON decoding of tokenizer_config.json
// ("\n" inside Jinja string literals is a backslash escape here, as in the
// published files of these models).
const (
	smolLM2Template = `{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}`

	qwen25Template = `{%- if tools %}
    {{- '<|im_start|>system\n' }}
    {%- if messages[0]['role'] == 'system' %}
        {{- messages[0]['content'] }}
    {%- else %}
        {{- 'You are Qwen, created by Alibaba Cloud. You are a helpful assistant.' }}
    {%- endif %}
    {{- "\n\n# Tools\n\n<tools>" }}
{%- else %}
    {%- if messages[0]['role'] == 'system' %}
        {{- '<|im_start|>system\n' + messages[0]['content'] + '<|im_end|>\n' }}
    {%- else %}
        {{- '<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n' }}
    {%- endif %}
{%- endif %}
{%- for message in messages %}
    {%- if (message.role == "user") or (message.role == "system" and not loop.first) or (message.role == "assistant" and not message.tool_calls) %}
        {{- '<|im_start|>' + message.role + '\n' + message.content + '<|im_end|>' + '\n' }}
    {%- elif message.role == "tool" %}
        {{- '<|im_start|>user\n<tool_response>\n' + message.content + '\n</tool_response><|im_end|>\n' }}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|im_start|>assistant\n' }}
{%- endif %}
`

	llama3Template = `{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'+ message['content'] | trim + '<|eot_id|>' %}{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}`

	mistralTemplate = `{{ bos_token }}{% for message in messages %}{% if message['role'] == 'user' %}{{ '[INST] ' + message['content'] + ' [/INST]' }}{% elif message['role'] == 'assistant' %}{{ message['content'] + eos_token}}{% endif %}{% endfor %}`
)

var conversation = []Message{
	{Role: "user", Content: "Hi"},
	{Role: "assistant", Content: "Hello!"},
	{Role: "user", Content: "2+2?"},
}

func withSystem(system string, msgs []Message) []Message {
	return append([]Message{{Role: "system", Content: system}}, msgs...)
}

func TestChatTemplatesRenderAsTheirJinjaWould(t *testing.T) {
	// Expected strings were written by reading each template.
	tests := []struct {
		name, template string
		msgs           []Message
		addGen         bool
		want           string
	}{
		{"smollm2 adds its default system turn", smolLM2Template, conversation, true,
			"<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n" +
				"<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\nHello!<|im_end|>\n<|im_start|>user\n2+2?<|im_end|>\n<|im_start|>assistant\n"},
		{"smollm2 keeps a given system turn", smolLM2Template, withSystem("Be brief.", conversation[:1]), false,
			"<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"},
		{"qwen2.5 default system", qwen25Template, conversation[:1], true,
			"<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"},
		{"qwen2.5 given system", qwen25Template, withSystem("S", conversation[:2]), false,
			"<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\nHello!<|im_end|>\n"},
		{"plain chatml has no default system", chatMLTemplate, conversation[:1], true,
			"<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"},
		{"llama3 prepends bos and trims contents", llama3Template, withSystem(" Be brief. \n", conversation[:1]), true,
			"<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|>" +
				"<|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n"},
		{"llama3 without generation prompt", llama3Template, conversation[:2], false,
			"<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\nHello!<|eot_id|>"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := parseChatTemplate(tt.template, "<|begin_of_text|>")
			if err != nil {
				t.Fatal(err)
			}
			got, err := c.render(tt.msgs, tt.addGen)
			if err != nil {
				t.Fatal(err)
			}
			if got != tt.want {
				t.Fatalf("got  %q\nwant %q", got, tt.want)
			}
		})
	}
}

func TestQwen2ChatTemplateFromItsConfig(t *testing.T) {
	tok := reference(t, "qwen2")
	// This Qwen2-1.5B-Instruct template ignores add_generation_prompt: it opens
	// an assistant turn after every user turn and always writes a system turn.
	for _, addGen := range []bool{true, false} {
		got, err := tok.ApplyChatTemplate(conversation, addGen)
		if err != nil {
			t.Fatal(err)
		}
		want := "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n" +
			"<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\nHello!<|im_end|>\n" +
			"<|im_start|>user\n2+2?<|im_end|>\n<|im_start|>assistant\n"
		if got != want {
			t.Fatalf("addGenerationPrompt=%v:\n got %q\nwant %q", addGen, got, want)
		}
	}
	got, err := tok.ApplyChatTemplate(withSystem("Answer in French.", conversation[:1]), true)
	if err != nil {
		t.Fatal(err)
	}
	want := "<|im_start|>system\nAnswer in French.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
	if got != want {
		t.Fatalf("with system:\n got %q\nwant %q", got, want)
	}
	ids := tok.Encode(got, false)
	if ids[0] != 151644 || ids[len(ids)-3] != 151644 || countOf(ids, 151645) != 2 {
		t.Fatalf("rendered chat did not encode its special tokens: %v", ids)
	}
}

func countOf(ids []int, id int) int {
	n := 0
	for _, x := range ids {
		if x == id {
			n++
		}
	}
	return n
}

func TestUnrecognisedChatTemplatesAreErrors(t *testing.T) {
	for name, tmpl := range map[string]string{
		"mistral":         mistralTemplate,
		"chatml variant":  `{% for m in messages %}{{ '<|im_start|>' + m.role }}{% endfor %}`,
		"llama 3.1 style": `{{- bos_token }}{%- set date_string = "26 Jul 2024" %}{{- "<|start_header_id|>system<|end_header_id|>\n\n" }}{{- "Cutting Knowledge Date: December 2023\n" }}`,
		"qwen3 thinking":  strings.Replace(qwen25Template, "<tools>", "<think>", 1),
		"unterminated":    `{{ '<|im_start|>'`,
	} {
		if _, err := parseChatTemplate(tmpl, ""); err == nil {
			t.Errorf("%s: template accepted, want an error", name)
		}
	}
	if _, err := reference(t, "gpt2").ApplyChatTemplate(conversation, true); err == nil || !strings.Contains(err.Error(), "no chat template") {
		t.Errorf("GPT-2 has no chat template; got err %v", err)
	}
}

func TestChatMLRejectsRolesItCannotRender(t *testing.T) {
	c, err := parseChatTemplate(qwen25Template, "")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.render([]Message{{Role: "tool", Content: "{}"}}, true); err == nil {
		t.Fatal("tool role rendered, want an error")
	}
	if _, err := c.render(nil, true); err == nil {
		t.Fatal("empty conversation rendered, want an error")
	}
}

func TestJinjaCanonicalFormIgnoresFormatting(t *testing.T) {
	a, err := canonicalJinja(`{{- '<|im_start|>' + message.role + "\n" -}}`)
	if err != nil {
		t.Fatal(err)
	}
	b, err := canonicalJinja("{{'<|im_start|>'+message['role']+'\n'}}")
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(a, b) {
		t.Fatalf("%v != %v", a, b)
	}
}

// RenderPrompt is the one way a prompt becomes ids. Chat: the template's text encoded without
// added special tokens; plain: the text with them. Either way a BOS appears exactly once: a
// template that spells out bos_token is not given a second one by the post-processor.
func TestRenderPrompt(t *testing.T) {
	qwen := reference(t, "qwen2")
	ids, text, err := qwen.RenderPrompt("2+2?", true)
	if err != nil {
		t.Fatal(err)
	}
	want := "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n2+2?<|im_end|>\n<|im_start|>assistant\n"
	if text != want || !slices.Equal(ids, qwen.Encode(want, false)) || ids[0] != 151644 {
		t.Fatalf("chat: %q %v", text, ids)
	}
	if ids, text, err := qwen.RenderPrompt("2+2?", false); err != nil || text != "2+2?" || !slices.Equal(ids, qwen.Encode("2+2?", true)) {
		t.Fatalf("plain: %q %v %v", text, ids, err)
	}
	if _, _, err := reference(t, "gpt2").RenderPrompt("Hi", true); err == nil || !strings.Contains(err.Error(), "chat template") {
		t.Fatalf("chat without a template: err %v, want a chat template error", err)
	}

	// A tokenizer whose post-processor adds a BOS and whose template writes bos_token itself,
	// as Llama-3's do.
	files, err := NewByteLevelJSON(ByteLevelOptions{})
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := files.WriteDir(dir); err != nil {
		t.Fatal(err)
	}
	tok, err := Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	bos, _ := tok.TokenID("<|endoftext|>")
	tok.prefix = []int{bos}
	if tok.chat, err = parseChatTemplate(llama3Template, "<|endoftext|>"); err != nil {
		t.Fatal(err)
	}
	chat, _, err := tok.RenderPrompt("Hi", true)
	if err != nil {
		t.Fatal(err)
	}
	plain, _, _ := tok.RenderPrompt("Hi", false)
	if countOf(chat, bos) != 1 || chat[0] != bos || countOf(plain, bos) != 1 || plain[0] != bos {
		t.Fatalf("BOS %d should lead once: chat %v, plain %v", bos, chat, plain)
	}
}

// A conversation renders every turn through the template, in order, and ends with the
// generation prompt; one user message is exactly RenderPrompt.
func TestRenderChat(t *testing.T) {
	qwen := reference(t, "qwen2")
	ids, text, err := qwen.RenderChat([]Message{{Role: "system", Content: "Be brief."}, {Role: "user", Content: "Hi"}, {Role: "assistant", Content: "Hello."}, {Role: "user", Content: "2+2?"}})
	if err != nil {
		t.Fatal(err)
	}
	want := "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\nHello.<|im_end|>\n<|im_start|>user\n2+2?<|im_end|>\n<|im_start|>assistant\n"
	if text != want || !slices.Equal(ids, qwen.Encode(want, false)) {
		t.Fatalf("got %q %v", text, ids)
	}
	one, _, _ := qwen.RenderChat([]Message{{Role: "user", Content: "2+2?"}})
	prompt, _, _ := qwen.RenderPrompt("2+2?", true)
	if !slices.Equal(one, prompt) {
		t.Fatalf("one user turn %v, RenderPrompt %v", one, prompt)
	}
	if _, _, err := qwen.RenderChat(nil); err == nil {
		t.Fatal("no messages rendered without error")
	}
}
