# autoif reward worker: runs untrusted `evaluate(response)` verification functions.
#
# Started by the Go pool (reward/worker.go), inside the sandbox reward/sandbox_linux.go builds,
# with: fd 3 = requests, fd 4 = replies, fd 5 = a 24-byte shared progress slot (memfd), fds 0/1
# = /dev/null, fd 2 = a capped diagnostics pipe. Frames are a 4-byte little-endian length and a
# payload.
#
# This process is a zygote: it imports everything verification functions use, then for each
# request forks a child that runs the one function on the request's responses and exits. The
# zygote never runs untrusted code and never parses a request: it holds request bytes only in
# buffers it zeroes once the child has its copy, so no function can change what a later
# function sees or read what an earlier one was sent. The child's result frames reach Go
# through the zygote, which re-frames them (tag C) and then reports the child's end itself (tag
# Z), after every process the child left behind is dead: a function can forge its own results,
# never another's.
#
# The OS layer (namespaces, read-only root, seccomp, uid, rlimits, Go-side deadlines) is the
# security boundary. The audit hook below is defence in depth and, more usefully, turns a
# forbidden operation into a clear error instead of a confusing failure later.
import sys
import os
import json
import struct
import time
import mmap
import builtins

# The worker's own functions resolve builtins through this private copy (a function captures
# its globals' __builtins__ when it is defined), so a function patching the builtins module
# cannot break the child's reporting of its results.
__builtins__ = dict(builtins.__dict__)

REQ_FD, REP_FD, PROG_FD = 3, 4, 5

# Modules verification functions commonly use, imported by the zygote so that no child pays
# for them (each child is a copy-on-write fork).
PRELOAD = (
    "re", "string", "json", "math", "collections", "itertools", "functools", "datetime",
    "unicodedata", "textwrap", "statistics", "difflib", "random", "operator", "typing", "enum",
    "decimal", "fractions", "heapq", "bisect", "copy", "calendar", "hashlib", "base64", "html",
    "urllib.parse", "keyword", "abc", "numbers", "dataclasses", "_strptime", "locale",
    "encodings.ascii", "encodings.latin_1", "encodings.utf_8",
)
OPTIONAL = ("langdetect",)
# Imported by a zygote only once a request needs them (Go sets a flag when the source names
# them): they triple the cost of every fork (NLTK maps ~50 MB and ~300 regions), so a worker
# that never scores such a function never pays it.
HEAVY = ("numpy", "nltk", "nltk.tokenize")

# Import of these (top-level package name) is refused: they open sockets, start processes,
# load native code or reach into the interpreter's internals.
DENY_IMPORT = frozenset((
    "ctypes", "_ctypes", "socket", "_socket", "ssl", "_ssl", "select", "selectors", "asyncio",
    "subprocess", "_posixsubprocess", "multiprocessing", "_multiprocessing", "concurrent",
    "pty", "tty", "termios", "fcntl", "mmap", "resource", "signal", "_signal", "gc",
    "pickle", "_pickle", "shelve", "dbm", "sqlite3", "_sqlite3",
    "http", "urllib.request", "ftplib", "smtplib", "poplib", "imaplib", "telnetlib", "xmlrpc",
    "socketserver", "webbrowser", "shutil", "tempfile", "faulthandler", "tracemalloc", "pdb",
    "code", "codeop", "runpy", "sysconfig", "posix", "pwd", "grp",
    "requests", "urllib3",
))

