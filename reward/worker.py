# autoif reward worker: runs untrusted `evaluate(response)` verification functions.
#
# Started by the Go pool (reward/worker.go) with: fd 3 = requests, fd 4 = replies, fd 5 = a
# 16-byte shared progress slot (memfd), fds 0/1 = /dev/null, fd 2 = a capped diagnostics pipe.
# Frames are a 4-byte little-endian length followed by UTF-8 JSON.
#
# The OS layer (namespaces, uid, rlimits, Go-side deadlines) is the security boundary. The
# audit hook below is defence in depth and, more usefully, turns a forbidden operation into a
# clear error instead of a confusing failure later.
import sys
import os
import json
import struct
import time
import mmap
import operator
import builtins

# The worker's own functions resolve builtins through this private copy (a function captures
# its globals' __builtins__ when it is defined), so untrusted code patching the builtins module
# cannot break the protocol before the tamper check retires the worker.
__builtins__ = dict(builtins.__dict__)

REQ_FD, REP_FD, PROG_FD = 3, 4, 5

# Modules verification functions commonly use, imported while we are still trusted so that
# untrusted code pays no import cost and their state is part of the tamper snapshot.
PRELOAD = (
    "re", "string", "json", "math", "collections", "itertools", "functools", "datetime",
    "unicodedata", "textwrap", "statistics", "difflib", "random", "operator", "typing", "enum",
    "decimal", "fractions", "heapq", "bisect", "copy", "calendar", "hashlib", "base64", "html",
    "urllib.parse", "keyword", "abc", "numbers", "dataclasses", "_strptime", "locale",
    "encodings.ascii", "encodings.latin_1", "encodings.utf_8",
)
OPTIONAL = ("langdetect", "nltk", "nltk.tokenize")

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
               fspath=os.fspath, normpath=os.path.normpath, abspath=os.path.abspath,
               SandboxDenied=SandboxDenied, ImportDenied=ImportDenied):
    def readable(path):
        if isinstance(path, int):
            return False
        try:
            p = fspath(path)
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
    """The shared slot Go reads to learn which evaluation is running and since when."""

    def __init__(self, fd):
        self.m = mmap.mmap(fd, 16)
        self.pack = struct.Struct("<qq").pack_into
        self.now = time.monotonic_ns

    def set(self, idx):
        self.pack(self.m, 0, idx, self.now())


PHASE_TOPLEVEL, PHASE_CHECK = -1, -2


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
    if isinstance(e, ModuleNotFoundError):
        return "module_unavailable", msg
    if isinstance(e, MemoryError):
        return "memory", msg
    return "exception", msg


def snapshot_modules(skip=("sys",)):
    snap = {}
    for name, m in list(sys.modules.items()):
        if name in skip or m is None:
            continue
        d = getattr(m, "__dict__", None)
        if isinstance(d, dict):
            snap[name] = (m, d, dict(d))
    return snap


SYS_VOLATILE = ("stdout", "stderr", "last_type", "last_value", "last_traceback", "last_exc")

# Names through which code can reach state it does not name: with any of them (or any dunder
# name or string), the tamper check compares every module; without, only the modules the code
# names (by import, attribute or alias), since attribute stores are spelled out in co_names.
REACH_ANYWHERE = frozenset((
    "sys", "builtins", "getattr", "setattr", "delattr", "vars", "globals", "locals", "exec",
    "eval", "compile", "__import__", "importlib", "modules", "attrgetter", "methodcaller",
    "inspect", "copyreg", "gc", "ctypes", "pickle", "marshal", "types", "object", "type",
    "super", "classmethod", "staticmethod", "property", "breakpoint", "help", "input", "open",
    "f_globals", "f_locals", "f_builtins", "f_back", "tb_frame", "tb_next", "gi_frame",
    "cr_frame", "ag_frame", "traceback",
))


def code_reach(code, CodeType=type(compile("0", "", "eval"))):
    """Returns (names, anywhere): the names code and its nested code objects use, and whether
    it can reach unnamed state."""
    names = set()
    todo = [code]
    anywhere = False
    while todo:
        co = todo.pop()
        for n in co.co_names:
            names.add(n)
            for part in n.split("."):
                names.add(part)
                if part in REACH_ANYWHERE or part.startswith("__"):
                    anywhere = True
        consts = list(co.co_consts)
        while consts:
            c = consts.pop()
            if isinstance(c, CodeType):
                todo.append(c)
            elif isinstance(c, str):
                if "__" in c or c in REACH_ANYWHERE:
                    anywhere = True
            elif isinstance(c, (tuple, frozenset)):
                consts.extend(c)
    return frozenset(names), anywhere


