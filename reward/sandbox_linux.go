package reward

import (
	"debug/elf"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"sort"
	"strings"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// A sandboxed worker starts as this binary re-executed under sandboxArg0, inside new mount,
// PID, network, IPC and UTS namespaces (and a user namespace when not started as root). Its
// init (sandboxMain, run from this package's init before main) builds a minimal read-only
// root, pivots into it, drops privileges, loads the seccomp filter and execs the interpreter,
// which becomes PID 1 of the worker's namespace. Go's exec cannot do the mounts between fork
// and exec itself, hence the re-exec; any binary that links this package can start workers.
const sandboxArg0 = "autoif-reward-sandbox"

func init() {
	if len(os.Args) == 2 && os.Args[0] == sandboxArg0 {
		sandboxMain(os.Args[1])
	}
}

// sandboxSpec is what the init needs, passed as JSON in its argv.
type sandboxSpec struct {
	// Root is an empty directory to mount the new root's tmpfs on (in the worker's own mount
	// namespace only).
	Root string `json:"root"`
	// Python is the interpreter's real path; Args its argv; Env its environment.
	Python string   `json:"python"`
	Args   []string `json:"args"`
	Env    []string `json:"env"`
	// Mounts build the root, in order.
	Mounts []mountOp `json:"mounts"`
	// UID and GID to switch to; -1 keeps the identity (root of a user namespace, mapped to
	// the unprivileged caller).
	UID int `json:"uid"`
	GID int `json:"gid"`
	// TmpBytes sizes the private /tmp.
	TmpBytes int64 `json:"tmp_bytes"`
}

// mountOp puts one host path into the sandbox at the same path: a read-only bind mount of a
// file or directory, or a symlink with the host's link text.
type mountOp struct {
	Path    string `json:"path"`
	Dir     bool   `json:"dir,omitempty"`
	Symlink string `json:"symlink,omitempty"`
}

// sandboxExit is the init's exit status when it fails; its one-line reason is on stderr.
const sandboxExit = 125

func sandboxMain(arg string) {
	// Credentials, no_new_privs and the seccomp filter are per thread: everything from here
	// to execve runs on this one.
	runtime.LockOSThread()
	var spec sandboxSpec
	err := json.Unmarshal([]byte(arg), &spec)
	if err == nil {
		err = enterSandbox(&spec)
	}
	fmt.Fprintf(os.Stderr, "sandbox: %v\n", err)
	os.Exit(sandboxExit)
}

// enterSandbox only returns on failure.
func enterSandbox(s *sandboxSpec) error {
	if err := buildRoot(s); err != nil {
		return err
	}
	if err := dropPrivileges(s.UID, s.GID); err != nil {
		return err
	}
	path, err := unix.BytePtrFromString(s.Python)
	if err != nil {
		return err
	}
	argv, err := cStrings(s.Args)
	if err != nil {
		return err
	}
	envv, err := cStrings(s.Env)
	if err != nil {
		return err
	}
	prog, err := seccompProgram(uintptr(unsafe.Pointer(path)))
	if err != nil {
		return err
	}
	if err := loadSeccomp(prog); err != nil {
		return err
	}
	_, _, errno := unix.RawSyscall(unix.SYS_EXECVE, uintptr(unsafe.Pointer(path)),
		uintptr(unsafe.Pointer(&argv[0])), uintptr(unsafe.Pointer(&envv[0])))
	runtime.KeepAlive(path)
	runtime.KeepAlive(argv)
	runtime.KeepAlive(envv)
	return fmt.Errorf("exec %s: %w", s.Python, errno)
}

// buildRoot makes the worker's filesystem: a tmpfs root, read-only bind mounts of exactly
// the interpreter's files, /dev/null, /dev/zero and /dev/urandom, a private size-limited /tmp,
// and a /proc of the worker's own PID namespace whose /proc/1 (the worker's zygote, which
// holds its protocol pipes) is hidden. Then it pivots into it and detaches the host's tree.
func buildRoot(s *sandboxSpec) error {
	// Nothing mounted here may propagate back to the host.
	if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, ""); err != nil {
		return fmt.Errorf("make mounts private: %w", err)
	}
	root := s.Root
	if err := unix.Mount("tmpfs", root, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV, "size=128m,mode=0755"); err != nil {
		return fmt.Errorf("mount root tmpfs: %w", err)
	}
	tmp := filepath.Join(root, "tmp")
	if err := os.Mkdir(tmp, 0o755); err != nil {
		return err
	}
	if err := unix.Mount("tmpfs", tmp, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV,
		fmt.Sprintf("size=%d,mode=1777", max(s.TmpBytes, 4096))); err != nil {
		return fmt.Errorf("mount /tmp: %w", err)
	}
	for _, m := range s.Mounts {
		if err := m.apply(root); err != nil {
			return err
		}
	}
	if err := execOnlyCopy(root, s.Python); err != nil {
		return err
	}
	for _, dev := range []string{"/dev/null", "/dev/zero", "/dev/urandom"} {
		if err := (mountOp{Path: dev}).apply(root); err != nil {
			return err
		}
	}
	proc := filepath.Join(root, "proc")
	if err := os.Mkdir(proc, 0o555); err != nil {
		return err
	}
	if err := unix.Mount("proc", proc, "proc", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, ""); err != nil {
		return fmt.Errorf("mount /proc: %w", err)
	}
	// The zygote is PID 1: its /proc entry would hand a function the zygote's pipes
	// (/proc/1/fd) and memory under the same uid.
	if err := unix.Mount("tmpfs", filepath.Join(proc, "1"), "tmpfs",
		unix.MS_RDONLY|unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, "size=4k,mode=0555"); err != nil {
		return fmt.Errorf("hide /proc/1: %w", err)
	}
	if err := unix.Mount("", root, "", unix.MS_REMOUNT|unix.MS_RDONLY|unix.MS_NOSUID|unix.MS_NODEV, ""); err != nil {
		return fmt.Errorf("remount root read-only: %w", err)
	}
	if err := unix.Chdir(root); err != nil {
		return err
	}
	if err := unix.PivotRoot(".", "."); err != nil {
		return fmt.Errorf("pivot_root: %w", err)
	}
	if err := unix.Unmount(".", unix.MNT_DETACH); err != nil {
		return fmt.Errorf("detach host root: %w", err)
	}
	return unix.Chdir("/tmp")
}