# Audit events refused outright (prefix match on the part before the first dot for families).
DENY_EVENTS = frozenset((
    "os.system", "os.exec", "os.posix_spawn", "os.spawn", "os.fork", "os.forkpty", "os.kill",
    "os.killpg", "os.remove", "os.rename", "os.rmdir", "os.mkdir", "os.chmod", "os.chown",
    "os.chflags", "os.lchflags", "os.link", "os.symlink", "os.truncate", "os.utime",
    "os.setxattr", "os.removexattr", "os.chdir", "os.putenv", "os.unsetenv", "os.startfile",
    "os.add_dll_directory", "subprocess.Popen", "signal.pthread_kill", "mmap.__new__",
    "sys._current_frames", "sys.setprofile", "sys.settrace",
    "pty.spawn", "shutil.rmtree", "shutil.move", "shutil.copyfile", "shutil.copymode",
    "shutil.copystat", "shutil.copytree", "shutil.chown", "shutil.make_archive",
    "shutil.unpack_archive", "tempfile.mkstemp", "tempfile.mkdtemp", "webbrowser.open",
    "urllib.Request", "ftplib.connect", "http.client.connect", "smtplib.connect",
    "poplib.connect", "imaplib.open", "telnetlib.Telnet.open", "sqlite3.connect",
    "ctypes.dlopen", "ctypes.dlsym", "ctypes.cdata", "ctypes.call_function",
    "ctypes.addressof", "ctypes.string_at", "ctypes.wstring_at", "ctypes.get_errno",
    "ctypes.set_errno", "ctypes.seh_exception", "ctypes.PyObj_FromPtr", "ctypes.dlopen",
    "cpython.run_command", "cpython.run_file", "cpython.run_module", "cpython.run_startup",
    "cpython.PyInterpreterState_New", "cpython._PySys_ClearAuditHooks", "sys.addaudithook",
    "os.listdrives", "os.listmounts", "os.listvolumes", "resource.setrlimit",
    "resource.prlimit", "fcntl.fcntl", "fcntl.ioctl", "fcntl.flock", "fcntl.lockf",
    "syslog.openlog", "syslog.syslog", "pickle.find_class", "setopencodehook",
))
DENY_FAMILIES = frozenset(("socket", "ctypes", "subprocess", "winreg", "msvcrt", "_winapi"))
WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND


class SandboxDenied(PermissionError):
    """An operation the sandbox forbids (file write, socket, process, ...)."""


class ImportDenied(ImportError):
    """Importing a module the sandbox forbids."""


class OutputTooLarge(Exception):
    """The function printed more than the per-evaluation output cap."""


class _State:
    __slots__ = ("denied", "denied_import")


STATE = _State()
STATE.denied = None
STATE.denied_import = None


class CappedWriter:
    """Stands in for sys.stdout/sys.stderr: counts and drops, raises past the cap."""

    def __init__(self, limit):
        self.limit = limit
        self.n = 0
        self.over = False

    def write(self, s):
        self.n += len(s)
        if self.n > self.limit:
            self.over = True
            raise OutputTooLarge("printed more than %d characters" % self.limit)
        return len(s)

    def writelines(self, lines):
        for s in lines:
            self.write(s)

    def flush(self):
        pass

    def isatty(self):
        return False

    def fileno(self):
        raise OSError("no file descriptor in the sandbox")


def _allowed_roots():
    roots = []
    for p in list(sys.path) + [sys.prefix, sys.base_prefix, sys.exec_prefix]:
        if not p:
            continue
        p = os.path.normpath(os.path.abspath(p))
        if p not in ("/", "/usr", "/usr/local") and p not in roots:
            roots.append(p)
    return tuple(roots)


def _make_hook(roots, state, deny_import, deny_events, deny_families, write_flags,
               normpath=os.path.normpath, abspath=os.path.abspath,
               SandboxDenied=SandboxDenied, ImportDenied=ImportDenied):
    def readable(path):
        # Only str and bytes: a path-like object's __fspath__ could answer this check with
        # one path and the opener with another.
        if type(path) is not str and type(path) is not bytes:
            return False
        try:
            p = path
            if isinstance(p, bytes):
                p = p.decode("utf-8", "surrogateescape")
            p = normpath(abspath(p))
        except Exception:
            return False
        for r in roots:
            if p == r or p.startswith(r + "/"):
                return True
        return False

    def hook(event, args):
        if event == "open":
            path, mode, flags = args[0], args[1], args[2]
            writing = (mode is not None and any(c in mode for c in "wax+")) or (
                isinstance(flags, int) and flags & write_flags)
            if writing:
                state.denied = "file write to %r denied" % (path,)
                raise SandboxDenied(state.denied)
            if not readable(path):
                state.denied = "file read of %r denied" % (path,)
                raise SandboxDenied(state.denied)
            return
        if event == "import":
            name = args[0]
            if name in deny_import or name.split(".", 1)[0] in deny_import:
                state.denied_import = "import of %r not allowed in the sandbox" % name
                raise ImportDenied(state.denied_import)
            return
        if event in ("os.listdir", "os.scandir", "glob.glob", "glob.glob/2"):
            path = args[0] if args else "."
            if path is None or not readable(path):
                state.denied = "listing %r denied" % (path,)
                raise SandboxDenied(state.denied)
            return
        if event in deny_events or event.split(".", 1)[0] in deny_families:
            state.denied = "%s denied in the sandbox" % event
            raise SandboxDenied(state.denied)

    return hook


