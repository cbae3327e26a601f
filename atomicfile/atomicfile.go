// Package atomicfile writes files and whole directories so that a reader, or a crash at any
// instant, sees either the previous complete version or the new complete one, never a part.
//
// A file goes through a temporary sibling: write, fsync, rename over the target, fsync the
// directory. A directory is built in a temporary sibling by the caller and swapped in with two
// renames (the old one aside, the new one in); between them the target name is missing, so
// readers go through Resolve, which finds the old copy a crash there leaves behind.
package atomicfile

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// WriteFile writes data to path atomically, with permissions perm.
func WriteFile(path string, data []byte, perm fs.FileMode) error {
	return Write(path, perm, func(w io.Writer) error {
		_, err := w.Write(data)
		return err
	})
}

// Write streams a file to path atomically: write gets a buffered writer on a temporary
// sibling, which replaces path only once write returned nil and the data is on disk.
func Write(path string, perm fs.FileMode, write func(w io.Writer) error) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	bw := bufio.NewWriterSize(tmp, 1<<20)
	err = write(bw)
	if err == nil {
		err = bw.Flush()
	}
	if err == nil {
		err = tmp.Chmod(perm) // CreateTemp makes 0600
	}
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp.Name(), path)
	}
	if err != nil {
		os.Remove(tmp.Name())
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := SyncDir(filepath.Dir(path)); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}

// Copy copies the file src to dst atomically, with permissions perm.
func Copy(src, dst string, perm fs.FileMode) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	return Write(dst, perm, func(w io.Writer) error {
		_, err := io.Copy(w, in)
		return err
	})
}

// SyncDir flushes a directory's entries (a rename or a new file in it) to disk.
func SyncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	return err
}

// The infixes of ReplaceDir's siblings. Both names start with "." so that listings of the
// parent (checkpoints, runs) skip them.
const (
	tmpInfix = ".tmp-"
	oldInfix = ".old-"
)

// BetweenRenames, when set, runs in ReplaceDir after the old directory was moved aside and
// before the new one is moved in: the one instant at which dir does not exist. It is a
// fault-injection point for crash tests (a test kills its process there); nil otherwise.
var BetweenRenames func(dir string)

// ReplaceDir replaces the directory dir (created if missing, with its parents) by one that
// fill builds in tmp, a new empty sibling directory. fill must write complete, synced files
// (WriteFile does). On fill's error nothing changes and tmp is removed. Otherwise dir is moved
// aside, tmp is renamed to dir and the old copy removed; a crash between the two renames
// leaves the old copy, which Resolve finds. ReplaceDir does not guard against two writers of
// the same dir at once.
func ReplaceDir(dir string, fill func(tmp string) error) error {
	dir = filepath.Clean(dir)
	parent, base := filepath.Dir(dir), filepath.Base(dir)
	if err := os.MkdirAll(parent, 0o755); err != nil {
		return fmt.Errorf("replace %s: %w", dir, err)
	}
	tmp, err := os.MkdirTemp(parent, "."+base+tmpInfix)
	if err != nil {
		return fmt.Errorf("replace %s: %w", dir, err)
	}
	fail := func(err error) error {
		os.RemoveAll(tmp)
		return fmt.Errorf("replace %s: %w", dir, err)
	}
	if err := os.Chmod(tmp, 0o755); err != nil { // MkdirTemp makes 0700
		return fail(err)
	}
	if err := fill(tmp); err != nil {
		os.RemoveAll(tmp)
		return err
	}
	if err := SyncDir(tmp); err != nil {
		return fail(err)
	}
	old := ""
	if _, err := os.Lstat(dir); err == nil {
		old = filepath.Join(parent, "."+base+oldInfix+strings.TrimPrefix(filepath.Base(tmp), "."+base+tmpInfix))
		if err := os.Rename(dir, old); err != nil {
			return fail(err)
		}
	} else if !errors.Is(err, fs.ErrNotExist) {
		return fail(err)
	}
	if BetweenRenames != nil {
		BetweenRenames(dir)
	}
	if err := os.Rename(tmp, dir); err != nil {
		if old != "" {
			os.Rename(old, dir)
		}
		return fail(err)
	}
	if err := SyncDir(parent); err != nil {
		return fmt.Errorf("replace %s: %w", dir, err)
	}
	// The new copy is durable: the old one, and any old copies and temporaries that crashed
	// replaces left (there is one writer per dir), are garbage now.
	for _, o := range siblings(dir, oldInfix) {
		os.RemoveAll(o)
	}
	for _, o := range siblings(dir, tmpInfix) {
		os.RemoveAll(o)
	}
	return nil
}

// Resolve returns where the latest complete version of a directory that ReplaceDir writes is:
// dir itself, or, when a crash between ReplaceDir's two renames left dir missing, the old copy
// moved aside then. Without either it returns dir (whose reading then fails as usual).
func Resolve(dir string) string {
	dir = filepath.Clean(dir)
	if _, err := os.Lstat(dir); err == nil {
		return dir
	}
	var best string
	var bestTime int64
	for _, o := range siblings(dir, oldInfix) {
		fi, err := os.Stat(o)
		if err != nil || !fi.IsDir() {
			continue
		}
		if t := fi.ModTime().UnixNano(); best == "" || t > bestTime {
			best, bestTime = o, t
		}
	}
	if best == "" {
		return dir
	}
	return best
}

// Recover tidies parent after crashed ReplaceDir calls on its entries: an old copy whose
// directory is missing is renamed back to it, and every other old copy and temporary is
// removed. Only the process that owns parent's directories may call it, before it writes
// any (a concurrent ReplaceDir would lose its temporary); readers use Resolve.
func Recover(parent string) error {
	ents, err := os.ReadDir(parent)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("recover %s: %w", parent, err)
	}
	var leftovers []string
	for _, e := range ents {
		name := e.Name()
		orig, ok := OldCopyOf(name)
		if !ok {
			if i := strings.LastIndex(name, tmpInfix); i >= 1 && name[0] == '.' {
				leftovers = append(leftovers, name)
			}
			continue
		}
		dir := filepath.Join(parent, orig)
		if _, err := os.Lstat(dir); errors.Is(err, fs.ErrNotExist) {
			if err := os.Rename(filepath.Join(parent, name), dir); err != nil {
				return fmt.Errorf("recover %s: %w", dir, err)
			}
			continue
		}
		leftovers = append(leftovers, name)
	}
	for _, name := range leftovers {
		if err := os.RemoveAll(filepath.Join(parent, name)); err != nil {
			return fmt.Errorf("recover %s: %w", parent, err)
		}
	}
	return SyncDir(parent)
}

// OldCopyOf reports whether name (an entry of a directory listing) is the old copy of a
// directory that ReplaceDir moved aside, and that directory's name: listings use it to show
// a directory that a crash left only as its old copy (see Resolve).
func OldCopyOf(name string) (string, bool) {
	if !strings.HasPrefix(name, ".") {
		return "", false
	}
	i := strings.LastIndex(name, oldInfix)
	if i <= 1 {
		return "", false
	}
	return name[1:i], true
}

// siblings lists ReplaceDir's old copies (infix oldInfix) or temporaries (tmpInfix) of dir.
func siblings(dir, infix string) []string {
	parent, base := filepath.Dir(dir), filepath.Base(dir)
	ents, err := os.ReadDir(parent)
	if err != nil {
		return nil
	}
	var out []string
	for _, e := range ents {
		name := e.Name()
		if i := strings.LastIndex(name, infix); i >= 1 && name[0] == '.' && name[1:i] == base {
			out = append(out, filepath.Join(parent, name))
		}
	}
	return out
}