// execOnlyCopy puts a copy of the interpreter that no one inside can read (mode 0111) over its
// path. The kernel marks a process that execs a file it cannot read as not dumpable, and every
// fork inherits that: then no process of the worker can open another's /proc/PID/mem or fd
// entries, even under the same uid (the zygote's children fork while another runs).
func execOnlyCopy(root, python string) error {
	src, err := os.Open(python)
	if err != nil {
		return fmt.Errorf("interpreter: %w", err)
	}
	defer src.Close()
	copyPath := filepath.Join(root, ".interpreter")
	dst, err := os.OpenFile(copyPath, os.O_CREATE|os.O_WRONLY|os.O_EXCL, 0o700)
	if err != nil {
		return fmt.Errorf("interpreter copy: %w", err)
	}
	_, err = io.Copy(dst, src)
	if cerr := dst.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Chmod(copyPath, 0o111)
	}
	if err != nil {
		return fmt.Errorf("interpreter copy: %w", err)
	}
	if err := unix.Mount(copyPath, filepath.Join(root, python), "", unix.MS_BIND, ""); err != nil {
		return fmt.Errorf("bind the interpreter copy: %w", err)
	}
	return nil
}

func (m mountOp) apply(root string) error {
	dst := filepath.Join(root, m.Path)
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return fmt.Errorf("sandbox path %s: %w", m.Path, err)
	}
	if m.Symlink != "" {
		if err := os.Symlink(m.Symlink, dst); err != nil && !errors.Is(err, fs.ErrExist) {
			return fmt.Errorf("sandbox symlink %s: %w", m.Path, err)
		}
		return nil
	}
	if m.Dir {
		if err := os.Mkdir(dst, 0o755); err != nil && !errors.Is(err, fs.ErrExist) {
			return fmt.Errorf("sandbox path %s: %w", m.Path, err)
		}
	} else {
		f, err := os.OpenFile(dst, os.O_CREATE|os.O_WRONLY, 0o644)
		if err != nil {
			return fmt.Errorf("sandbox path %s: %w", m.Path, err)
		}
		f.Close()
	}
	// Not recursive: mounts below a bound directory stay out of the sandbox.
	if err := unix.Mount(m.Path, dst, "", unix.MS_BIND, ""); err != nil {
		return fmt.Errorf("bind %s: %w", m.Path, err)
	}
	// A bind mount inherits the source's flags; a user namespace may not clear the ones the
	// source is locked with (nosuid, nodev, noexec), so carry them over.
	var st unix.Statfs_t
	if err := unix.Statfs(m.Path, &st); err != nil {
		return fmt.Errorf("statfs %s: %w", m.Path, err)
	}
	flags := uintptr(unix.MS_REMOUNT | unix.MS_BIND | unix.MS_RDONLY | unix.MS_NOSUID)
	for _, f := range [][2]uintptr{{unix.ST_NODEV, unix.MS_NODEV}, {unix.ST_NOEXEC, unix.MS_NOEXEC},
		{unix.ST_NOATIME, unix.MS_NOATIME}, {unix.ST_NODIRATIME, unix.MS_NODIRATIME}, {unix.ST_RELATIME, unix.MS_RELATIME}} {
		if uintptr(st.Flags)&f[0] != 0 {
			flags |= f[1]
		}
	}
	if err := unix.Mount("", dst, "", flags, ""); err != nil {
		return fmt.Errorf("remount %s read-only: %w", m.Path, err)
	}
	return nil
}