class Progress:
    """The shared slot Go reads to learn which evaluation is running and since when, and
    (from the zygote) which process runs the call, so that a deadline kills only it."""

    def __init__(self, fd):
        self.m = mmap.mmap(fd, 24)
        self.pack = struct.Struct("<qq").pack_into
        self.pack_pid = struct.Struct("<q").pack_into
        self.now = time.monotonic_ns

    def set(self, idx):
        self.pack(self.m, 0, idx, self.now())

    def set_call_pid(self, pid):
        self.pack_pid(self.m, 16, pid)


PHASE_TOPLEVEL = -1


def classify(e, state, out):
    """Maps an exception from untrusted code to (kind, message)."""
    try:
        msg = "%s: %s" % (type(e).__name__, e)
    except BaseException:
        msg = type(e).__name__
    msg = msg[:300]
    if out.over or isinstance(e, OutputTooLarge):
        return "output_too_large", msg
    if state.denied_import is not None or isinstance(e, ImportDenied):
        return "import_denied", state.denied_import or msg
    if state.denied is not None or isinstance(e, SandboxDenied):
        return "denied", state.denied or msg
    if isinstance(e, PermissionError) and e.errno == 1:
        # EPERM: what the seccomp filter answers to a call it refuses (and the kernel to a
        # process limit or a namespace operation).
        return "denied", msg + " (refused by the sandbox)"
    if isinstance(e, ModuleNotFoundError):
        return "module_unavailable", msg
    if isinstance(e, MemoryError):
        return "memory", msg
    return "exception", msg


def set_limits(address_space, cpu_seconds, open_files, file_size):
    # Lowering our own limits needs no privilege, and nothing untrusted has run yet. Applied
    # after the imports: a library that starts threads on import (OpenBLAS) must not meet a
    # process limit there.
    import resource
    for res, val in (
        (resource.RLIMIT_AS, address_space),
        (resource.RLIMIT_CPU, cpu_seconds),
        (resource.RLIMIT_FSIZE, file_size),
        (resource.RLIMIT_NOFILE, open_files),
        (resource.RLIMIT_CORE, 0),
    ):
        resource.setrlimit(res, (val, val))
    return resource


def layout():
    """--layout: what this interpreter needs from the filesystem once everything is imported."""
    preload(PRELOAD + OPTIONAL + HEAVY)
    maps = set()
    with open("/proc/self/maps") as f:
        for line in f:
            parts = line.split(None, 5)
            if len(parts) == 6 and parts[5].startswith("/"):
                maps.add(parts[5].strip())
    json.dump({"executable": os.path.realpath(sys.executable), "path": sys.path,
               "maps": sorted(maps), "version": sys.version.split()[0]}, sys.stdout)


def preload(names):
    for name in names:
        try:
            __import__(name)
        except Exception:
            pass


HDR = struct.Struct("<I")
# Request id, response set, flags, length of the options JSON. The responses follow it as a
# count and that many lengths (uint32) and the UTF-8 texts back to back: cheaper for a child to
# split than JSON to parse.
REQ_HDR = struct.Struct("<qQBI")
REQ_RESPONSES, REQ_HEAVY = 1, 2
MAX_FRAME = 64 << 20


