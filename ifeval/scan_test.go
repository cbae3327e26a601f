package ifeval

import (
	"regexp"
	"slices"
	"testing"
)

// The official regular expressions the scanners replace, in Go with Python's \s.
var (
	paragraphDivider = regexp.MustCompile(pyS + `?\*\*\*` + pyS + `?`)
	starBullet       = regexp.MustCompile(`(?m)^` + pyS + `*\*[^\*].*$`)
	dashBullet       = regexp.MustCompile(`(?m)^` + pyS + `*-.*$`)
	postscriptPS     = regexp.MustCompile(`(?m)` + pyS + `*p\.` + pyS + `?s\..*$`)
	postscriptPPS    = regexp.MustCompile(`(?m)` + pyS + `*p\.` + pyS + `?p\.` + pyS + `?s.*$`)
)

// checkScanners compares every scanner with its regexp on s.
func checkScanners(t *testing.T, s string) {
	t.Helper()
	if got, want := splitParagraphs(s), paragraphDivider.Split(s, -1); !slices.Equal(got, want) {
		t.Errorf("splitParagraphs(%q) = %q, regexp %q", s, got, want)
	}
	if got, want := countBullets(s), len(starBullet.FindAllStringIndex(s, -1))+len(dashBullet.FindAllStringIndex(s, -1)); got != want {
		t.Errorf("countBullets(%q) = %d, regexp %d", s, got, want)
	}
	if got, want := hasPostscript(s, []string{"p.", "s."}), postscriptPS.MatchString(s); got != want {
		t.Errorf("P.S. in %q: %v, regexp %v", s, got, want)
	}
	if got, want := hasPostscript(s, []string{"p.", "p.", "s"}), postscriptPPS.MatchString(s); got != want {
		t.Errorf("P.P.S in %q: %v, regexp %v", s, got, want)
	}
}

var scanCases = []string{
	"", "***", "a***b", "a *** b", "a\u3000***\u3000b", "****", " ****", "** ***", "*** ***", "a\n***\n\n***\nb",
	"\xff***\xff", "a  ***  b",
	"* a\n* b\n- c", "*", "**", "*\n", "*\n\n* x", "  \n  * x", "\t-", "-\n-\n", "\n\n\n*x", "a * b\n *a", "**bold**\n* item",
	"\u2028* sep", "*\xff", " \n \n -",
	"p.s. hi", "p. s. hi", "p.  s.", "p.p.s", "p. p. s", "pp.s.", "p.\ns.", "p.\u3000s.", "xp.p.s", "p.s", "p.p.",
}

func TestScannersAreTheRegexps(t *testing.T) {
	for _, s := range scanCases {
		checkScanners(t, s)
	}
}

func FuzzScannersAreTheRegexps(f *testing.F) {
	for _, s := range scanCases {
		f.Add(s)
	}
	f.Fuzz(checkScanners)
}
