package main

import (
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"

	"github.com/urfave/cli/v2"
)

// bound is the range of values a numeric flag accepts: [lo, hi], either end open, plus a few
// values outside it that mean something (-1 for "keep all"). Every numeric flag of every
// command has one (TestEveryNumericFlagHasABound), checked before the command does anything
// (checkBounds), so a bad value is one line naming the flag and its range, never a crash or a
// half-made run directory. Bounds that depend on the model (context length, memory) are
// checked by the commands once they have read the model's config.
type bound struct {
	lo, hi         float64
	loOpen, hiOpen bool
	also           []float64
}

// Upper limits shared by many flags: far above any use on the machines this runs on, low
// enough that the memory or time they imply is refused before it is asked for.
const (
	maxCount   = 1 << 20 // prompts, pairs, responses, batches, workers' queues
	maxTokens  = 1 << 20 // tokens of one sequence
	maxSteps   = 1 << 30 // optimiser steps, versions
	maxBudget  = 1 << 53 // run budgets: large is harmless, only negative is wrong
	maxWorkers = 1024    // processes or goroutines
	day        = 24 * 60 * 60
)

func atLeast(lo, hi float64) bound    { return bound{lo: lo, hi: hi} }
func above(lo, hi float64) bound      { return bound{lo: lo, hi: hi, loOpen: true} }
func orMinusOne(lo, hi float64) bound { return bound{lo: lo, hi: hi, also: []float64{-1}} }

