package torchref

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// Run reads the JSON object a script prints last, whatever it printed before, and reports
// the script's failure with its stderr; the scripts are found from a directory below the
// repository root, as when a benchmark runs from a package directory.
func TestRunReadsTheLastJSONLineAndReportsFailures(t *testing.T) {
	root := t.TempDir()
	if err := os.MkdirAll(filepath.Join(root, "scripts"), 0o755); err != nil {
		t.Fatal(err)
	}
	write := func(name, body string) {
		if err := os.WriteFile(filepath.Join(root, "scripts", name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("ok.py", "import os, sys\nprint('warming up')\nprint('{\"threads\": %s, \"arg\": \"%s\"}' % (os.environ['OMP_NUM_THREADS'], sys.argv[1]))\n\n")
	write("fails.py", "import sys\nsys.stderr.write('no model here\\n')\nsys.exit(3)\n")
	sub := filepath.Join(root, "pkg", "sub")
	if err := os.MkdirAll(sub, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Chdir(sub)
	py := "/usr/bin/python3"
	if _, err := os.Stat(py); err != nil {
		t.Fatalf("%s: %v (make deps installs it)", py, err)
	}
	var got struct {
		Threads int    `json:"threads"`
		Arg     string `json:"arg"`
	}
	rss, err := Run(context.Background(), py, "ok.py", 3, &got, "x y")
	if err != nil {
		t.Fatal(err)
	}
	if got.Threads != 3 || got.Arg != "x y" || rss <= 0 {
		t.Errorf("got %+v, peak RSS %.1f MB", got, rss)
	}
	if _, err := Run(context.Background(), py, "fails.py", 1, &got); err == nil || !strings.Contains(err.Error(), "no model here") {
		t.Errorf("a failing script: got %v, want its stderr", err)
	}
	if _, err := Run(context.Background(), py, "missing.py", 1, &got); err == nil || !strings.Contains(err.Error(), "scripts/missing.py not found") {
		t.Errorf("a missing script: got %v", err)
	}
	if path, why := FindPython(context.Background(), filepath.Join(root, "no-python")); path != "" || !strings.Contains(why, "not found") {
		t.Errorf("FindPython of a missing interpreter: %q, %q", path, why)
	}
}
