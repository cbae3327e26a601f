#!/usr/bin/env bash
# A replicated run on a three-member NATS cluster on loopback, every component its own
# process: three `autoif nats serve` members, the orchestrator (`autoif run --replicas 3`),
# a reward service, two rollout workers and the online trainer, on a random tiny policy. Once
# the trainer has published version 3, the member leading the pair stream is killed with
# SIGKILL and started again 5 s later. The run goes on to its step budget, and the trainer's
# pair ledger is checked against the pair stream: no pair lost, none trained twice.
#
#   scripts/cluster_demo.sh [STEPS]
#
# AUTOIF names the binary (default bin/autoif); KEEP=1 keeps the scratch directory.
set -euo pipefail
steps=${1:-8}
bin=${AUTOIF:-bin/autoif}
[[ -x $bin ]] || { echo "no autoif binary at $bin (make build, or set AUTOIF)" >&2; exit 1; }
scratch=$(mktemp -d /tmp/autoif-cluster-demo-XXXX)
base=$(( 20000 + RANDOM % 20000 ))
run=demo
pids=()
cleanup() {
  kill "${pids[@]}" 2>/dev/null || true
  wait 2>/dev/null || true
  if [[ ${KEEP:-0} == 1 ]]; then echo "logs and stores kept in $scratch"; else rm -rf "$scratch"; fi
}
trap cleanup EXIT

client_port() { echo $(( base + $1 )); }
route_port() { echo $(( base + 10 + $1 )); }
http_port() { echo $(( base + 20 + $1 )); }
routes=nats://127.0.0.1:$(route_port 0),nats://127.0.0.1:$(route_port 1),nats://127.0.0.1:$(route_port 2)
url=nats://127.0.0.1:$(client_port 0),nats://127.0.0.1:$(client_port 1),nats://127.0.0.1:$(client_port 2)
member_pid=()
start_member() {
  "$bin" --log-level warn nats serve --port "$(client_port "$1")" --http-port "$(http_port "$1")" \
    --cluster-name autoif-demo --cluster-port "$(route_port "$1")" --routes "$routes" \
    --server-name "m$1" --store-dir "$scratch/m$1" >>"$scratch/m$1.log" 2>&1 &
  member_pid[$1]=$!
  pids+=($!)
}
wait_for() { # wait_for SECONDS DESCRIPTION COMMAND...
  local t=$1 what=$2; shift 2
  for _ in $(seq $(( t * 10 ))); do "$@" && return 0; sleep 0.1; done
  echo "gave up after ${t}s waiting for $what" >&2; exit 1
}

echo "cluster: three members, client ports $(client_port 0)-$(client_port 2)"
for i in 0 1 2; do start_member "$i"; done
"$bin" --log-level warn model init --layers 1 --hidden 32 --heads 2 --intermediate 64 --max-positions 512 \
  --seed 3 --out "$scratch/policy" >/dev/null

cluster_ready() { # the meta leader sees both other members as current
  python3 - "$(http_port 0)" "$(http_port 1)" "$(http_port 2)" <<'EOF'
import json, sys, urllib.request
for port in sys.argv[1:]:
    try:
        meta = json.load(urllib.request.urlopen(f"http://127.0.0.1:{port}/jsz", timeout=1)).get("meta_cluster", {})
    except OSError:
        continue
    peers = meta.get("replicas") or []
    if meta.get("leader") and len(peers) == 2 and all(p.get("current") for p in peers):
        sys.exit(0)
sys.exit(1)
EOF
}
wait_for 60 "the cluster's meta leader" cluster_ready

# The orchestrator first: it creates the run's streams with three replicas (fewer live
# members would be refused with a line that says so); the others join what it made.
"$bin" --log-level info --nats "$url" --run "$run" --run-dir "$scratch/run" run --replicas 3 --mode async \
  --k 4 --max-in-flight 8 --pairs-per-version 4 --max-lag 2 --max-steps "$steps" >"$scratch/orchestrator.log" 2>&1 &
orch_pid=$!
pids+=("$orch_pid")
wait_for 60 "the orchestrator" grep -q "orchestrating" "$scratch/orchestrator.log"
echo "orchestrator: run $run with three replicas"

"$bin" --log-level info --nats "$url" reward serve --workers 1 >"$scratch/reward.log" 2>&1 &
pids+=($!)
"$bin" --log-level info --nats "$url" --run "$run" train stream --model "$scratch/policy" --out "$scratch/trainer" \
  --steps "$steps" --batch-size 4 --lr 1e-3 --max-policy-lag 2 >"$scratch/trainer.log" 2>&1 &
trainer_pid=$!
pids+=("$trainer_pid")
for w in 1 2; do
  "$bin" --log-level info --nats "$url" --run "$run" --run-dir "$scratch/w$w" rollout --model "$scratch/policy" \
    --reward service --k 4 --max-new-tokens 8 --threads 1 --seed "$w" --name "w$w" >"$scratch/w$w.log" 2>&1 &
  pids+=($!)
done
echo "components: reward service, trainer, rollout workers w1 and w2"

wait_for 300 "policy version 3" grep -q 'published policy.*version=3 ' "$scratch/trainer.log"
# Which member leads the pair stream: its monitoring endpoint says.
leader=$(python3 - "$(http_port 0)" "$(http_port 1)" "$(http_port 2)" <<'EOF'
import json, sys, urllib.request
for port in sys.argv[1:]:
    try:
        jsz = json.load(urllib.request.urlopen(f"http://127.0.0.1:{port}/jsz?streams=true", timeout=2))
    except OSError:
        continue
    for acc in jsz.get("account_details", []):
        for s in acc.get("stream_detail", []):
            if s["name"].endswith("_PAIRS") and s.get("cluster", {}).get("leader"):
                print(s["cluster"]["leader"].lstrip("m")); sys.exit(0)
print(0)
EOF
)
echo "version 3 published; killing m$leader, the pair stream's leader (SIGKILL)"
kill -9 "${member_pid[$leader]}"
sleep 5
echo "starting m$leader again"
start_member "$leader"

wait_for 600 "the orchestrator to stop" bash -c "! kill -0 $orch_pid 2>/dev/null"
wait "$orch_pid" || { echo "orchestrator failed:" >&2; tail -5 "$scratch/orchestrator.log" >&2; exit 1; }
wait_for 120 "the trainer to stop" bash -c "! kill -0 $trainer_pid 2>/dev/null"
tail -1 "$scratch/orchestrator.log"
echo "reconnects logged: $(cat "$scratch"/*.log | grep -c 'nats reconnected' || true)"
"$bin" --log-level warn --nats "$url" --run "$run" train check-ledger --out "$scratch/trainer" | head -1