def read_exact(fd, buf):
    """Fills buf (a bytearray or memoryview) from fd; False at end of stream."""
    view = memoryview(buf)
    got = 0
    while got < len(view):
        n = os.readv(fd, [view[got:]])
        if n == 0:
            return False
        got += n
    return True


def write_all(fd, *parts):
    data = [memoryview(p) for p in parts]
    while data:
        n = os.writev(fd, data)
        while n:
            if n >= len(data[0]):
                n -= len(data[0])
                data.pop(0)
            else:
                data[0] = data[0][n:]
                n = 0


def zero(buf):
    memoryview(buf)[:] = bytes(len(buf))


def main():
    if sys.argv[1:] == ["--layout"]:
        return layout()
    out_limit = int(sys.argv[1])
    address_space, cpu_seconds = int(sys.argv[2]), int(sys.argv[3])
    open_files, file_size = int(sys.argv[4]), int(sys.argv[5])
    audit = sys.argv[6] == "1"

    preload(PRELOAD + OPTIONAL)
    import gc
    import signal
    global fcntl
    import fcntl
    # Signals from inside the PID namespace reach its init (us) only for handlers it set:
    # with none, a function cannot interrupt the zygote.
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    # Every catchable signal blocked, here and so in every fork from birth: a child cannot
    # interrupt the next call's child, which is forked while it runs (SIGKILL and SIGSTOP
    # cannot be blocked; see alive()).
    signal.pthread_sigmask(signal.SIG_BLOCK, signal.valid_signals())
    resource = set_limits(address_space, cpu_seconds, open_files, file_size)
    progress = Progress(PROG_FD)
    os.close(PROG_FD)
    init = os.getpid() == 1
    # Objects that exist now are never collected: children do not copy their pages by
    # touching them.
    unimport = unimportable()
    # The builtins every function's globals start from: made once, before the freeze, not per
    # fork. Each child holds its own copy-on-write copy of this dict, and the zygote never runs
    # a function, so every child finds it pristine; making it per fork touched (and so copied)
    # ~70 pages per call in the zygote, whose memory the spare shares.
    fresh_builtins = dict(builtins.__dict__)
    gc.freeze()

    def send(obj):
        b = b"Z" + json.dumps(obj, separators=(",", ":")).encode()
        write_all(REP_FD, HDR.pack(len(b)), b)

    send({"ready": True, "python": sys.version.split()[0]})

    roots = _allowed_roots()

    def spawn():
        return fork_child(progress, out_limit, audit, resource, unimport, init, roots,
                          fresh_builtins)

    def spawn_for(rset, fd, length):
        """A spare that decodes the held response set (rset, in memfd fd) while it waits, so
        that a call on the same set does not decode it on its path; one called on another set
        is discarded unused. Only for sets worth it, large and already called on several times
        in a row: a discarded spare costs a fork on the next call's path."""
        child = spawn()
        if rset == 0 or length < PRELOAD_BYTES:
            return child, 0
        try:
            write_all(child[1], CALL_HDR.pack(0, 0, length))
            sent = 0
            while sent < length:
                sent += os.sendfile(child[1], fd, sent, length - sent)
        except OSError:
            return child, 0  # the spare is gone; the call finds out and replaces it
        return child, rset

    spare, spare_set = spawn(), 0
    hdr = bytearray(HDR.size)
    # The response set later calls may name lives in a memfd, not in this process's memory:
    # a child forked ahead of its request inherits the zygote's memory, and must not find
    # another call's responses there.
    held_fd, held_set, held_len = -1, 0, 0
    streak = 0  # calls in a row on the held set
    heavy = False
    while True:
        if not read_exact(REQ_FD, hdr):
            return
        (n,) = HDR.unpack(hdr)
        if n < REQ_HDR.size or n > MAX_FRAME:
            os._exit(70)
        req = bytearray(n)
        if not read_exact(REQ_FD, req):
            return
        rid, rset, flags, src_len = REQ_HDR.unpack_from(req)
        if src_len > n - REQ_HDR.size:
            os._exit(70)
        if flags & REQ_HEAVY and not heavy:
            # The spare was forked without them: replace it once they are imported.
            discard(spare)
            gc.unfreeze()
            preload(HEAVY)
            unimport = unimportable()
            gc.freeze()
            heavy = True
            spare, spare_set = spawn(), 0
        opts = memoryview(req)[REQ_HDR.size:REQ_HDR.size + src_len]
        responses = None
        if flags & REQ_RESPONSES:
            responses = memoryview(req)[REQ_HDR.size + src_len:]
            if rset:
                if held_fd >= 0:
                    os.close(held_fd)
                held_fd = os.memfd_create("responses", os.MFD_CLOEXEC)
                write_all(held_fd, responses)
                held_set, held_len = rset, len(responses)
            streak = 1
        elif rset == 0 or rset != held_set:
            os._exit(70)  # Go's bookkeeping and ours disagree: start afresh
        else:
            streak += 1
        # The spare was forked while the previous call's child ran: that child is dead now
        # (killed before Go heard the call was over), but it may have stopped or killed the
        # spare (signals are all it could reach: the spare blocks the rest, is not dumpable,
        # and seccomp refuses ptrace). What it left in /tmp goes.
        if init:
            wipe("/tmp")
        call_len = len(responses) if responses is not None else held_len
        if spare_set and (responses is not None or rset != spare_set):
            # The spare holds a set this call is not on: it never runs a function.
            discard(spare)
            spare, spare_set = spawn(), 0
        for attempt in (0, 1):
            if attempt or not alive(spare):
                discard(spare)
                spare, spare_set = spawn(), 0
            pid, req_w, res_r = spare
            progress.set_call_pid(pid)
            try:
                if spare_set:
                    write_all(req_w, CALL_HDR.pack(rid, src_len, 0), opts)
                    break
                write_all(req_w, CALL_HDR.pack(rid, src_len, call_len), opts)
                if responses is not None:
                    write_all(req_w, responses)
                else:
                    sent = 0
                    while sent < held_len:
                        sent += os.sendfile(req_w, held_fd, sent, held_len - sent)
                break
            except OSError:
                if attempt:
                    break  # the child is gone again; relay finds out how
        os.close(req_w)
        del opts, responses
        zero(req)
        del req
        # The next call's child is forked now, while this one runs: its fork and preparation
        # (and the held set's decoding) are then off the next call's path.
        spare, spare_set = spawn_for(held_set if streak >= PRELOAD_STREAK else 0, held_fd, held_len)
        garbled, ended = relay(res_r, rid)
        os.close(res_r)
        # The pipe is closed everywhere: nothing of this call can reach Go any more. A child
        # that did not report its end is waited for, to say how it ended (one that hangs is
        # Go's deadline's).
        status = 0
        if not ended:
            _, st, _ = os.wait4(pid, 0)
            status = os.waitstatus_to_exitcode(st)
        # The child dies, with anything it could have started (its process limit is 0; this
        # is the second lock), before Go hears the call is over.
        kill_all_but(spare[0], pid, init)
        # Formatted, not json.dumps'd: a call's end frame is the zygote's one write per call,
        # and json.dumps (a new encoder each time) wrote to ~80 pages that the fork had just
        # shared with the spare, a copy-on-write fault each.
        b = DONE % (rid, status, b"true" if garbled else b"false")
        write_all(REP_FD, HDR.pack(len(b)), b)
        reap()


