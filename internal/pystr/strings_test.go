package pystr

import (
	"regexp"
	"testing"
	"unicode"
)

// SpaceClass, used in regexps, matches exactly the characters IsSpace accepts.
func TestSpaceClassIsIsSpace(t *testing.T) {
	re := regexp.MustCompile(`^[` + SpaceClass + `]$`)
	for r := rune(0); r <= unicode.MaxRune; r++ {
		if r >= 0xd800 && r <= 0xdfff {
			continue
		}
		if re.MatchString(string(r)) != IsSpace(r) {
			t.Errorf("U+%04X: class %v, IsSpace %v", r, !IsSpace(r), IsSpace(r))
		}
	}
}

// What CPython 3 returns for each.
func TestStringMethods(t *testing.T) {
	for in, want := range map[string]string{"ABC": "abc", "İ": "i\u0307", "ΟΔΟΣ": "οδος", "ΟΔΟΣ.": "οδος.", "Σ": "σ", "AΣB": "aσb", "ΑΣ'Β": "ασ'β"} {
		if got := Lower(in); got != want {
			t.Errorf("%q.lower() = %q, want %q", in, got, want)
		}
	}
	if got := Strip("\x1c\u00a0 a b\u3000\x1f"); got != "a b" {
		t.Errorf("strip() = %q", got)
	}
	for s, want := range map[string]bool{"ABC1": true, "1": false, "ǅ": false, "Ⓐ": true, "ABc": false, "": false} {
		if got := IsUpperString(s); got != want {
			t.Errorf("%q.isupper() = %v", s, got)
		}
	}
	for s, want := range map[string]bool{"abc1": true, "ª": true, "aBc": false, "1 2": false} {
		if got := IsLowerString(s); got != want {
			t.Errorf("%q.islower() = %v", s, got)
		}
	}
}
