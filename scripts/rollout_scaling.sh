#!/usr/bin/env bash
# Sampling throughput of one run against its number of rollout worker processes: a NATS
# server, an orchestrator (async, no trainer: the policy stays the starting one) and one
# reward service, then N `autoif rollout` processes of one sampling thread each, until the
# run has MAX_PAIRS pairs. Prints the wall time per worker count; on a machine with as many
# free cores as workers, two workers should take about half the time of one.
#
#   scripts/rollout_scaling.sh MODEL_DIR [MAX_PAIRS] [WORKER COUNTS...]
set -euo pipefail
model=${1:?usage: $0 MODEL_DIR [MAX_PAIRS] [WORKER COUNTS...]}
pairs=${2:-300}
shift $(( $# >= 2 ? 2 : 1 ))
counts=("$@")
[[ ${#counts[@]} -eq 0 ]] && counts=(1 2)
bin=${AUTOIF:-bin/autoif}
scratch=$(mktemp -d)
port=$(( 20000 + RANDOM % 20000 ))
url=nats://127.0.0.1:$port
pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$scratch"; }
trap cleanup EXIT

GOMAXPROCS=1 "$bin" --log-level warn --run-dir "$scratch/nats" nats serve --port "$port" >"$scratch/nats.log" 2>&1 &
pids+=($!)
sleep 1
GOMAXPROCS=1 "$bin" --log-level warn --nats "$url" reward serve --workers 1 >"$scratch/reward.log" 2>&1 &
pids+=($!)
for n in "${counts[@]}"; do
  run="scale$n-$RANDOM"
  workers=()
  for i in $(seq "$n"); do
    GOMAXPROCS=1 "$bin" --log-level warn --nats "$url" --run "$run" --run-dir "$scratch/$run-w$i" rollout --model "$model" \
      --threads 1 --reward service --max-new-tokens 64 --seed "$i" --name "w$i" >"$scratch/$run-w$i.log" 2>&1 &
    workers+=($!)
    pids+=($!)
  done
  start=$(date +%s.%N)
  "$bin" --log-level warn --nats "$url" --run "$run" --run-dir "$scratch/$run" run --mode async --pairs-ahead 0 \
    --max-in-flight $(( 8 * n )) --max-pairs "$pairs" >"$scratch/$run.log" 2>&1
  end=$(date +%s.%N)
  kill "${workers[@]}" 2>/dev/null || true
  wait "${workers[@]}" 2>/dev/null || true
  echo "workers $n: $pairs pairs in $(echo "$end - $start" | bc) s"
done