def alive(spare):
    """Wakes the spare (a stop signal is the one thing the last child could have left it
    with) and reports whether it still lives."""
    pid = spare[0]
    try:
        os.kill(pid, 18)  # SIGCONT
        return os.waitpid(pid, os.WNOHANG)[0] == 0
    except OSError:
        return False


def kill_all_but(spare, pid, init):
    try:
        os.kill(pid, 9)
    except OSError:
        pass
    if not init:
        try:
            os.killpg(pid, 9)
        except OSError:
            pass
        return
    for name in os.listdir("/proc"):
        if name.isdigit() and int(name) not in (1, spare):
            try:
                os.kill(int(name), 9)
            except OSError:
                pass


def reap():
    """Collects dead children without waiting: a child's teardown (unmapping its copy of the
    zygote) overlaps the next call instead of delaying it."""
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def wipe(top):
    """Empties a directory whatever a function did to its contents (modes, nesting)."""
    try:
        entries = list(os.scandir(top))
    except OSError:
        return
    for e in entries:
        try:
            if e.is_dir(follow_symlinks=False):
                os.chmod(e.path, 0o700)
                wipe(e.path)
                os.rmdir(e.path)
            else:
                os.unlink(e.path)
        except OSError:
            pass


# What the zygote hands a child: request id, length of the options JSON, length of the
# responses; then those bytes. Id 0 (no options) hands a spare the held response set ahead of
# its call, whose own header then has no responses.
CALL_HDR = struct.Struct("<qII")
# The Z frame that ends a call: id, the child's exit status, whether it garbled its frames.
DONE = b'Z{"id":%d,"done":true,"status":%d,"garbled":%s}'
# A held set is decoded by the spare ahead of its call (spawn_for) from this size on, once it has
# had this many calls in a row: scoring many functions on one large set (cross-validation, the
# reference scripts' every function on every response), not a prompt's few responses.
PRELOAD_BYTES = 32 << 10
PRELOAD_STREAK = 4


