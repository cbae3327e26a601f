package synth

import (
	"bytes"
	"encoding/json"
	"math"
	"regexp"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"
)

var fence = regexp.MustCompile("(?s)```[ \t]*([A-Za-z0-9_+-]*)[ \t]*\r?\n?(.*?)```")

type fenced struct{ lang, body string }

// fencedBlocks lists the fenced code blocks of a completion in order; an unclosed last fence
// (a completion cut at max_tokens) counts up to the end of the text.
func fencedBlocks(text string) []fenced {
	var out []fenced
	end := 0
	for _, m := range fence.FindAllStringSubmatchIndex(text, -1) {
		out = append(out, fenced{strings.ToLower(text[m[2]:m[3]]), text[m[4]:m[5]]})
		end = m[1]
	}
	if i := strings.Index(text[end:], "```"); i >= 0 {
		rest := text[end+i+3:]
		lang := ""
		if nl := strings.IndexByte(rest, '\n'); nl >= 0 && !strings.ContainsAny(rest[:nl], " {[") {
			lang, rest = strings.ToLower(strings.TrimSpace(rest[:nl])), rest[nl+1:]
		}
		out = append(out, fenced{lang, rest})
	}
	return out
}

// jsonCandidates are the places a completion may hold a JSON value, most explicit first:
// ```json blocks, other fenced blocks, the whole text, and the span from the first open to
// the last close bracket.
func jsonCandidates(text string, open, close byte) []string {
	var json, other []string
	for _, b := range fencedBlocks(text) {
		if b.lang == "json" {
			json = append(json, b.body)
		} else {
			other = append(other, b.body)
		}
	}
	c := append(json, other...)
	c = append(c, text)
	if i, j := strings.IndexByte(text, open), strings.LastIndexByte(text, close); i >= 0 && j > i {
		c = append(c, text[i:j+1])
	}
	return c
}

// unmarshalTolerant decodes JSON as models write it: also with invalid escapes such as "\s"
// or "\d" in a regular expression, which it reads as a literal backslash.
func unmarshalTolerant(s string, v any) bool {
	s = strings.TrimSpace(s)
	if json.Unmarshal([]byte(s), v) == nil {
		return true
	}
	fixed, changed := repairEscapes(s)
	return changed && json.Unmarshal([]byte(fixed), v) == nil
}

// repairEscapes fixes what models get wrong in JSON: a backslash inside a string that
// does not start a valid escape is doubled, raw newlines and tabs inside strings are escaped,
// single-quoted strings become double-quoted, Python's True/False/None become JSON's, and
// trailing commas go.
func repairEscapes(s string) (string, bool) {
	var b strings.Builder
	changed := false
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '"' || c == '\'':
			// A string: copy it double-quoted, fixing its escapes.
			if c == '\'' {
				changed = true
			}
			b.WriteByte('"')
			j := i + 1
			for ; j < len(s) && s[j] != c; j++ {
				switch d := s[j]; {
				case d == '\\' && j+1 < len(s) && s[j+1] == '\'' && c == '\'':
					b.WriteByte('\'')
					j++
				case d == '\\' && j+1 < len(s) && strings.IndexByte(`"\/bfnrtu`, s[j+1]) >= 0:
					b.WriteByte(d)
					b.WriteByte(s[j+1])
					j++
				case d == '\\':
					b.WriteString(`\\`)
					changed = true
				case d == '"': // only inside a single-quoted string
					b.WriteString(`\"`)
				case d == '\n':
					b.WriteString(`\n`)
					changed = true
				case d == '\t':
					b.WriteString(`\t`)
					changed = true
				default:
					b.WriteByte(d)
				}
			}
			b.WriteByte('"')
			i = j
		case c == ',':
			k := i + 1
			for k < len(s) && strings.IndexByte(" \t\r\n", s[k]) >= 0 {
				k++
			}
			if k < len(s) && (s[k] == '}' || s[k] == ']') {
				changed = true
				continue
			}
			b.WriteByte(c)
		case c == 'T' && strings.HasPrefix(s[i:], "True"), c == 'F' && strings.HasPrefix(s[i:], "False"), c == 'N' && strings.HasPrefix(s[i:], "None"):
			word := map[byte]string{'T': "True", 'F': "False", 'N': "None"}[c]
			b.WriteString(map[byte]string{'T': "true", 'F': "false", 'N': "null"}[c])
			i += len(word) - 1
			changed = true
		default:
			b.WriteByte(c)
		}
	}
	return b.String(), changed
}

