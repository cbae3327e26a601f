# Baseline for `autoif bench reward`: the AutoIF reference scripts' way of running verification
# functions, unsandboxed, in this one process: exec each function, call evaluate on every
# response under a SIGALRM timeout. Reads {"funcs": [...], "responses": [...], "timeout": s}
# on stdin; writes {"elapsed_s": ..., "verdicts": ["pfe...", ...]} (one string per function:
# p pass, f fail, e error) on stdout. The function source's top level is exec'd in one fresh
# globals dict, like the sandbox does, so both see the same verdicts.
import json
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
    start = time.perf_counter()
    for _ in range(rounds):
        verdicts = run_all(req, timeout, out, devnull)
    elapsed = time.perf_counter() - start
    json.dump({"elapsed_s": elapsed, "verdicts": verdicts}, out)


def run_all(req, timeout, out, devnull):
    verdicts = []
    for src in req["funcs"]:
        row = []
        g = {"__name__": "__verifier__"}
        sys.stdout = devnull
        try:
            exec(src, g)
            fn = g["evaluate"]
        except BaseException:
            fn = None
        for resp in req["responses"]:
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
        verdicts.append("".join(row))
    return verdicts


main()