def fork_child(progress, out_limit, audit, resource, unimport, init, roots, fresh_builtins):
    """Forks the next call's child before its request arrives, so the fork and the child's
    preparation overlap Go's turnaround rather than lengthen the call. Returns the child's pid,
    the pipe its request goes into and the pipe its results come out of."""
    req_r, req_w = os.pipe()
    res_r, res_w = os.pipe()
    try:
        # Room for a whole response set in one write (F_SETPIPE_SZ): the child then reads its
        # request without a round trip per 64 KiB.
        fcntl.fcntl(req_w, fcntl.F_SETPIPE_SZ, 1 << 20)
    except OSError:
        pass
    pid = os.fork()
    if pid == 0:
        try:
            # The child's descriptors are its request and result pipes, as fds 3 and 4, and
            # 0-2; the zygote's (Go's pipes, the held responses) are closed.
            os.dup2(req_r, REQ_FD)
            os.dup2(res_w, REP_FD)
            os.closerange(REP_FD + 1, 1 << 16)
            child(REQ_FD, REP_FD, progress, out_limit, audit, resource, unimport, roots,
                  fresh_builtins)
        finally:
            os._exit(0)
    os.close(req_r)
    os.close(res_w)
    if not init:
        os.setpgid(pid, pid)
    return pid, req_w, res_r


def discard(spare):
    pid, req_w, res_r = spare
    os.close(req_w)
    os.close(res_r)
    try:
        os.kill(pid, 9)
        os.waitpid(pid, 0)
    except OSError:
        pass


def relay(fd, rid):
    """Forwards the child's frames to Go as C frames until the child's pipe closes. Returns
    whether the child broke the framing (the rest of its output is dropped) and whether its
    last frame said it was its end (the child could lie, but only about itself)."""
    hdr = bytearray(HDR.size)
    ended = False
    while True:
        if not read_exact(fd, hdr):
            return False, ended
        (n,) = HDR.unpack(hdr)
        if n > MAX_FRAME:
            drain(fd)
            return True, False
        body = bytearray(n)
        if not read_exact(fd, body):
            zero(body)
            return True, False
        write_all(REP_FD, HDR.pack(n + 1), b"C", body)
        ended = body.find(b'"end":true', max(0, n - 4096)) >= 0
        zero(body)


def drain(fd):
    scratch = bytearray(1 << 16)
    while os.readv(fd, [scratch]):
        pass
    zero(scratch)


