package tinyif

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"strconv"
	"strings"
	"unicode"
)

// transform turns a query's reference answer into a response that follows an instruction
// (comply) or one that breaks it (violate). Both keep the answer's content, so a model that
// learns the pair learns the instruction, not a different answer.
type transform struct {
	comply, violate func(q *Query) string
}

var transforms = map[string]transform{
	"lowercase": {
		comply:  func(q *Query) string { return strings.ToLower(q.Answer) },
		violate: func(q *Query) string { return ensureUpper(q.Answer) },
	},
	"uppercase": {
		comply:  func(q *Query) string { return strings.ToUpper(q.Answer) },
		violate: func(q *Query) string { return strings.ToLower(q.Answer) },
	},
	"end_done": {
		comply:  func(q *Query) string { return q.Answer + " done" },
		violate: func(q *Query) string { return q.Answer },
	},
	"max_words": {
		comply: func(q *Query) string {
			if len(strings.Fields(q.Answer)) <= 5 {
				return q.Answer
			}
			return shortAnswer(q) + "."
		},
		violate: func(q *Query) string { return q.Answer + " I hope that helps you." },
	},
	"keyword_blue": {
		comply: func(q *Query) string {
			if strings.Contains(strings.ToLower(q.Answer), "blue") {
				return q.Answer
			}
			return q.Answer + " I like blue."
		},
		violate: func(q *Query) string {
			return strings.NewReplacer("blue", "azure", "Blue", "Azure").Replace(q.Answer)
		},
	},
	"quotes": {
		comply:  func(q *Query) string { return `"` + q.Answer + `"` },
		violate: func(q *Query) string { return q.Answer },
	},
	"start_yes": {
		comply:  func(q *Query) string { return "Yes. " + q.Answer },
		violate: func(q *Query) string { return q.Answer },
	},
	"no_commas": {
		comply:  func(q *Query) string { return strings.ReplaceAll(q.Answer, ",", "") },
		violate: func(q *Query) string { return "Well, " + lowerFirst(q.Answer) },
	},
	"end_exclamation": {
		comply:  func(q *Query) string { return trimEndPunct(q.Answer) + "!" },
		violate: func(q *Query) string { return trimEndPunct(q.Answer) + "." },
	},
	"three_lines": {
		comply:  func(q *Query) string { return q.Answer + "\nThat is all.\nThank you." },
		violate: func(q *Query) string { return q.Answer },
	},
	"prefix_answer": {
		comply:  func(q *Query) string { return "Answer: " + q.Answer },
		violate: func(q *Query) string { return q.Answer },
	},
	"title_case": {
		comply:  func(q *Query) string { return titleWords(q.Answer) },
		violate: func(q *Query) string { return strings.ToLower(q.Answer) },
	},
	"one_word": {
		comply: func(q *Query) string { return shortAnswer(q) + "." },
		violate: func(q *Query) string {
			if len(strings.Fields(q.Answer)) < 2 {
				return "It is " + q.Answer
			}
			return q.Answer
		},
	},
	"min_words": {
		comply: func(q *Query) string {
			s := q.Answer
			for len(strings.Fields(s)) < 8 {
				s += " I hope this helps you today."
			}
			return s
		},
		violate: func(q *Query) string { return shortAnswer(q) + "." },
	},
	"parentheses": {
		comply:  func(q *Query) string { return "(" + q.Answer + ")" },
		violate: func(q *Query) string { return q.Answer },
	},
	"bullets": {
		comply:  func(q *Query) string { return "- " + q.Answer + "\n- That is all." },
		violate: func(q *Query) string { return q.Answer },
	},
	"hashtag": {
		comply:  func(q *Query) string { return q.Answer + " #tiny" },
		violate: func(q *Query) string { return q.Answer },
	},
	"json_answer": {
		comply: func(q *Query) string {
			b, _ := json.Marshal(map[string]string{"answer": q.Answer})
			return strings.Replace(string(b), `":"`, `": "`, 1)
		},
		violate: func(q *Query) string { return q.Answer },
	},
	"no_digits": {
		comply: func(q *Query) string { return spellNumbers(q.Answer) },
		violate: func(q *Query) string {
			if strings.ContainsAny(q.Answer, "0123456789") {
				return q.Answer
			}
			return "1. " + q.Answer
		},
	},
	"say_twice": {
		comply:  func(q *Query) string { return q.Answer + " | " + q.Answer },
		violate: func(q *Query) string { return q.Answer },
	},
}

// Comply returns a response to q that follows the instruction.
func Comply(instructionID string, q *Query) (string, error) {
	t, ok := transforms[instructionID]
	if !ok {
		return "", fmt.Errorf("tinyif: unknown instruction %q", instructionID)
	}
	return t.comply(q), nil
}

// Violate returns a response to q that breaks the instruction.
func Violate(instructionID string, q *Query) (string, error) {
	t, ok := transforms[instructionID]
	if !ok {
		return "", fmt.Errorf("tinyif: unknown instruction %q", instructionID)
	}
	return t.violate(q), nil
}