// flagBounds holds each numeric flag's bound by name; commandFlagBounds overrides it for one
// command ("bench transport --batch-size") where the same name means something else.
var flagBounds = map[string]bound{
	// Sampling and the loop's shape.
	"k":                        atLeast(2, 1024), // a pair needs two responses
	"n":                        atLeast(1, 4096),
	"temperature":              above(0, 100), // rollouts sample; greedy decoding makes k equal responses
	"eval-temperature":         atLeast(0, 100),
	"top-p":                    above(0, 1),
	"top-k":                    atLeast(0, maxTokens),
	"max-new-tokens":           atLeast(1, maxTokens),
	"new-tokens":               atLeast(2, maxTokens),
	"prompt-len":               atLeast(1, maxTokens),
	"response-len":             atLeast(1, maxTokens),
	"tokens":                   atLeast(1, maxTokens),
	"text-bytes":               atLeast(0, 1<<24),
	"prompts-per-step":         atLeast(1, 1<<16),
	"rollout-prompts-per-step": atLeast(1, 1<<16),
	"max-in-flight":            atLeast(1, maxCount),
	"pairs-per-version":        atLeast(1, maxCount),
	"pairs-per-step":           atLeast(1, maxCount),
	"pairs-ahead":              orMinusOne(0, maxCount), // -1: derived; 0: no bound
	"samples-per-step":         atLeast(0, maxCount),
	"max-lag":                  atLeast(0, maxSteps),
	"max-policy-lag":           orMinusOne(0, maxSteps), // -1 keeps all
	"max-steps":                atLeast(0, maxBudget),   // 0: no limit
	"max-pairs":                atLeast(0, maxBudget),
	"max-wall":                 atLeast(0, 3650*day),
	"warn-idle-prompts":        atLeast(0, maxBudget), // 0: never
	"max-idle-prompts":         atLeast(0, maxBudget), // 0: never
	"epochs":                   atLeast(0, maxCount),  // run: 0 cycles; train: see commandFlagBounds
	"chosen-min":               atLeast(0, 1),
	"max-chosen":               atLeast(1, 1024),
	"max-rejected":             atLeast(1, 1024),
	"margin":                   atLeast(0, 1),
	"min-func-accuracy":        atLeast(0, 1),
	"eval-prompts":             atLeast(0, maxCount), // 0: all
	"seed":                     atLeast(0, math.MaxUint64),

	// LoRA (model.LoRAConfig.Validate checks the combination once the flags are read).
	"lora-rank":    atLeast(0, 4096), // 0: full fine-tuning
	"lora-alpha":   above(0, 1e6),
	"lora-dropout": bound{lo: 0, hi: 1, hiOpen: true},

	// Components started in one process.
	"rollout-workers": atLeast(0, maxWorkers), // run: 0 with --nats
	"reward-workers":  atLeast(0, maxWorkers), // 0: number of CPUs
	"workers":         atLeast(0, maxWorkers),
	"threads":         atLeast(0, maxWorkers),
	"rollout-threads": atLeast(0, maxWorkers),
	"trainer-threads": atLeast(0, maxWorkers),
	"train-chunk":     atLeast(0, maxSteps),

	// Training.
	"lr":                above(0, 10),
	"sft-lr":            above(0, 10),
	"beta":              above(0, 100),
	"label-smoothing":   bound{lo: 0, hi: 0.5, hiOpen: true},
	"nll-alpha":         atLeast(0, 100),
	"weight-decay":      atLeast(0, 10),
	"momentum":          bound{lo: 0, hi: 1, hiOpen: true},
	"max-grad-norm":     atLeast(0, 1e6), // 0: no clipping
	"warmup-steps":      atLeast(0, maxSteps),
	"batch-size":        atLeast(1, 1<<16),
	"sft-batch":         atLeast(1, 1<<16),
	"grad-accum":        atLeast(1, maxCount),
	"steps":             atLeast(1, maxSteps),
	"sft-steps":         atLeast(1, maxSteps),
	"max-len":           atLeast(0, maxTokens), // 0: the model's context
	"save-every":        atLeast(0, maxSteps),  // 0: only at the end
	"keep-last":         orMinusOne(1, maxCount),
	"publish-every":     atLeast(1, maxSteps),
	"ref-refresh-every": atLeast(0, maxSteps), // 0: frozen reference
	"torch-micro-batch": atLeast(0, 1<<16),
	"rounds":            atLeast(1, 1000),
	"trials":            atLeast(1, 100),
	"comply":            atLeast(0, 1),

	// Model shape.
	"layers":        atLeast(1, 1024),
	"hidden":        atLeast(1, 1<<16),
	"heads":         atLeast(1, 1024),
	"kv-heads":      atLeast(0, 1024), // 0: --heads
	"intermediate":  atLeast(0, 1<<18),
	"head-dim":      atLeast(0, 1<<12),
	"vocab":         atLeast(0, 1<<22),
	"rope-theta":    above(0, 1e12),
	"max-positions": atLeast(1, 1<<22),

	// Reward sandbox and service.
	"deadline":        above(0, 3600),
	"memory-mb":       atLeast(64, 1<<22),
	"max-output":      atLeast(1, 1<<30),
	"min-functions":   atLeast(1, maxCount),
	"min-cases":       atLeast(1, maxCount),
	"min-accuracy":    atLeast(0, 1),
	"concurrent":      atLeast(0, maxWorkers), // 0: --workers
	"max-queued":      atLeast(0, maxCount),
	"max-evaluations": atLeast(1, 1<<30),
	"heartbeat":       above(0, 3600),
	"shutdown-grace":  atLeast(0, day),
	"stats-interval":  atLeast(0, day), // 0: never
	"wait":            above(0, 3600),
	"watch":           atLeast(0, day), // 0: once
	"ack-wait":        above(0, 7*day),
	"flush-every":     above(0, day),

	// Bus.
	"port":        atLeast(1, 65535),
	"http-port":   atLeast(0, 65535), // 0 disables
	"max-payload": atLeast(1024, 64<<20),

	// NATS cluster (issue 17).
	"cluster-port": atLeast(0, 65535), // 0: not a cluster member
	"replicas":     atLeast(0, 5),     // JetStream's most; 0: an existing run's count, else 1

	// Benchmarks and charts.
	"pairs":          atLeast(1, 1<<30),
	"baseline-pairs": atLeast(0, 1<<30), // 0: --pairs
	"window":         atLeast(1, 1<<16),
	"responses":      atLeast(0, maxCount), // 0: all
	"process-sample": atLeast(1, maxCount),
	"width":          atLeast(16, 1000),
	"height":         atLeast(4, 1000),

	// synth: requests to a model server and the stages' thresholds.
	"max-tokens":      atLeast(1, maxTokens),
	"concurrency":     atLeast(1, maxWorkers),
	"timeout":         above(0, day),
	"retries":         atLeast(0, 100),
	"functions":       orMinusOne(1, maxCount), // -1: all
	"checks":          orMinusOne(1, maxCount), // -1: all
	"per-instruction": atLeast(1, maxCount),
	"min-chars":       atLeast(0, 1<<20),
	"max-chars":       atLeast(1, 1<<20),
	"min-pass-rate":   bound{lo: 0, hi: 1, hiOpen: true},
	"min-score":       atLeast(0, 10),
	"pairs-per-side":  atLeast(1, maxCount),
	"min-positive":    above(0, 1),
}