def unimportable():
    """Modules the zygote's imports pulled in that a function's process must not keep: ctypes
    (numpy loads it) would reach native code with no import to refuse, and the zygote's own
    signal, gc, fcntl and __main__. Dropped from a child's module cache, an import of them reaches the
    audit hook again. Other refused modules a library loaded (NLTK loads subprocess and socket)
    stay: libraries import them lazily, their actions raise audit events, and the OS layer
    refuses what they would do. Computed in the zygote, so a child does not touch (and copy)
    every module object to find them."""
    return tuple(name for name in sys.modules
                 if name.split(".", 1)[0] in ("ctypes", "_ctypes")
                 or name in ("_signal", "signal", "gc", "fcntl", "__main__"))


def child(req_r, w, progress, out_limit, audit, resource, unimport, roots, fresh_builtins):
    # Still trusted: no more processes or threads, output captured, the hook in place, all
    # before the request exists in this process.
    resource.setrlimit(resource.RLIMIT_NPROC, (0, 0))
    for name in unimport:
        sys.modules.pop(name, None)
    out = CappedWriter(out_limit)
    sys.stdout = sys.stderr = sys.__stdout__ = sys.__stderr__ = out
    sys.stdin = sys.__stdin__ = None
    state = STATE
    hdr = HDR
    write = os.write
    close, exit_ = os.close, os._exit
    monotonic = time.monotonic
    pset = progress.set
    esc = json.encoder.encode_basestring_ascii  # C; immune to patched json internals
    g = {"__builtins__": fresh_builtins, "__name__": "__verifier__"}
    if audit:
        sys.addaudithook(_make_hook(roots, STATE, DENY_IMPORT, DENY_EVENTS, DENY_FAMILIES,
                                    WRITE_FLAGS))
    call = bytearray(CALL_HDR.size)
    responses = None
    while True:
        if not read_exact(req_r, call):
            exit_(0)  # no request: the zygote is replacing this spare or shutting down
        rid, src_len, resp_len = CALL_HDR.unpack(call)
        body = bytearray(src_len + resp_len)
        if not read_exact(req_r, body):
            exit_(71)
        try:
            if resp_len:
                if responses is not None:
                    exit_(71)
                responses = split_responses(memoryview(body)[src_len:])
            if rid == 0:
                continue  # the held set, ahead of the call
            opts = json.loads(bytes(memoryview(body)[:src_len]))
        except Exception:
            exit_(71)
        if responses is None:
            exit_(71)
        break
    close(req_r)
    del body
    flush_s = opts.get("flush_ms", 2) / 1000.0
    verdict = VERDICTS.get(opts.get("returns"), verdict_strict)

    def send(text):
        b = text.encode()
        view = memoryview(hdr.pack(len(b)) + b)
        while view:
            n = write(w, view)
            view = view[n:]

    def results(base, codes, errs):
        # v holds one character per evaluation from index base: p pass, f fail, e error, s
        # skipped; e lists the errors and skips as [index, kind, message]. Built from C-level
        # pieces: the function
        # may have patched the json module's Python classes in this process.
        return '{"id":%d,"from":%d,"v":"%s","e":[%s]' % (
            rid, base, "".join(codes),
            ",".join(["[%d,%s,%s]" % (i, esc(k), esc(m)) for i, k, m in errs]))

    fatal = None
    opts_src = opts.pop("src")
    del opts
    pset(PHASE_TOPLEVEL)
    try:
        code = compile(opts_src, "<verifier>", "exec", dont_inherit=True)
    except BaseException as e:  # SyntaxError, ValueError (NUL bytes), RecursionError
        fatal = ("compile", ("%s: %s" % (type(e).__name__, e))[:300])
    else:
        del opts_src
        try:
            exec(code, g)
        except BaseException as e:
            fatal = classify(e, state, out)
    fn = None
    if fatal is None:
        fn = g.get("evaluate")
        if not callable(fn):
            fatal = ("compile", "no callable evaluate(response) defined")

    base = 0
    codes = []
    errs = []
    if fatal is None:
        last = monotonic()
        for i, resp in enumerate(responses):
            if out.n:
                out.n = 0
                out.over = False
            if state.denied is not None or state.denied_import is not None:
                state.denied = state.denied_import = None
            pset(i)
            try:
                r = fn(resp)
            except BaseException as e:
                kind, msg = classify(e, state, out)
                codes.append("e")
                errs.append((i, kind, msg))
            else:
                if r is True:
                    codes.append("p")
                elif r is False:
                    codes.append("f")
                else:
                    try:
                        code, msg = verdict(r)
                    except BaseException as e:  # a result whose type misbehaves when asked
                        code, msg = "e", "evaluate's result: " + classify(e, state, out)[1]
                    codes.append(code)
                    if msg is not None:
                        errs.append((i, "bad_return_type", msg))
            if i & 15 == 15:
                now = monotonic()
                if now - last >= flush_s:
                    send(results(base, codes, errs) + "}")
                    base = i + 1
                    codes = []
                    errs = []
                    last = now
    text = results(base, codes, errs) + ',"end":true'
    if fatal is not None:
        text += ',"fatal":[%s,%s]' % (esc(fatal[0]), esc(fatal[1]))
    send(text + "}")
    close(w)
    exit_(0)


