package ifeval

// pyJSONLoads reports whether Python's json.loads(s) succeeds. It differs from encoding/json's
// Valid where the official json_format verdict would: Python accepts NaN, Infinity and
// -Infinity as values, and only " \t\n\r" around the document. Nesting deeper than CPython's
// recursion limit fails here rather than crashing, as a RecursionError would in Python.
func pyJSONLoads(s string) bool {
	p := jsonParser{s: s}
	p.ws()
	if !p.value(0) {
		return false
	}
	p.ws()
	return p.i == len(p.s)
}

type jsonParser struct {
	s string
	i int
}

// maxJSONDepth is about where CPython's default recursion limit (1000) stops the C scanner.
const maxJSONDepth = 990

func (p *jsonParser) ws() {
	for p.i < len(p.s) {
		switch p.s[p.i] {
		case ' ', '\t', '\n', '\r':
			p.i++
		default:
			return
		}
	}
}

func (p *jsonParser) lit(w string) bool {
	if len(p.s)-p.i >= len(w) && p.s[p.i:p.i+len(w)] == w {
		p.i += len(w)
		return true
	}
	return false
}

func (p *jsonParser) value(depth int) bool {
	if p.i >= len(p.s) || depth > maxJSONDepth {
		return false
	}
	switch c := p.s[p.i]; {
	case c == '"':
		return p.str()
	case c == '{':
		return p.object(depth)
	case c == '[':
		return p.array(depth)
	case c == 'n':
		return p.lit("null")
	case c == 't':
		return p.lit("true")
	case c == 'f':
		return p.lit("false")
	case c == 'N':
		return p.lit("NaN")
	case c == 'I':
		return p.lit("Infinity")
	case c == '-' && p.lit("-Infinity"):
		return true
	case c == '-' || (c >= '0' && c <= '9'):
		return p.number()
	}
	return false
}

func (p *jsonParser) digits() int {
	n := 0
	for p.i < len(p.s) && p.s[p.i] >= '0' && p.s[p.i] <= '9' {
		p.i++
		n++
	}
	return n
}

// number follows the scanner's (-?(?:0|[1-9]\d*))(\.\d+)?([eE][-+]?\d+)?: an incomplete
// fraction or exponent is not an error by itself, it ends the number (and leaves extra data).
func (p *jsonParser) number() bool {
	if p.s[p.i] == '-' {
		p.i++
	}
	if p.i >= len(p.s) {
		return false
	}
	switch c := p.s[p.i]; {
	case c == '0':
		p.i++
	case c >= '1' && c <= '9':
		p.digits()
	default:
		return false
	}
	if p.i+1 < len(p.s) && p.s[p.i] == '.' && p.s[p.i+1] >= '0' && p.s[p.i+1] <= '9' {
		p.i++
		p.digits()
	}
	if p.i < len(p.s) && (p.s[p.i] == 'e' || p.s[p.i] == 'E') {
		j := p.i + 1
		if j < len(p.s) && (p.s[j] == '+' || p.s[j] == '-') {
			j++
		}
		if j < len(p.s) && p.s[j] >= '0' && p.s[j] <= '9' {
			p.i = j
			p.digits()
		}
	}
	return true
}

// str scans a string in strict mode: no raw control character below U+0020, and only the
// JSON escapes (\uXXXX with exactly four hex digits).
func (p *jsonParser) str() bool {
	p.i++
	for p.i < len(p.s) {
		c := p.s[p.i]
		switch {
		case c == '"':
			p.i++
			return true
		case c < 0x20:
			return false
		case c == '\\':
			p.i++
			if p.i >= len(p.s) {
				return false
			}
			switch p.s[p.i] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
				p.i++
			case 'u':
				if len(p.s)-p.i < 5 {
					return false
				}
				for _, h := range []byte(p.s[p.i+1 : p.i+5]) {
					if !isHex(h) {
						return false
					}
				}
				p.i += 5
			default:
				return false
			}
		default:
			p.i++
		}
	}
	return false
}

func isHex(c byte) bool {
	return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F')
}

func (p *jsonParser) object(depth int) bool {
	p.i++
	p.ws()
	if p.lit("}") {
		return true
	}
	for {
		if p.i >= len(p.s) || p.s[p.i] != '"' || !p.str() {
			return false
		}
		p.ws()
		if !p.lit(":") {
			return false
		}
		p.ws()
		if !p.value(depth + 1) {
			return false
		}
		p.ws()
		if p.lit("}") {
			return true
		}
		if !p.lit(",") {
			return false
		}
		p.ws()
	}
}

func (p *jsonParser) array(depth int) bool {
	p.i++
	p.ws()
	if p.lit("]") {
		return true
	}
	for {
		if !p.value(depth + 1) {
			return false
		}
		p.ws()
		if p.lit("]") {
			return true
		}
		if !p.lit(",") {
			return false
		}
		p.ws()
	}
}

// appendPyString appends s as Python's json.dumps writes a str (ensure_ascii=True): every
// character outside ' '..'~' escaped, astral characters as surrogate pairs.
func appendPyString(b []byte, s string) []byte {
	const hexDigits = "0123456789abcdef"
	u4 := func(b []byte, r rune) []byte {
		return append(b, '\\', 'u', hexDigits[r>>12&15], hexDigits[r>>8&15], hexDigits[r>>4&15], hexDigits[r&15])
	}
	b = append(b, '"')
	for _, r := range s {
		switch {
		case r == '"':
			b = append(b, '\\', '"')
		case r == '\\':
			b = append(b, '\\', '\\')
		case r == '\n':
			b = append(b, '\\', 'n')
		case r == '\r':
			b = append(b, '\\', 'r')
		case r == '\t':
			b = append(b, '\\', 't')
		case r == '\b':
			b = append(b, '\\', 'b')
		case r == '\f':
			b = append(b, '\\', 'f')
		case r >= ' ' && r <= '~':
			b = append(b, byte(r))
		case r >= 0x10000:
			r -= 0x10000
			b = u4(b, 0xd800+(r>>10))
			b = u4(b, 0xdc00+(r&0x3ff))
		default:
			b = u4(b, r)
		}
	}
	return append(b, '"')
}

func appendPyBool(b []byte, v bool) []byte {
	if v {
		return append(b, "true"...)
	}
	return append(b, "false"...)
}

// AppendJSONL appends o as one line of the official eval_results_*.jsonl: json.dumps of the
// output's attributes in dir() order (alphabetical), with Python's separators and escaping,
// so files compare byte for byte with the official checker's.
func (o Output) AppendJSONL(b []byte) []byte {
	b = append(b, `{"follow_all_instructions": `...)
	b = appendPyBool(b, o.FollowAllInstructions)
	b = append(b, `, "follow_instruction_list": [`...)
	for i, v := range o.FollowInstructionList {
		if i > 0 {
			b = append(b, ", "...)
		}
		b = appendPyBool(b, v)
	}
	b = append(b, `], "instruction_id_list": [`...)
	for i, id := range o.InstructionIDList {
		if i > 0 {
			b = append(b, ", "...)
		}
		b = appendPyString(b, id)
	}
	b = append(b, `], "prompt": `...)
	b = appendPyString(b, o.Prompt)
	b = append(b, `, "response": `...)
	b = appendPyString(b, o.Response)
	return append(b, "}\n"...)
}
