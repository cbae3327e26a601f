# autoif — two commands on a fresh machine: `make run` and `make test`.
SHELL := /bin/bash
GO ?= go
BIN := bin/autoif
# Inputs each fuzz target runs during `make test` (a few seconds each here). A count rather
# than a duration: at the end of a timed run Go's fuzz coordinator sometimes reports "context
# deadline exceeded" while its workers stop, failing a run that found nothing.
FUZZTIME ?= 50000x
# langdetect's Detect runs up to 7,000 probability updates per input: a tenth of the inputs.
FUZZTIME_DETECT ?= 5000x
# Go minimizes every input that widens coverage for up to 60 s by default; make test looks for
# crashes, not a minimal corpus, and the IFEval checker's fuzzing spent minutes on it.
FUZZMINIMIZE ?= 2s
VERSION := $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -X main.version=$(VERSION)
# The trainer's matrix products go through OpenBLAS (cgo, Debian libopenblas-dev), several
# times faster than gonum's pure-Go kernels. `make GOTAGS=` builds without it.
GOTAGS ?= openblas

.PHONY: all build test run bench lint deps fuzz race purego fullgoldens docs clean

all: build

# Debian packages the build and tests need: a system Python for the reward sandbox (its
# workers run as an unprivileged user, who cannot read a Python installed under /root), with
# the packages AutoIF's verification functions import (NLTK, numpy with OpenBLAS, langdetect:
# the sandbox must start and score with them installed), and OpenBLAS for the trainer.
# PyTorch is only needed by benchmarks and by the scripts that regenerate test goldens.
DEB_PACKAGES := python3 python3-nltk python3-numpy python3-langdetect libopenblas-dev gcc
DEB_BENCH_PACKAGES := python3-torch
# Watching a run: the dashboard's browser test drives headless Chromium; promtool (in
# prometheus) lints the /metrics scrape. Both tests skip, saying so, where these are missing.
DEB_WATCH_PACKAGES := chromium prometheus

deps:
	@bash scripts/ensure_deps.sh $(DEB_PACKAGES)

build: deps
	$(GO) build -tags "$(GOTAGS)" -ldflags "$(LDFLAGS)" -o $(BIN) ./cmd/autoif

test: deps lint
	@bash scripts/ensure_deps.sh $(DEB_WATCH_PACKAGES) || echo "the dashboard's browser and promtool checks will skip"
	$(GO) test -tags "$(GOTAGS)" -count=1 -timeout 12m ./...
	GO="$(GO)" GOTAGS="$(GOTAGS)" bash scripts/test_as_nobody.sh
	$(MAKE) fuzz
	$(MAKE) race
	$(MAKE) purego

# The packages whose goroutines share state, under the race detector: the bus, the
# orchestrator, the rollout workers, the reward pool and service, the dashboard, and the trainer's stream
# path (its other tests are single-threaded kernels, slow under -race).
RACE_TRAINER_TESTS ?= Stream|Stale
race:
	$(GO) test -race -tags "$(GOTAGS)" -count=1 -timeout 12m ./natsbus ./orchestrator ./rollout ./reward ./dashboard
	$(GO) test -race -count=1 -timeout 5m ./endpoint ./synth
	$(GO) test -race -tags "$(GOTAGS)" -count=1 -timeout 10m -run '$(RACE_TRAINER_TESTS)' ./trainer

# The trainer in the pure-Go build (`make GOTAGS=`: gonum's kernels, no OpenBLAS or cgo).
purego:
	$(GO) test -count=1 -timeout 10m ./trainer