# What a result other than True or False counts as, per return policy (Go's Options.Returns):
# a code (p pass, f fail, e error, s skipped) and, for e and s, why. They run in the
# function's process, after its evaluate returned, so whatever they call on the result (its
# __int__, __eq__) is the function's own code under the same deadline.


def _shown(r):
    t = type(r)
    if t is str:
        return "str %r" % (r[:40],)
    if t is float or (t is int and -10**15 < r < 10**15):  # str() of a huge int raises
        return "%s %r" % (t.__name__, r)
    return t.__name__


def verdict_strict(r):
    """True, False and the ints 0 and 1; anything else is an error."""
    if type(r) is int and (r == 0 or r == 1):
        return ("p" if r == 1 else "f"), None
    return "e", "evaluate returned %s, want bool" % _shown(r)


def verdict_autoif(r):
    """AutoIF's reference rule (code/7_query_vertification.py): None, or a value int() refuses,
    does not count; otherwise int(result) is the verdict. int() values other than 0 and 1, which
    the reference would average as they are, do not count either: a verdict is pass or fail."""
    if r is None:
        return "s", "evaluate returned None: skipped (--returns autoif)"
    try:
        v = int(r)
    except BaseException:
        return "s", "evaluate returned %s, which int() refuses: skipped (--returns autoif)" % _shown(r)
    if type(v) is int and (v == 0 or v == 1):
        return ("p" if v == 1 else "f"), None
    return "s", "evaluate returned %s, int() %s: skipped (--returns autoif)" % (
        _shown(r), "1 or more" if type(v) is int and v > 1 else "below 0")


LENIENT_TRUE = frozenset(("true", "1"))
LENIENT_FALSE = frozenset(("false", "0"))


def verdict_lenient(r):
    """Also the strings "True"/"False" (any case, surrounding space ignored), "1"/"0", the
    numbers 0 and 1, and numpy's bools; anything else is an error."""
    t = type(r)
    if t is int or t is float:
        if r == 0 or r == 1:
            return ("p" if r == 1 else "f"), None
    elif t is str:
        s = r.strip().lower()
        if s in LENIENT_TRUE:
            return "p", None
        if s in LENIENT_FALSE:
            return "f", None
    elif t.__name__ in ("bool_", "bool") and t.__module__ == "numpy":
        return ("p" if r else "f"), None
    return "e", "evaluate returned %s, want bool (--returns lenient also takes \"True\"/\"False\", 0/1)" % _shown(r)


VERDICTS = {"strict": verdict_strict, "autoif": verdict_autoif, "lenient": verdict_lenient}


def split_responses(raw):
    """The responses of a request: a uint32 count, the lengths, the UTF-8 texts."""
    (n,) = HDR.unpack_from(raw)
    lens = raw[4:4 + 4 * n].cast("I")
    pos = 4 + 4 * n
    out = []
    for k in lens:
        out.append(str(raw[pos:pos + k], "utf-8", "replace"))
        pos += k
    if pos != len(raw):
        raise ValueError("response set of %d bytes, %d used" % (len(raw), pos))
    return out


if __name__ == "__main__":
    main()
