package main

import (
	"fmt"
	"os"
	"time"

	"github.com/urfave/cli/v2"
)

// progressPrinter reports long work on stderr: a redrawn line on a terminal, a plain line
// every few seconds otherwise (logs, CI).
func progressPrinter(c *cli.Context) func(phase string, done, total int) {
	tty := isTerminal(os.Stderr)
	start := time.Now()
	var lastPlain time.Time
	return func(phase string, done, total int) {
		pct := 0.0
		if total > 0 {
			pct = 100 * float64(done) / float64(total)
		}
		elapsed := time.Since(start).Round(time.Second)
		if tty {
			const width = 30
			filled := int(pct / 100 * width)
			bar := make([]byte, width)
			for i := range bar {
				bar[i] = ' '
				if i < filled {
					bar[i] = '='
				}
			}
			fmt.Fprintf(os.Stderr, "\r%-14s [%s] %5.1f%% %d/%d %s", phase, bar, pct, done, total, elapsed)
			if done >= total {
				fmt.Fprintln(os.Stderr)
			}
			return
		}
		if done >= total || time.Since(lastPlain) > 5*time.Second {
			fmt.Fprintf(os.Stderr, "%s: %d/%d (%.0f%%) %s\n", phase, done, total, pct, elapsed)
			lastPlain = time.Now()
		}
	}
}

func isTerminal(f *os.File) bool {
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}