// dropPrivileges empties the capability bounding set (so the exec'd interpreter holds no
// capability even as root of a user namespace), then switches to uid/gid unless they are -1.
// Raw per-thread calls: only this thread survives the execve.
func dropPrivileges(uid, gid int) error {
	for c := uintptr(0); c <= 63; c++ {
		if _, _, errno := unix.RawSyscall6(unix.SYS_PRCTL, unix.PR_CAPBSET_DROP, c, 0, 0, 0, 0); errno != 0 && errno != unix.EINVAL {
			return fmt.Errorf("drop capability %d: %w", c, errno)
		}
	}
	if _, _, errno := unix.RawSyscall6(unix.SYS_PRCTL, unix.PR_CAP_AMBIENT, unix.PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0, 0); errno != 0 && errno != unix.EINVAL {
		return fmt.Errorf("clear ambient capabilities: %w", errno)
	}
	if uid >= 0 {
		if _, _, errno := unix.RawSyscall(unix.SYS_SETGROUPS, 0, 0, 0); errno != 0 {
			return fmt.Errorf("setgroups: %w", errno)
		}
		if _, _, errno := unix.RawSyscall(unix.SYS_SETRESGID, uintptr(gid), uintptr(gid), uintptr(gid)); errno != 0 {
			return fmt.Errorf("setresgid %d: %w", gid, errno)
		}
		if _, _, errno := unix.RawSyscall(unix.SYS_SETRESUID, uintptr(uid), uintptr(uid), uintptr(uid)); errno != 0 {
			return fmt.Errorf("setresuid %d: %w", uid, errno)
		}
	}
	// No capability left in any set, so that the exec below runs with no privilege to read
	// the execute-only interpreter (which is what makes the worker not dumpable) even as root
	// of a user namespace.
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]unix.CapUserData
	if _, _, errno := unix.RawSyscall(unix.SYS_CAPSET, uintptr(unsafe.Pointer(&hdr)), uintptr(unsafe.Pointer(&data[0])), 0); errno != 0 {
		return fmt.Errorf("drop capabilities: %w", errno)
	}
	// A change of credentials clears the parent-death signal: set it again. (The parent is
	// outside this PID namespace, so getppid cannot tell whether it is still there.)
	if _, _, errno := unix.RawSyscall(unix.SYS_PRCTL, unix.PR_SET_PDEATHSIG, uintptr(syscall.SIGKILL), 0); errno != 0 {
		return fmt.Errorf("parent-death signal: %w", errno)
	}
	return nil
}

// pythonLayout is what an interpreter needs from the host filesystem, as it reports it after
// importing every module the workers preload (worker.py --layout).
type pythonLayout struct {
	Executable string   `json:"executable"`
	Path       []string `json:"path"`
	// Maps are the files mapped into the interpreter: its shared libraries and extension
	// modules.
	Maps    []string `json:"maps"`
	Version string   `json:"version"`
}

// plan returns the mount operations that give the sandbox exactly the interpreter: its
// executable and dynamic loader, its import path, the directories of the libraries it
// loads, and the symlinks on the way to them, each at its host path.
func (l *pythonLayout) plan() ([]mountOp, error) {
	p := &planner{binds: map[string]bool{}, links: map[string]string{}}
	p.add(l.Executable)
	if f, err := elf.Open(l.Executable); err == nil {
		for _, prog := range f.Progs {
			if prog.Type == elf.PT_INTERP {
				b := make([]byte, prog.Filesz)
				if _, err := prog.ReadAt(b, 0); err == nil {
					p.add(strings.TrimRight(string(b), "\x00"))
				}
			}
		}
		f.Close()
	}
	for _, dir := range l.Path {
		if dir != "" {
			p.add(dir)
		}
	}
	libDirs := map[string]bool{}
	for _, m := range l.Maps {
		if strings.HasPrefix(m, "/") {
			p.add(m)
			libDirs[filepath.Dir(m)] = true
		}
	}
	for d := range libDirs {
		p.addDir(d)
	}
	if _, err := os.Stat("/etc/ld.so.cache"); err == nil {
		p.add("/etc/ld.so.cache")
	}
	// The loader finds libraries by their soname links, some of which point out of the
	// library directory (Debian's /etc/alternatives for BLAS): follow those to the bound
	// files so their chains exist inside.
	for d := range libDirs {
		ents, err := os.ReadDir(d)
		if err != nil {
			continue
		}
		for _, e := range ents {
			if e.Type()&fs.ModeSymlink == 0 {
				continue
			}
			full := filepath.Join(d, e.Name())
			real, err := filepath.EvalSymlinks(full)
			if err != nil || !p.covered(real) {
				continue
			}
			p.add(full)
		}
	}
	return p.ops()
}