var commandFlagBounds = map[string]bound{
	"serve --max-batch":                   atLeast(1, 4096),
	"serve --max-queue":                   atLeast(1, maxCount),
	"serve --max-model-len":               atLeast(0, maxTokens), // 0: the model's, at most 4096
	"bench serve --clients":               atLeast(1, maxWorkers),
	"bench serve --requests":              atLeast(0, maxCount), // 0: 2 × clients
	"bench serve --max-tokens":            atLeast(1, maxTokens),
	"generate --temperature":              atLeast(0, 100), // 0 is greedy
	"generate --max-new-tokens":           atLeast(1, math.MaxInt32),
	"eval ifeval --temperature":           atLeast(0, 100), // 0 is greedy
	"eval ifeval --batch":                 atLeast(1, 1<<16),
	"eval ifeval --concurrency":           atLeast(1, maxWorkers),
	"train dpo --steps":                   atLeast(0, maxSteps), // 0: --epochs over the data
	"train sft --steps":                   atLeast(0, maxSteps),
	"train stream --steps":                atLeast(0, maxSteps),
	"train dpo --epochs":                  atLeast(1, maxCount),
	"train sft --epochs":                  atLeast(1, maxCount),
	"train stream --epochs":               atLeast(1, maxCount),
	"bench transport --batch-size":        atLeast(1, maxCount),
	"bench loop --max-in-flight":          atLeast(0, maxCount), // 0: one rollout step's
	"bench loop --rollout-workers":        atLeast(1, maxWorkers),
	"bench loop --reward-workers":         atLeast(1, maxWorkers),
	"bench generate --threads":            atLeast(1, maxWorkers),
	"bench train --threads":               atLeast(1, maxWorkers),
	"bench train --pairs":                 atLeast(1, 1<<16),
	"experiment tinyif --rollout-workers": atLeast(1, maxWorkers),
	"experiment tinyif --reward-workers":  atLeast(1, maxWorkers),
	"experiment trainer --max-lag":        orMinusOne(0, maxSteps), // -1 keeps all
	"synth instructions --temperature":    atLeast(0, 100),         // 0 is greedy
	"synth functions --temperature":       atLeast(0, 100),
	"synth backtranslate --temperature":   atLeast(0, 100),
	"synth responses --temperature":       atLeast(0, 100),
	"synth judge --temperature":           atLeast(0, 100),
	"curves --smooth":                     {lo: 0, hi: 1, hiOpen: true}, // an EMA weight; 0: raw
}

// boundOf returns the bound of flag name of the command at path ("bench transport").
func boundOf(path, name string) (bound, bool) {
	if b, ok := commandFlagBounds[path+" --"+name]; ok {
		return b, true
	}
	b, ok := flagBounds[name]
	return b, ok
}

func (b bound) admits(v float64) bool {
	for _, a := range b.also {
		if v == a {
			return true
		}
	}
	if v < b.lo || v > b.hi || (b.loOpen && v == b.lo) || (b.hiOpen && v == b.hi) {
		return false
	}
	return true
}

// describe says the range in words, each end written by format.
func (b bound) describe(format func(float64) string) string {
	var s string
	switch {
	case b.loOpen && b.hiOpen:
		s = fmt.Sprintf("more than %s and less than %s", format(b.lo), format(b.hi))
	case b.loOpen:
		s = fmt.Sprintf("more than %s and at most %s", format(b.lo), format(b.hi))
	case b.hiOpen:
		s = fmt.Sprintf("%s or more and less than %s", format(b.lo), format(b.hi))
	default:
		s = fmt.Sprintf("%s to %s", format(b.lo), format(b.hi))
	}
	for _, a := range b.also {
		s = format(a) + " or " + s
	}
	return s
}

// checkBounds checks every numeric flag of the running command, however it was set (command
// line, AUTOIF_* variable, config file or default).
func checkBounds(c *cli.Context, path string) error {
	for _, f := range c.Command.Flags {
		name := f.Names()[0]
		var v float64
		var shown string
		format := func(x float64) string { return strconv.FormatFloat(x, 'f', -1, 64) }
		switch f.(type) {
		case *cli.IntFlag:
			n := c.Int(name)
			v, shown = float64(n), strconv.Itoa(n)
		case *cli.Int64Flag:
			n := c.Int64(name)
			v, shown = float64(n), strconv.FormatInt(n, 10)
		case *cli.UintFlag:
			n := c.Uint(name)
			v, shown = float64(n), strconv.FormatUint(uint64(n), 10)
		case *cli.Uint64Flag:
			n := c.Uint64(name)
			v, shown = float64(n), strconv.FormatUint(n, 10)
		case *cli.Float64Flag:
			v = c.Float64(name)
			format = func(x float64) string { return strconv.FormatFloat(x, 'g', -1, 64) }
			shown = format(v)
		case *cli.DurationFlag:
			d := c.Duration(name)
			v, shown = d.Seconds(), d.String()
			format = func(x float64) string { return time.Duration(x * float64(time.Second)).String() }
		default:
			continue
		}
		b, ok := boundOf(path, name)
		if !ok {
			// TestEveryNumericFlagHasABound keeps this unreachable.
			return fmt.Errorf("--%s: no range is defined for this flag", name)
		}
		if math.IsNaN(v) || !b.admits(v) {
			return fmt.Errorf("--%s %s: want %s", name, shown, b.describe(format))
		}
	}
	return nil
}

// commandPath is the command's path below the app, as the bounds tables spell it.
func commandPath(path []string) string { return strings.Join(path, " ") }
