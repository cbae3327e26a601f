package atomicfile

import (
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"syscall"
	"testing"
)

func names(t *testing.T, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range ents {
		out = append(out, e.Name())
	}
	return out
}

func readString(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestWriteFileReplacesWithTheGivenPermissionsAndLeavesNoTemporary(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "state.json")
	for _, body := range []string{"first", "second"} {
		if err := WriteFile(path, []byte(body), 0o640); err != nil {
			t.Fatal(err)
		}
		if got := readString(t, path); got != body {
			t.Fatalf("content %q, want %q", got, body)
		}
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o640 {
		t.Errorf("mode %v, want 0640", fi.Mode().Perm())
	}
	if got := names(t, dir); !slices.Equal(got, []string{"state.json"}) {
		t.Errorf("directory holds %v, want only state.json", got)
	}
}

func TestAFailedWriteKeepsTheOldFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "summary.json")
	if err := WriteFile(path, []byte("old"), 0o644); err != nil {
		t.Fatal(err)
	}
	boom := errors.New("encoder failed")
	err := Write(path, 0o644, func(w io.Writer) error {
		io.WriteString(w, "half of the new")
		return boom
	})
	if !errors.Is(err, boom) {
		t.Fatalf("got %v, want the writer's error", err)
	}
	if got := readString(t, path); got != "old" {
		t.Fatalf("content %q after a failed write, want the old one", got)
	}
	if got := names(t, dir); !slices.Equal(got, []string{"summary.json"}) {
		t.Errorf("directory holds %v, want only summary.json", got)
	}
	if err := WriteFile(filepath.Join(dir, "missing", "x"), nil, 0o644); err == nil {
		t.Error("writing into a missing directory succeeded")
	}
}

func fillWith(body string) func(string) error {
	return func(tmp string) error { return WriteFile(filepath.Join(tmp, "model"), []byte(body), 0o644) }
}

func TestReplaceDirSwapsWholeDirectories(t *testing.T) {
	parent := t.TempDir()
	dir := filepath.Join(parent, "checkpoint-00000001")
	for _, body := range []string{"v1", "v2"} {
		if err := ReplaceDir(dir, fillWith(body)); err != nil {
			t.Fatal(err)
		}
		if got := readString(t, filepath.Join(dir, "model")); got != body {
			t.Fatalf("content %q, want %q", got, body)
		}
	}
	fi, err := os.Stat(dir)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o755 {
		t.Errorf("mode %v, want 0755", fi.Mode().Perm())
	}
	boom := errors.New("fill failed")
	if err := ReplaceDir(dir, func(tmp string) error {
		fillWith("v3")(tmp)
		return boom
	}); !errors.Is(err, boom) {
		t.Fatalf("got %v, want fill's error", err)
	}
	if got := readString(t, filepath.Join(dir, "model")); got != "v2" {
		t.Fatalf("content %q after a failed fill, want v2", got)
	}
	if got := names(t, parent); !slices.Equal(got, []string{"checkpoint-00000001"}) {
		t.Errorf("parent holds %v, want only the directory", got)
	}
}

// crashEnv makes the test binary, run as a child, replace a directory and die by SIGKILL
// between ReplaceDir's two renames, the worst instant for a crash.
const crashEnv = "AUTOIF_ATOMICFILE_CRASH_DIR"

func TestMain(m *testing.M) {
	if dir := os.Getenv(crashEnv); dir != "" {
		BetweenRenames = func(string) { syscall.Kill(os.Getpid(), syscall.SIGKILL) }
		ReplaceDir(dir, fillWith("v2"))
		os.Exit(0) // not reached: the hook kills the process
	}
	os.Exit(m.Run())
}

func TestACrashBetweenTheRenamesLeavesTheOldCopyForResolve(t *testing.T) {
	parent := t.TempDir()
	dir := filepath.Join(parent, "policy")
	if err := ReplaceDir(dir, fillWith("v1")); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), crashEnv+"="+dir)
	err := cmd.Run()
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
		t.Fatalf("child ended with %v, want killed between the renames", err)
	}
	if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("after the crash %s: %v, want it missing", dir, err)
	}
	got := Resolve(dir)
	if got == dir {
		t.Fatalf("Resolve found no old copy in %v", names(t, parent))
	}
	if orig, ok := OldCopyOf(filepath.Base(got)); !ok || orig != "policy" {
		t.Errorf("OldCopyOf(%q) = %q, %v; want policy, true", filepath.Base(got), orig, ok)
	}
	if body := readString(t, filepath.Join(got, "model")); body != "v1" {
		t.Fatalf("resolved copy holds %q, want the complete old v1", body)
	}
	// The next replace succeeds and clears what the crash left.
	if err := ReplaceDir(dir, fillWith("v3")); err != nil {
		t.Fatal(err)
	}
	if Resolve(dir) != dir || readString(t, filepath.Join(dir, "model")) != "v3" {
		t.Fatalf("after the next replace: %v", names(t, parent))
	}
	if got := names(t, parent); !slices.Equal(got, []string{"policy"}) {
		t.Errorf("parent holds %v after a successful replace, want only policy", got)
	}
}

func TestOldCopyOfRecognisesOnlyReplaceDirNames(t *testing.T) {
	for name, want := range map[string]string{
		".checkpoint-00000002.old-123": "checkpoint-00000002",
		".a.old-b.old-7":               "a.old-b",
		"checkpoint-00000002":          "",
		".checkpoint-2.tmp-99":         "",
		".old-5":                       "",
	} {
		got, ok := OldCopyOf(name)
		if got != want || ok != (want != "") {
			t.Errorf("OldCopyOf(%q) = %q, %v; want %q", name, got, ok, want)
		}
	}
}

// What crashed replaces leave, Recover puts back (an old copy whose directory is missing) or
// removes (temporaries, old copies of directories that exist); other entries stay.
func TestRecoverPutsBackMissingDirectoriesAndClearsTheRest(t *testing.T) {
	parent := t.TempDir()
	for _, d := range []string{".ck-1.old-11", ".ck-1.tmp-11", "ck-2", ".ck-2.old-5", ".ck-3.tmp-9", ".hidden", "notes"} {
		if err := os.Mkdir(filepath.Join(parent, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := WriteFile(filepath.Join(parent, ".ck-1.old-11", "model"), []byte("v1"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := Recover(parent); err != nil {
		t.Fatal(err)
	}
	if got := names(t, parent); !slices.Equal(got, []string{".hidden", "ck-1", "ck-2", "notes"}) {
		t.Fatalf("after Recover: %v", got)
	}
	if got := readString(t, filepath.Join(parent, "ck-1", "model")); got != "v1" {
		t.Errorf("recovered ck-1 holds %q, want v1", got)
	}
	if err := Recover(filepath.Join(parent, "missing")); err != nil {
		t.Errorf("Recover of a missing directory: %v", err)
	}
}
