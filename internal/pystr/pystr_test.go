package pystr

import "testing"

// CPython 3.11's answers for str.isspace, re's \w and \d, str.isupper, str.islower and
// str.lower on characters where Go's own definitions differ or that are easy to get wrong.
func TestMatchesCPython(t *testing.T) {
	for _, c := range []struct {
		r                                  rune
		space, word, decimal, upper, lower bool
		lowered                            string
	}{
		{0x1c, true, false, false, false, false, "\x1c"}, // file separator: Python splits on it
		{0x1f, true, false, false, false, false, "\x1f"},
		{0x85, true, false, false, false, false, "\u0085"},
		{0xa0, true, false, false, false, false, "\u00a0"},
		{0x2028, true, false, false, false, false, "\u2028"},
		{0x200b, false, false, false, false, false, "\u200b"}, // zero-width space is no space
		{0x180e, false, false, false, false, false, "\u180e"},
		{'a', false, true, false, false, true, "a"},
		{'_', false, true, false, false, false, "_"},
		{'²', false, true, false, false, false, "²"}, // a digit, but not a decimal
		{'٣', false, true, true, false, false, "٣"},  // Arabic-Indic three is \d
		{'ª', false, true, false, false, true, "ª"},  // Other_Lowercase
		{'Ⅳ', false, true, false, true, false, "ⅳ"},  // Other_Uppercase
		{'ⅳ', false, true, false, false, true, "ⅳ"},
		{'ǅ', false, true, false, false, false, "ǆ"}, // titlecase: neither upper nor lower
		{'Ⓐ', false, false, false, true, false, "ⓐ"}, // a symbol that is upper case
		{'ß', false, true, false, false, true, "ß"},
		{'İ', false, true, false, true, false, "i\u0307"},    // the one multi-character lower case
		{'K', false, true, false, true, false, "k"},          // Kelvin sign
		{0x301, false, false, false, false, false, "\u0301"}, // combining marks are not \w
		{'中', false, true, false, false, false, "中"},
	} {
		if got := IsSpace(c.r); got != c.space {
			t.Errorf("IsSpace(%U) = %v", c.r, got)
		}
		if got := IsWord(c.r); got != c.word {
			t.Errorf("IsWord(%U) = %v", c.r, got)
		}
		if got := IsDecimal(c.r); got != c.decimal {
			t.Errorf("IsDecimal(%U) = %v", c.r, got)
		}
		if got := IsUpper(c.r); got != c.upper {
			t.Errorf("IsUpper(%U) = %v", c.r, got)
		}
		if got := IsLower(c.r); got != c.lower {
			t.Errorf("IsLower(%U) = %v", c.r, got)
		}
		if got := Lower(string(c.r)); got != c.lowered {
			t.Errorf("Lower(%U) = %q, want %q", c.r, got, c.lowered)
		}
	}
	if got := Fields("a\x1cb\u00a0c  d\n"); len(got) != 4 {
		t.Errorf("Fields = %q", got)
	}
	if got := Strip("\x1c\u00a0 x y\u2029"); got != "x y" {
		t.Errorf("Strip = %q", got)
	}
	if got := TrimRightSpace("x \u3000\x1f"); got != "x" {
		t.Errorf("TrimRightSpace = %q", got)
	}
}

// CPython 3.11's str.isupper and str.islower.
func TestStringCase(t *testing.T) {
	for _, c := range []struct {
		s            string
		upper, lower bool
	}{
		{"", false, false},
		{"123", false, false}, // no cased character
		{"ABC", true, false},
		{"ABC 1!", true, false},
		{"AbC", false, false},
		{"ǅA", false, false}, // a titlecase character rules both out
		{"Ⅳ", true, false},
		{"ⅳ", false, true},
		{"ß", false, true},
		{"ªb", false, true},
		{"abc def", false, true},
		{"İ", true, false},
		{"日本", false, false},
		{"HELLO ǅ", false, false},
		{"hello Ⓐ", false, false},
		{"σς", false, true},
	} {
		if got := IsUpperString(c.s); got != c.upper {
			t.Errorf("IsUpperString(%q) = %v", c.s, got)
		}
		if got := IsLowerString(c.s); got != c.lower {
			t.Errorf("IsLowerString(%q) = %v", c.s, got)
		}
	}
}