// FunctionCompletion is a function and its test cases parsed from one completion.
type FunctionCompletion struct {
	Func  string            `json:"func"`
	Cases []json.RawMessage `json:"cases"`
}

var defEvaluate = regexp.MustCompile(`(?m)^\s*def\s+evaluate\s*\(`)

// ParseFunctionCompletion reads a stage-2 completion: a JSON object with "func" and "cases",
// fenced or bare, escapes repaired; failing that, a fenced Python block defining evaluate
// (then without cases). It returns the reason when there is nothing to use.
func ParseFunctionCompletion(text string) (FunctionCompletion, Reason) {
	sawJSON := false
	for _, c := range jsonCandidates(text, '{', '}') {
		var fc FunctionCompletion
		if !unmarshalTolerant(c, &fc) {
			continue
		}
		sawJSON = true
		if strings.TrimSpace(fc.Func) != "" {
			fc.Func = strings.TrimSpace(fc.Func)
			return fc, ""
		}
	}
	for _, b := range fencedBlocks(text) {
		if (b.lang == "python" || b.lang == "py" || b.lang == "") && defEvaluate.MatchString(b.body) {
			// Bytes that are not UTF-8 become U+FFFD, as a JSON string's would: the function
			// is stored and sent as JSON.
			return FunctionCompletion{Func: strings.ToValidUTF8(strings.TrimSpace(b.body), "\uFFFD")}, ""
		}
	}
	if sawJSON {
		return FunctionCompletion{}, ReasonNoFunc
	}
	return FunctionCompletion{}, ReasonNoJSON
}