# Punkt and langdetect against NLTK 3.8 and langdetect 1.0.9 on every IFEval response, not the
# sample bundled in testdata/: scripts/nlp_goldens.py --full writes the goldens (a few minutes)
# from the reference data in SHARED_DATA (its nltk/punkt pickle and ifeval/ responses), and the
# tests behind the fullgoldens build tag compare. Not part of `make test`.
SHARED_DATA ?= ../shared/data
fullgoldens:
	@test -f "$(SHARED_DATA)/nltk/punkt/english.pickle" || { echo "fullgoldens: $(SHARED_DATA)/nltk/punkt/english.pickle not found: set SHARED_DATA to the reference data" >&2; exit 1; }
	@bash scripts/ensure_deps.sh python3 python3-nltk python3-langdetect
	d=$$(mktemp -d /tmp/autoif-goldens-XXXXXX) && trap 'rm -rf "$$d"' EXIT && \
	(cd "$$d" && /usr/bin/python3 "$(CURDIR)/scripts/nlp_goldens.py" --full --data "$(abspath $(SHARED_DATA))" \
		--punkt-out "$$d/punkt.jsonl.gz" --langdetect-out "$$d/langdetect.jsonl.gz") && \
	PUNKT_FULL_GOLDENS="$$d/punkt.jsonl.gz" LANGDETECT_FULL_GOLDENS="$$d/langdetect.jsonl.gz" \
		$(GO) test -tags "$(GOTAGS) fullgoldens" -count=1 -v -run '^TestFullGoldens$$' ./punkt ./langdetect

# Each fuzz target for FUZZTIME inputs: the payload decoder, the safetensors header parser,
# the tokenizer round trip, Punkt's sentence and word tokenizers, langdetect, and the IFEval
# checker on any response and its Python-JSON reader.
fuzz:
	$(GO) test -run '^$$' -fuzz '^FuzzDecodePairs$$' -fuzztime $(FUZZTIME) -fuzzminimizetime $(FUZZMINIMIZE) ./proto
	$(GO) test -run '^$$' -fuzz '^FuzzSafetensorsHeader$$' -fuzztime $(FUZZTIME) -fuzzminimizetime $(FUZZMINIMIZE) ./model
	$(GO) test -run '^$$' -fuzz '^FuzzRoundTrip$$' -fuzztime $(FUZZTIME) -fuzzminimizetime $(FUZZMINIMIZE) ./tokenizer
	$(GO) test -run '^$$' -fuzz '^FuzzParseFunctionCompletion$$' -fuzztime $(FUZZTIME) -fuzzminimizetime $(FUZZMINIMIZE) ./synth
	$(GO) test -run '^$$' -fuzz '^FuzzSentences$$' -fuzztime $(FUZZTIME) -fuzzminimizetime $(FUZZMINIMIZE) ./punkt
	$(GO) test -run '^$$' -fuzz '^FuzzDetect$$' -fuzztime $(FUZZTIME_DETECT) -fuzzminimizetime $(FUZZMINIMIZE) ./langdetect
	$(GO) test -run '^$$' -fuzz '^FuzzEvaluateResponse$$' -fuzztime $(FUZZTIME) -fuzzminimizetime $(FUZZMINIMIZE) ./ifeval
	$(GO) test -run '^$$' -fuzz '^FuzzPythonJSONLoads$$' -fuzztime $(FUZZTIME) -fuzzminimizetime $(FUZZMINIMIZE) ./ifeval

# The main job on the embedded defaults: in-process NATS server, bundled tinyIF testbed. Warm
# start by SFT (cached in runs/), online DPO, offline DPO for comparison, held-out evaluation,
# runs/tinyif/summary.json and curves.png.
run: build
	./$(BIN) experiment tinyif

bench: build
	@bash scripts/ensure_deps.sh $(DEB_BENCH_PACKAGES)
	./$(BIN) bench transport
	./$(BIN) bench reward
	./$(BIN) bench generate
	./$(BIN) bench train
	./$(BIN) bench loop

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet -tags "$(GOTAGS)" ./...

# Regenerates docs/CLI.md from the command tree.
docs: build
	./$(BIN) docs > docs/CLI.md

clean:
	rm -rf bin