type planner struct {
	binds map[string]bool   // host path -> is a directory
	links map[string]string // host path -> link text
	err   error
}

// addDir binds a whole directory.
func (p *planner) addDir(dir string) {
	if real, err := filepath.EvalSymlinks(dir); err == nil {
		p.add(dir)
		p.binds[real] = true
	}
}

// add makes path resolve inside the sandbox as on the host: each symlink on the way is
// recreated with the same link text and followed, and what it ends at is bound.
func (p *planner) add(path string) {
	path = filepath.Clean(path)
	for hops := 0; hops < 40; hops++ {
		resolved, next, ok := p.step(path)
		if !ok {
			return
		}
		if next == "" {
			st, err := os.Stat(resolved)
			if err != nil {
				return
			}
			if _, seen := p.binds[resolved]; !seen {
				p.binds[resolved] = st.IsDir()
			}
			return
		}
		path = next
	}
}

// step walks path's components; at the first symlink it records the link and returns the
// path with the link replaced by its target. With no symlink it returns the path itself.
func (p *planner) step(path string) (resolved, next string, ok bool) {
	parts := strings.Split(strings.TrimPrefix(path, "/"), "/")
	cur := "/"
	for i, c := range parts {
		cand := filepath.Join(cur, c)
		st, err := os.Lstat(cand)
		if err != nil {
			return "", "", false
		}
		if st.Mode()&fs.ModeSymlink != 0 {
			target, err := os.Readlink(cand)
			if err != nil {
				return "", "", false
			}
			p.links[cand] = target
			if !filepath.IsAbs(target) {
				target = filepath.Join(cur, target)
			}
			return "", filepath.Join(append([]string{target}, parts[i+1:]...)...), true
		}
		cur = cand
	}
	return cur, "", true
}

// covered reports whether path lies inside a bound directory or is a bound file.
func (p *planner) covered(path string) bool {
	for b, dir := range p.binds {
		if path == b || (dir && strings.HasPrefix(path, b+"/")) {
			return true
		}
	}
	return false
}

// ops orders the plan: nothing inside a bound directory (it is there already), symlinks
// before the binds that may sit below them, shorter paths first.
func (p *planner) ops() ([]mountOp, error) {
	var dirs []string
	for b, dir := range p.binds {
		if dir {
			dirs = append(dirs, b)
		}
	}
	inside := func(path string) bool {
		for _, d := range dirs {
			if path != d && strings.HasPrefix(path, d+"/") {
				return true
			}
		}
		return false
	}
	var out []mountOp
	for l, t := range p.links {
		if !inside(l) {
			out = append(out, mountOp{Path: l, Symlink: t})
		}
	}
	for b, dir := range p.binds {
		if !inside(b) {
			if _, isLink := p.links[b]; !isLink {
				out = append(out, mountOp{Path: b, Dir: dir})
			}
		}
	}
	sort.Slice(out, func(i, j int) bool {
		if (out[i].Symlink != "") != (out[j].Symlink != "") {
			return out[i].Symlink != ""
		}
		return out[i].Path < out[j].Path
	})
	// A bind below a recreated symlink would land inside the host's target instead.
	for _, o := range out {
		for l := range p.links {
			if o.Symlink == "" && strings.HasPrefix(o.Path, l+"/") {
				return nil, fmt.Errorf("sandbox plan: %s lies below the symlink %s", o.Path, l)
			}
		}
	}
	if slices.ContainsFunc(out, func(o mountOp) bool { return o.Path == "/" }) {
		return nil, errors.New("sandbox plan: the interpreter needs the whole host root")
	}
	return out, p.err
}

// cStrings is a NULL-terminated array of C strings for execve.
func cStrings(ss []string) ([]*byte, error) {
	out := make([]*byte, len(ss)+1)
	for i, s := range ss {
		p, err := unix.BytePtrFromString(s)
		if err != nil {
			return nil, err
		}
		out[i] = p
	}
	return out, nil
}
