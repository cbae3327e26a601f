package synth

import (
	"fmt"
	"strings"
)

// Prompts are the templates of the LLM stages. Placeholders are written {name}; each template
// names the ones it takes. The defaults are the reference scripts' prompts (QwenLM/AutoIF
// code/), so recorded completions of the reference pipeline answer them verbatim.
type Prompts struct {
	// Instructions takes {seeds}: the seed instructions, one per line.
	Instructions string `yaml:"instructions"`
	// Functions takes {instruction}.
	Functions string `yaml:"functions"`
	// BackTranslate takes {funcs}: the functions as the reference formats them (a Python list
	// of [source, accuracy]).
	BackTranslate string `yaml:"backtranslate"`
	// NLI takes {premise} and {hypothesis}, for consistency checks through an LLM.
	NLI string `yaml:"nli"`
	// Response takes {instruction} and {query}.
	Response string `yaml:"response"`
	// Judge takes {instruction}, {query} and {response}.
	Judge string `yaml:"judge"`
}

// DefaultPrompts are the reference scripts' prompts, and an NLI prompt of ours (the reference
// runs an NLI classifier instead).
func DefaultPrompts() Prompts {
	return Prompts{
		Instructions: `You are an expert for writing instructions. Please provide 50 different instructions that meet the following requirements:
- Instructions are about the format but not style of a response
- Whether instructions are followed can be easily evaluate by a Python function
Here are some examples of instructions we need:
{seeds}
Do not generate instructions about writing style, using metaphor, or translation. Here are some examples of instructions we do not need:
- Incorporate a famous historical quote seamlessly into your answer
- Translate your answer into Pig Latin
- Use only words that are also a type of food
- Respond with a metaphor in every sentence
- Write the response as if you are a character from a Shakespearean play
Please generate one instruction per line in your response and start each line with '- '.
`,
		Functions: "You are an expert for writing evaluation functions in Python to evaluate whether a response strictly follows an instruction.\n" +
			"Here is the instruction: {instruction}\n" +
			"Please write a Python function named `evaluate` to evaluate whether an input string `response` follows this instruction. If it follows, simply return True, otherwise return False.\n" +
			"Please response with a single JSON includes the evaluation function in the key `func`, and a list of three test cases in the key `cases`, which includes an input in the key `input` and an expected output in the key `output` in (true, false).\n" +
			"Here is an example of output JSON format: {\"func\": JSON_STR(use only \\n instead of \n), \"cases\": [{\"input\": str, \"output\": str}]}.",
		BackTranslate: "You are an expert in converting the Python eval function code into the corresponding instruction text. I will provide the eval function code. Please strictly follow the code to convert it into the corresponding instruction text. Here's an example: \n\n" +
			"[[\"def evaluate(response):\n    return 'e' not in response.lower()\", 1.0], [\"def evaluate(response):\n    words = response.split()\n    for word in words:\n        if 'e' in word.lower():\n            return False\n    return True\", 1.0], [\"def evaluate(response):\n    return all('e' not in word.lower() for word in response.split())\", 1.0]] \n\n" +
			"[\"Answer without using any words that contain the letter 'E'.\",\"Answer with words that do not contain the letter 'E'.\",\"Answer with words that do not contain the letter 'E'.\"] Please convert the following eval function into instructions stored in a list: \n\n{funcs}",
		NLI: `You are an expert in natural language inference. Decide the relation between a premise and a hypothesis, both instructions for how to write a response.
[Premise] {premise}
[Hypothesis] {hypothesis}
Answer "entailment" if following the premise means following the hypothesis, "contradiction" if following one rules out following the other or they ask for different things, and "neutral" otherwise.
Give a short reason, then the label alone on the last line.`,
		Response: "Please answer the query strictly following the instruction.\n[instruction] {instruction}\n[Query] {query}",
		Judge: "You are an expert that is good at judging whether a response is following the instruction and query.\n" +
			"[Instruction] {instruction}\n[Query] {query}\n[Response] {response}\n" +
			"Please notice that the response may not be helpful as it needs to strictly follow the requirements in the Instruction.\n" +
			"You need to judge whether the response answers the query. Please first provide a detailed analysis and then give a score ranking from 0 to 10 at the last line.\n" +
			"Scoring 0 means the response is totally unrelated to the query, while scoring 10 means the response is helpful and highly related to the query.\n" +
			"Please only provide a score in the format `Score: {score}` without any other contents at the last line.",
	}
}

// withDefaults fills empty templates from the defaults.
func (p Prompts) withDefaults() Prompts {
	d := DefaultPrompts()
	for _, f := range []struct{ v, def *string }{{&p.Instructions, &d.Instructions}, {&p.Functions, &d.Functions},
		{&p.BackTranslate, &d.BackTranslate}, {&p.NLI, &d.NLI}, {&p.Response, &d.Response}, {&p.Judge, &d.Judge}} {
		if strings.TrimSpace(*f.v) == "" {
			*f.v = *f.def
		}
	}
	return p
}

// check reports a template missing a placeholder its stage fills in.
func (p Prompts) check() error {
	for _, c := range []struct {
		name, tmpl string
		want       []string
	}{
		{"instructions", p.Instructions, []string{"seeds"}},
		{"functions", p.Functions, []string{"instruction"}},
		{"backtranslate", p.BackTranslate, []string{"funcs"}},
		{"nli", p.NLI, []string{"premise", "hypothesis"}},
		{"response", p.Response, []string{"instruction", "query"}},
		{"judge", p.Judge, []string{"instruction", "query", "response"}},
	} {
		for _, w := range c.want {
			if !strings.Contains(c.tmpl, "{"+w+"}") {
				return fmt.Errorf("prompt %s: no {%s} placeholder", c.name, w)
			}
		}
	}
	return nil
}

// fill substitutes the placeholders in one pass, so a value containing "{query}" stays as
// written. Braces naming no given placeholder (the judge's "Score: {score}") stay too.
func fill(tmpl string, kv ...string) string {
	var b strings.Builder
	for i := 0; i < len(tmpl); {
		if tmpl[i] == '{' {
			if j := strings.IndexByte(tmpl[i:], '}'); j > 0 {
				name := tmpl[i+1 : i+j]
				found := false
				for k := 0; k+1 < len(kv); k += 2 {
					if kv[k] == name {
						b.WriteString(kv[k+1])
						found = true
						break
					}
				}
				if found {
					i += j + 1
					continue
				}
			}
		}
		b.WriteByte(tmpl[i])
		i++
	}
	return b.String()
}
