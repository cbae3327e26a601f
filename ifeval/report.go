package ifeval

import (
	"fmt"
	"io"
	"math"
	"slices"
	"strconv"
	"strings"
)

// pyFloat formats f as Python's str(float): shortest round-trip digits, ".0" on integral
// values, exponent form below 1e-4 and from 1e16.
func pyFloat(f float64) string {
	a := math.Abs(f)
	if a != 0 && (a < 1e-4 || a >= 1e16) {
		return strconv.FormatFloat(f, 'e', -1, 64)
	}
	s := strconv.FormatFloat(f, 'f', -1, 64)
	if !strings.Contains(s, ".") {
		s += ".0"
	}
	return s
}

// Write prints the report as print_report does.
func (r Report) Write(w io.Writer) error {
	var b strings.Builder
	fmt.Fprintf(&b, "prompt-level: %s\n", pyFloat(r.Prompt.Value()))
	fmt.Fprintf(&b, "instruction-level: %s\n", pyFloat(r.Instruction.Value()))
	for _, tier := range []map[string]Fraction{r.Tier0, r.Tier1} {
		b.WriteString("\n")
		keys := make([]string, 0, len(tier))
		for k := range tier {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		for _, k := range keys {
			fmt.Fprintf(&b, "%s %s\n", k, pyFloat(tier[k].Value()))
		}
	}
	_, err := io.WriteString(w, b.String())
	return err
}
