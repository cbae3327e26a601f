#!/usr/bin/env bash
# Online DPO with a Qwen2.5-0.5B-class policy on one CPU machine: AutoIF's published prompts
# (testbed/autoif/format_prompts.jsonl, AutoIF's format), K=4 responses of up to 128 new tokens, first 3 policy versions trained
# with LoRA (rank 16 on all seven projections), then 2 with full fine-tuning. For each it
# prints the peak RSS and the seconds per version spent sampling, scoring and training, and
# the hot-swap latency. Run by hand (not by `make test`): about half an hour on 2 cores, up to
# ~20 GB of memory for the full fine-tuning part.
#
#   bash scripts/real_model_loop.sh [WORK_DIR]
#
# The policy is, by default, a checkpoint of exactly Qwen2.5-0.5B-Instruct's shape (24 layers,
# hidden 896, 14 heads / 2 KV heads, intermediate 4864, 494M parameters) with random weights
# and the real Qwen2 tokenizer and ChatML template, made by `autoif model init`: nothing is
# downloaded. To run a real model instead, point AUTOIF_MODEL at its Hugging Face directory
# (config.json, model.safetensors, tokenizer files), e.g. Qwen2.5-0.5B-Instruct fetched on a
# machine with network access.
#
# Environment: AUTOIF_MODEL (a checkpoint to use), AUTOIF_QWEN2_TOKENIZER (the tokenizer
# directory for the generated checkpoint; default the repository's copy of Qwen2's),
# PROMPTS (an AutoIF-format JSONL file), LORA_VERSIONS (3), FULL_VERSIONS (2), K (4),
# MAX_NEW_TOKENS (128).
set -euo pipefail
cd "$(dirname "$0")/.."

WORK=${1:-/tmp/autoif-real-model}
TOKENIZER=${AUTOIF_QWEN2_TOKENIZER:-}
# AutoIF-format rows (instruction, query, prompt, eval_func) whose verification functions a
# policy with random weights passes about half the time (length, commas, case, digits), so
# that even the generated checkpoint yields preference pairs. AutoIF's own published sample
# (reward/rewardbench/data/autoif/dpo_query_w_funcs.jsonl: "answer as a list of prime numbers") needs a real
# instruction-following model: with random weights every response fails, and the run stops
# when no prompt yields a pair.
PROMPTS=${PROMPTS:-testbed/autoif/format_prompts.jsonl}
LORA_VERSIONS=${LORA_VERSIONS:-3}
FULL_VERSIONS=${FULL_VERSIONS:-2}
K=${K:-4}
MAX_NEW_TOKENS=${MAX_NEW_TOKENS:-128}
BIN=bin/autoif

mkdir -p "$WORK"
make build >/dev/null

MODEL=${AUTOIF_MODEL:-$WORK/qwen2.5-0.5b-shape}
if [ ! -f "$MODEL/config.json" ]; then
	if [ -n "${AUTOIF_MODEL:-}" ]; then
		echo "AUTOIF_MODEL=$MODEL has no config.json" >&2
		exit 1
	fi
	if [ -z "$TOKENIZER" ]; then
		# The repository's copy of the real Qwen2 tokenizer (tokenizer/testdata/reference/qwen2,
		# Apache-2.0, tokenizer.json gzipped), unpacked once.
		TOKENIZER=$WORK/qwen2-tokenizer
		if [ ! -f "$TOKENIZER/tokenizer.json" ]; then
			mkdir -p "$TOKENIZER"
			cp tokenizer/testdata/reference/qwen2/*.json tokenizer/testdata/reference/qwen2/LICENSE "$TOKENIZER/"
			gzip -dc tokenizer/testdata/reference/qwen2/tokenizer.json.gz >"$TOKENIZER/tokenizer.json"
		fi
	fi
	if [ ! -f "$TOKENIZER/tokenizer.json" ]; then
		echo "no Qwen2 tokenizer at $TOKENIZER: set AUTOIF_QWEN2_TOKENIZER to a directory with tokenizer.json and tokenizer_config.json (any Qwen2/Qwen2.5 model's)" >&2
		exit 1
	fi
	echo "== making a Qwen2.5-0.5B-shaped checkpoint in $MODEL"
	"$BIN" model init --arch qwen2 --layers 24 --hidden 896 --heads 14 --kv-heads 2 --intermediate 4864 \
		--vocab-from "$TOKENIZER" --dtype bf16 --rope-theta 1000000 --max-positions 32768 --out "$MODEL"
fi

# run_loop NAME VERSIONS FLAGS...: one online DPO run of VERSIONS policy versions; prints the
# run's own per-version timing line and the peak RSS measured from outside by GNU time. The
# run's streams and object store are files in its directory (not --memory, which would keep
# every published 2 GB full checkpoint in memory as well).
run_loop() {
	local name=$1 versions=$2
	shift 2
	local dir="$WORK/$name"
	[ "$versions" -gt 0 ] || return 0
	rm -rf "$dir"
	echo "== $name: $versions policy versions, K=$K, $MAX_NEW_TOKENS new tokens"
	local start=$SECONDS
	/usr/bin/time -v -o "$dir.time" "$BIN" --run-id "real-$name" --run-dir "$dir" run \
		--model "$MODEL" --prompts "$PROMPTS" -k "$K" --max-new-tokens "$MAX_NEW_TOKENS" \
		--max-steps "$versions" --pairs-per-version 8 --batch-size 8 --max-in-flight 8 \
		--rollout-prompts-per-step 8 --lr 1e-5 --max-wall 1h "$@" >"$dir.out" 2>"$dir.log" || {
		echo "$name failed; the last lines of $dir.log:" >&2
		tail -20 "$dir.log" >&2
		return 1
	}
	grep -E '^per policy version' "$dir.out" || true
	awk -F: -v name="$name" -v wall=$((SECONDS - start)) -v n="$versions" '/Maximum resident set size/ {
		printf "%s: peak RSS %.2f GB, %d s wall for %d versions (%.0f s per version, model load and setup included)\n", name, $2 / 1048576, wall, n, wall / n
	}' "$dir.time"
	tail -1 "$dir.out"
}

run_loop lora "$LORA_VERSIONS" --lora-rank 16 --lora-alpha 32 --lora-targets q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj
run_loop full "$FULL_VERSIONS" --grad-checkpoint