def set_limits(address_space, cpu_seconds, open_files, processes):
    # Lowering our own limits needs no privilege (Go cannot prlimit a process of another uid
    # without CAP_SYS_RESOURCE), and nothing untrusted has run yet.
    import resource
    limits = [
        (resource.RLIMIT_AS, address_space),
        (resource.RLIMIT_CPU, cpu_seconds),
        (resource.RLIMIT_FSIZE, 0),
        (resource.RLIMIT_NOFILE, open_files),
        (resource.RLIMIT_CORE, 0),
    ]
    if processes >= 0:
        limits.append((resource.RLIMIT_NPROC, processes))
    for res, val in limits:
        resource.setrlimit(res, (val, val))
    sys.modules.pop("resource", None)


def main():
    out_limit, cache_size = int(sys.argv[1]), int(sys.argv[2])
    set_limits(int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6]))

    for name in PRELOAD:
        try:
            __import__(name)
        except Exception:
            pass
    for name in OPTIONAL:
        try:
            __import__(name)
        except Exception:
            pass

    rf = open(REQ_FD, "rb", buffering=1 << 16, closefd=True)
    rep_fd = REP_FD
    progress = Progress(PROG_FD)
    os.close(PROG_FD)
    write = os.write
    loads, dumps = json.loads, json.dumps
    hdr = struct.Struct("<I")
    monotonic = time.monotonic
    process_time = time.process_time

    esc = json.encoder.encode_basestring_ascii  # C; immune to patched json internals

    def send_raw(text):
        b = text.encode()
        view = memoryview(hdr.pack(len(b)) + b)
        while view:
            n = write(rep_fd, view)
            view = view[n:]

    def send(obj):
        send_raw(dumps(obj, separators=(",", ":")))

    def encode_results(base, codes, errs):
        # v holds one character per evaluation from index base: p pass, f fail, e error;
        # e lists the errors as [index, kind, message].
        return '"from":%d,"v":"%s","e":[%s]' % (
            base, "".join(codes),
            ",".join(["[%d,%s,%s]" % (i, esc(k), esc(m)) for i, k, m in errs]))

    def send_done(rid, base, codes, errs, cpu, fatal, reason, compiled):
        # Built by hand from C-level pieces: after untrusted code ran, library Python code
        # (json's encoder classes) may be patched; this frame must still be right.
        text = '{"id":%d,"done":true,"cpu":%r,"compiled":%s,%s' % (
            rid, cpu, "true" if compiled else "false", encode_results(base, codes, errs))
        if fatal is not None:
            text += ',"fatal":[%s,%s]' % (esc(fatal[0]), esc(fatal[1]))
        if reason is not None:
            text += ',"tampered":%s' % esc(reason)
        send_raw(text + "}")

    # Signal handling state belongs to the worker; take the module out of reach.
    for name in ("_signal", "signal", "gc", "posix", "__main__"):
        sys.modules.pop(name, None)

    out = CappedWriter(out_limit)
    sys.stdout = out
    sys.stderr = out
    sys.__stdout__ = out
    sys.__stderr__ = out
    sys.stdin = None
    sys.__stdin__ = None

    pristine_builtins = dict(builtins.__dict__)
    snap = snapshot_modules()
    known = [len(sys.modules)]
    sys_snap = {k: v for k, v in sys.__dict__.items() if k not in SYS_VOLATILE}
    rec_limit = sys.getrecursionlimit()

    # The snapshot as parallel tuples, compared with C-level loops (map over operator
    # functions); and an index from every name a module is known by (its name, its last dotted
    # component, and every attribute name under which some module holds it) to the modules,
    # so a call that names only a few modules checks only those.
    ne, is_not = operator.ne, operator.is_not
    ModuleType = type(sys)
    view = {}

    def rebuild():
        view["names"] = tuple(snap)
        view["mods"] = tuple(v[0] for v in snap.values())
        view["dicts"] = tuple(v[1] for v in snap.values())
        view["copies"] = tuple(v[2] for v in snap.values())
        view["sys_keys"] = tuple(sys_snap)
        view["sys_vals"] = tuple(sys_snap.values())
        by_id = {id(v[0]): k for k, v in snap.items()}
        index = {}
        for k, (m, d, c) in snap.items():
            index.setdefault(k, set()).add(k)
            index.setdefault(k.rsplit(".", 1)[-1], set()).add(k)
            for attr, v in c.items():
                if type(v) is ModuleType and id(v) in by_id:
                    index.setdefault(attr, set()).add(by_id[id(v)])
        view["index"] = index

    rebuild()
    sysd = sys.__dict__

    def tampered(reach):
        if builtins.__dict__ != pristine_builtins:
            return "builtins"
        mods = sys.modules
        if len(mods) != known[0]:
            # Imported during the call: check, then snapshot as they are now.
            for name, m in list(mods.items()):
                if name not in snap and name != "sys" and m is not None:
                    d = getattr(m, "__dict__", None)
                    if isinstance(d, dict):
                        snap[name] = (m, d, dict(d))
            known[0] = len(mods)
            rebuild()
            reach = None
        if reach is not None and not reach[1]:
            index = view["index"]
            for n in reach[0]:
                for k in index.get(n, ()):
                    m, d, c = snap[k]
                    if mods.get(k) is not m or d != c:
                        return k
            return None
        if any(map(is_not, map(mods.get, view["names"]), view["mods"])):
            for name, m in zip(view["names"], view["mods"]):
                if mods.get(name) is not m:
                    return "sys.modules[%r]" % name
        if any(map(ne, view["dicts"], view["copies"])):
            for name, d, c in zip(view["names"], view["dicts"], view["copies"]):
                if d != c:
                    return name
        if any(map(is_not, map(sysd.get, view["sys_keys"]), view["sys_vals"])):
            return "sys"
        return None

    sys.addaudithook(_make_hook(_allowed_roots(), STATE, DENY_IMPORT, DENY_EVENTS,
                                DENY_FAMILIES, WRITE_FLAGS))
    cache = {}
    held = [0, None]
    state = STATE
    pset = progress.set
    send({"ready": True, "python": sys.version.split()[0]})

    while True:
        h = rf.read(4)
        if len(h) < 4:
            return
        (n,) = hdr.unpack(h)
        req = loads(rf.read(n))
        rid = req["id"]
        # Go sends a response set once per worker and then refers to it by its id.
        rset = req.get("rset", 0)
        responses = req["responses"]
        if responses is None:
            if held[0] != rset or rset == 0:
                os._exit(70)  # Go's bookkeeping and ours disagree: start afresh
            responses = held[1]
        elif rset:
            held[0], held[1] = rset, responses
        flush_s = req.get("flush_ms", 2) / 1000.0
        key = req["hash"]

        entry = cache.get(key)
        compiled = entry is None
        if compiled:
            try:
                code = compile(req["src"], "<verifier>", "exec", dont_inherit=True)
            except BaseException as e:  # SyntaxError, ValueError (NUL bytes), RecursionError
                send_done(rid, 0, [], [], process_time(),
                          ("compile", ("%s: %s" % (type(e).__name__, e))[:300]), None, True)
                continue
            if len(cache) >= cache_size:
                cache.pop(next(iter(cache)))
            entry = cache[key] = (code, code_reach(code))
        code, reach = entry

        g = {"__builtins__": dict(pristine_builtins), "__name__": "__verifier__"}
        sys.stdout = sys.stderr = out
        sys.setrecursionlimit(rec_limit)
        out.n = 0
        out.over = False
        state.denied = state.denied_import = None
        progress.set(PHASE_TOPLEVEL)
        fatal = None
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
                        t = type(r)
                        if t is int and (r == 0 or r == 1):
                            codes.append("p" if r == 1 else "f")
                        else:
                            codes.append("e")
                            errs.append((i, "bad_return_type",
                                         "evaluate returned %s, want bool" % t.__name__))
                now = monotonic()
                if now - last >= flush_s:
                    send_raw('{"id":%d,%s}' % (rid, encode_results(base, codes, errs)))
                    base = i + 1
                    codes = []
                    errs = []
                    last = now
        # The remaining results travel with the done frame: one write per call. The check can
        # only run untrusted code (a replaced value's __eq__) if the function tampered, and Go
        # bounds that phase with the deadline too.
        progress.set(PHASE_CHECK)
        sys.stdout = sys.stderr = out
        reason = tampered(reach)
        send_done(rid, base, codes, errs, process_time(), fatal, reason, compiled)


if __name__ == "__main__":
    main()