// SFTOptions shape the warm-start examples.
type SFTOptions struct {
	// Seed decides which examples comply.
	Seed uint64
	// Comply is the probability that an example follows its instruction: 0 means the default
	// 0.5, 1 always, a negative value never.
	Comply float64
	// PerPrompt is how many examples each prompt unit gets (default 1). Each is drawn
	// independently, so one prompt can have compliant and non-compliant examples.
	PerPrompt int
}

// SFTExample is one supervised warm-start example: a prompt and the response to train on.
type SFTExample struct {
	PromptID      string `json:"prompt_id"`
	InstructionID string `json:"instruction_id"`
	QueryID       string `json:"query_id"`
	// Prompt is the text before any chat template, as in proto.PromptUnit.Prompt: train on
	// it the way the rollout worker samples (with the template, or without).
	Prompt   string `json:"prompt"`
	Response string `json:"response"`
	// Complies says whether Response follows the instruction.
	Complies bool `json:"complies"`
}

// SFT returns warm-start examples for the units of a split. A policy fine-tuned on them
// follows each instruction about Comply of the time, which leaves online DPO room to improve
// it, and gives the K samples of a prompt both passing and failing responses to pair.
// The result depends only on the options: each example draws from a generator seeded with
// (Seed, its prompt id), so it does not move when other units are added.
func (s *Set) SFT(split Split, o SFTOptions) []SFTExample {
	if o.Comply == 0 {
		o.Comply = 0.5
	}
	if o.PerPrompt <= 0 {
		o.PerPrompt = 1
	}
	var out []SFTExample
	for i := range s.Instructions {
		in := &s.Instructions[i]
		t := transforms[in.ID]
		for j := range s.Queries {
			q := &s.Queries[j]
			id := PromptID(in.ID, q.ID)
			if SplitOf(id) != split {
				continue
			}
			rng := rand.New(rand.NewPCG(o.Seed, hashID(id)))
			for range o.PerPrompt {
				ok := rng.Float64() < o.Comply
				resp := t.violate(q)
				if ok {
					resp = t.comply(q)
				}
				out = append(out, SFTExample{PromptID: id, InstructionID: in.ID, QueryID: q.ID, Prompt: Prompt(in, q), Response: resp, Complies: ok})
			}
		}
	}
	return out
}

func hashID(s string) uint64 {
	var h uint64 = 14695981039346656037
	for i := 0; i < len(s); i++ {
		h ^= uint64(s[i])
		h *= 1099511628211
	}
	return h
}

// shortAnswer is the answer's last word without its punctuation, capitalised: "13", "Blue".
func shortAnswer(q *Query) string {
	f := strings.Fields(q.Answer)
	w := strings.TrimRight(f[len(f)-1], ".!?")
	r := []rune(w)
	r[0] = unicode.ToUpper(r[0])
	return string(r)
}

func lowerFirst(s string) string {
	r := []rune(s)
	r[0] = unicode.ToLower(r[0])
	return string(r)
}

func trimEndPunct(s string) string { return strings.TrimRight(s, ".!?") }

// ensureUpper returns s with an upper-case letter in it.
func ensureUpper(s string) string {
	if strings.IndexFunc(s, unicode.IsUpper) >= 0 {
		return s
	}
	return "Sure! " + s
}

func titleWords(s string) string {
	f := strings.Fields(s)
	for i, w := range f {
		r := []rune(w)
		r[0] = unicode.ToUpper(r[0])
		f[i] = string(r)
	}
	return strings.Join(f, " ")
}

var smallNumbers = []string{"zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten",
	"eleven", "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen", "nineteen"}
var tens = []string{"", "", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety"}

// numberWords spells 0-999 in English words ("forty-two").
func numberWords(n int) string {
	switch {
	case n < 20:
		return smallNumbers[n]
	case n < 100:
		if n%10 == 0 {
			return tens[n/10]
		}
		return tens[n/10] + "-" + smallNumbers[n%10]
	case n < 1000:
		if n%100 == 0 {
			return smallNumbers[n/100] + " hundred"
		}
		return smallNumbers[n/100] + " hundred " + numberWords(n%100)
	}
	// Larger numbers never occur in the testbed; spell digit by digit so no digit remains.
	var parts []string
	for _, d := range strconv.Itoa(n) {
		parts = append(parts, smallNumbers[d-'0'])
	}
	return strings.Join(parts, " ")
}

// spellNumbers replaces every run of digits with its words.
func spellNumbers(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); {
		if s[i] < '0' || s[i] > '9' {
			b.WriteByte(s[i])
			i++
			continue
		}
		j := i
		for j < len(s) && s[j] >= '0' && s[j] <= '9' && j-i < 9 {
			j++
		}
		n, _ := strconv.Atoi(s[i:j])
		b.WriteString(numberWords(n))
		i = j
	}
	return b.String()
}