// Canonical writes a parsed completion back the way the reference's cross-validation reads
// it: one ```json block.
func (fc FunctionCompletion) Canonical() string {
	if fc.Cases == nil {
		fc.Cases = []json.RawMessage{}
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	enc.Encode(fc)
	// A backtick can only be inside a JSON string, where \u0060 means the same; escaped, a
	// function that looks for code fences cannot end the block early.
	body := strings.ReplaceAll(strings.TrimSpace(buf.String()), "`", `\u0060`)
	return "```json\n" + body + "\n```"
}

// ParseStringList reads a list of strings: JSON (fenced or bare), or a Python list literal
// with single-quoted strings.
func ParseStringList(text string) ([]string, bool) {
	for _, c := range jsonCandidates(text, '[', ']') {
		var l []string
		if unmarshalTolerant(c, &l) && len(l) > 0 {
			return l, true
		}
		if l, ok := parsePythonStrings(strings.TrimSpace(c)); ok && len(l) > 0 {
			return l, true
		}
	}
	return nil, false
}

// parsePythonStrings reads ['a', "b", ...].
func parsePythonStrings(s string) ([]string, bool) {
	if !strings.HasPrefix(s, "[") || !strings.HasSuffix(s, "]") {
		return nil, false
	}
	s = strings.TrimSpace(s[1 : len(s)-1])
	var out []string
	for len(s) > 0 {
		q := s[0]
		if q != '\'' && q != '"' {
			return nil, false
		}
		var b strings.Builder
		i := 1
		for ; i < len(s) && s[i] != q; i++ {
			if s[i] == '\\' && i+1 < len(s) {
				i++
				switch s[i] {
				case 'n':
					b.WriteByte('\n')
				case 't':
					b.WriteByte('\t')
				default:
					b.WriteByte(s[i])
				}
				continue
			}
			b.WriteByte(s[i])
		}
		if i >= len(s) {
			return nil, false
		}
		out = append(out, b.String())
		s = strings.TrimSpace(s[i+1:])
		if strings.HasPrefix(s, ",") {
			s = strings.TrimSpace(s[1:])
		} else if s != "" {
			return nil, false
		}
	}
	return out, true
}

var scoreRE = regexp.MustCompile(`(?i)score\s*[:：]\s*\**\s*(\d+(?:\.\d+)?)`)

// ParseScore reads the judge's "Score: N", the last one in the completion (models sometimes
// bold it or add a period); scores outside 0..10 do not count.
func ParseScore(text string) (float64, bool) {
	m := scoreRE.FindAllStringSubmatch(text, -1)
	if m == nil {
		return 0, false
	}
	v, err := strconv.ParseFloat(m[len(m)-1][1], 64)
	if err != nil || v < 0 || v > 10 {
		return 0, false
	}
	return v, true
}

var nliLabel = regexp.MustCompile(`(?i)\b(entailment|neutral|contradiction)\b`)

// ParseNLILabel reads an NLI verdict: the last label word on the last line that has one.
func ParseNLILabel(text string) (string, bool) {
	lines := strings.Split(strings.TrimSpace(text), "\n")
	for i := len(lines) - 1; i >= 0; i-- {
		if m := nliLabel.FindAllString(lines[i], -1); m != nil {
			return strings.ToLower(m[len(m)-1]), true
		}
	}
	return "", false
}

var listMarker = regexp.MustCompile(`^\s*(?:[-*•]|\d+[.)])\s+`)

// ParseInstructionLines reads generated instructions, one per line, each starting with "- "
// (or another list marker); other lines are the model's commentary.
func ParseInstructionLines(text string) []string {
	var out []string
	for _, line := range strings.Split(text, "\n") {
		m := listMarker.FindString(line)
		if m == "" {
			continue
		}
		s := strings.TrimSpace(line[len(m):])
		s = strings.Trim(s, "\"“”")
		s = strings.TrimSuffix(strings.TrimPrefix(s, "**"), "**")
		if s = strings.TrimSpace(s); s != "" {
			out = append(out, s)
		}
	}
	return out
}

// pyRepr writes a value the way Python's str() does, for prompts the reference built with
// str(list): lists, strings, floats and bools.
func pyRepr(v any) string {
	var b strings.Builder
	writePy(&b, v)
	return b.String()
}

func writePy(b *strings.Builder, v any) {
	switch x := v.(type) {
	case []any:
		b.WriteByte('[')
		for i, e := range x {
			if i > 0 {
				b.WriteString(", ")
			}
			writePy(b, e)
		}
		b.WriteByte(']')
	case string:
		b.WriteString(pyStr(x))
	case float64:
		// Python's repr switches to exponent form below 1e-4 and from 1e16.
		s := strconv.FormatFloat(x, 'f', -1, 64)
		if a := math.Abs(x); a != 0 && (a < 1e-4 || a >= 1e16) {
			s = strconv.FormatFloat(x, 'g', -1, 64)
		} else if !strings.Contains(s, ".") {
			s += ".0"
		}
		b.WriteString(s)
	case bool:
		if x {
			b.WriteString("True")
		} else {
			b.WriteString("False")
		}
	default:
		data, _ := json.Marshal(x)
		b.Write(data)
	}
}

// pyStr is Python's repr of a str: single quotes unless the text has a single quote and no
// double quote; non-printable characters escaped.
func pyStr(s string) string {
	q := byte('\'')
	if strings.ContainsRune(s, '\'') && !strings.ContainsRune(s, '"') {
		q = '"'
	}
	var b strings.Builder
	b.WriteByte(q)
	for _, r := range s {
		switch {
		case r == '\\':
			b.WriteString(`\\`)
		case r == rune(q):
			b.WriteByte('\\')
			b.WriteRune(r)
		case r == '\n':
			b.WriteString(`\n`)
		case r == '\r':
			b.WriteString(`\r`)
		case r == '\t':
			b.WriteString(`\t`)
		case r == utf8.RuneError:
			b.WriteString(`\ufffd`)
		case r < 0x20 || r == 0x7f:
			b.WriteString(`\x` + strconv.FormatInt(int64(r)+0x100, 16)[1:])
		case r > 0x7f && !unicode.IsPrint(r):
			switch {
			case r <= 0xff:
				b.WriteString(`\x` + strconv.FormatInt(int64(r)+0x100, 16)[1:])
			case r <= 0xffff:
				b.WriteString(`\u` + strconv.FormatInt(int64(r)+0x10000, 16)[1:])
			default:
				b.WriteString(`\U` + strconv.FormatInt(int64(r)+0x100000000, 16)[1:])
			}
		default:
			b.WriteRune(r)
		}
	}
	b.WriteByte(q)
	return b.String()
}
