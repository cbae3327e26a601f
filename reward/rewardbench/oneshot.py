# One evaluation in a fresh interpreter: the process-per-evaluation baseline.
import json, sys
req = json.load(sys.stdin)
g = {"__name__": "__verifier__"}
try:
    exec(req["func"], g)
    r = g["evaluate"](req["response"])
except BaseException:
    r = None
sys.stdout.write("p" if r is True or r == 1 else "f" if r is False or r == 0 else "e")
