# Baselines for `autoif bench reward`. Reads {"funcs": [...], "responses": [...], "timeout": s,
# "rounds": n, "fork": bool, "preload": [...]} on stdin; writes {"elapsed_s": ...,
# "verdicts": ["pfe...", ...]} (one string per function: p pass, f fail, e error) on stdout.
#
# Without "fork": the AutoIF reference scripts' way of running verification functions,
# unsandboxed, in this one process: exec each function, call evaluate on every response under
# a SIGALRM timeout. The function source's top level is exec'd in one fresh globals dict, like
# the sandbox does, so both see the same verdicts.
#
# With "fork": the floor of any design that gives each function a process of its own. This
# process imports what the sandbox's zygote imports ("preload"), then runs each function the
# same way in a fresh fork of itself, which sends its verdicts back through a pipe: no
# sandbox, no protocol, no Go, no process kept ready ahead of its call.
import gc
import json
import os
import signal
import sys
import time


class Timeout(Exception):
    pass


def on_alarm(signum, frame):
    raise Timeout()


def main():
    req = json.load(sys.stdin)
    timeout = int(req.get("timeout", 5))
    signal.signal(signal.SIGALRM, on_alarm)
    out = sys.stdout
    devnull = open("/dev/null", "w")
    rounds = int(req.get("rounds", 1))
    run = run_row
    if req.get("fork"):
        for name in req.get("preload", ()):
            try:
                __import__(name)
            except Exception:
                pass
        gc.collect()
        gc.freeze()  # as the zygote does: children do not copy pages the collector would touch
        run = fork_row
    start = time.perf_counter()
    for _ in range(rounds):
        verdicts = [run(src, req["responses"], timeout, out, devnull) for src in req["funcs"]]
    elapsed = time.perf_counter() - start
    json.dump({"elapsed_s": elapsed, "verdicts": verdicts}, out)


def run_row(src, responses, timeout, out, devnull):
    row = []
    g = {"__name__": "__verifier__"}
    sys.stdout = devnull
    try:
        exec(src, g)
        fn = g["evaluate"]
    except BaseException:
        fn = None
    for resp in responses:
        if fn is None:
            row.append("e")
            continue
        try:
            signal.alarm(timeout)
            r = fn(resp)
        except BaseException:
            r = None
        finally:
            signal.alarm(0)
        if r is True or (type(r) is int and r == 1):
            row.append("p")
        elif r is False or (type(r) is int and r == 0):
            row.append("f")
        else:
            row.append("e")
    sys.stdout = out
    return "".join(row)


def fork_row(src, responses, timeout, out, devnull):
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(r)
            row = run_row(src, responses, timeout, out, devnull).encode()
            while row:
                row = row[os.write(w, row):]
        finally:
            os._exit(0)
    os.close(w)
    chunks = []
    while True:
        b = os.read(r, 1 << 16)
        if not b:
            break
        chunks.append(b)
    os.close(r)
    os.waitpid(pid, 0)
    return b"".join(chunks).decode()


main()
