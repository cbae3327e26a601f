package trainer

import (
	"context"
	"fmt"
	"io"
	"os"
	"runtime/debug"
	"runtime/pprof"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/autoif/autoif/model"
	"github.com/autoif/autoif/torchref"
)

// TorchBenchOptions configure BenchAgainstTorch (`autoif bench train`).
type TorchBenchOptions struct {
	Dir   string // the checkpoint both sides load
	Bench BenchOptions
	// Threads is torch's thread count (the caller sets GOMAXPROCS for the Go side).
	Threads int
	Rounds  int
	// TorchMicroBatch is pairs per torch forward/backward, gradients accumulated (0: all of a
	// step's pairs at once).
	TorchMicroBatch int
	// Python is an interpreter with torch for the baseline (torchref.FindPython); "" skips it.
	Python string
	// CPUProfile, when set, receives a Go CPU profile of the first Go round (its warm-up step
	// included).
	CPUProfile io.Writer
	// Progress receives a line per round and side. Default io.Discard.
	Progress io.Writer
}

// TorchBench is BenchAgainstTorch's figures: each side's best round.
type TorchBench struct {
	Go BenchResult // the round with the fastest step
	// GoStepCPUSeconds is the least CPU time of a step over all rounds.
	GoStepCPUSeconds float64
	// GoPeakRSSMB is this process's peak resident set (torch runs as a child and is not in it).
	GoPeakRSSMB float64
	// PeakGFLOPs is the BLAS's n=1024 matmul rate (MatmulPeakGFLOPs), the attainable peak.
	PeakGFLOPs float64
	// The torch side's best step time and step CPU time, and the largest peak resident set of
	// its runs; all 0 when Python is "".
	TorchStepSeconds, TorchStepCPUSeconds, TorchPeakRSSMB float64
}

// BenchAgainstTorch times DPO steps on the checkpoint in Go and, when o.Python is set, the
// same steps in PyTorch (scripts/torch_train_bench.py). Go and torch alternate round by round
// and each keeps its best, so both meet the same background load on a shared machine. They
// never overlap: a Go round loads its own trainer and hands its memory back to the OS before
// torch starts, so each side's peak RSS is its own and the two never add up.
func BenchAgainstTorch(ctx context.Context, o TorchBenchOptions) (*TorchBench, error) {
	if o.Progress == nil {
		o.Progress = io.Discard
	}
	if o.Rounds < 1 || o.Threads < 1 || o.TorchMicroBatch < 0 {
		return nil, fmt.Errorf("bench train: rounds %d and threads %d must be positive, torch micro-batch %d not negative", o.Rounds, o.Threads, o.TorchMicroBatch)
	}
	bo := o.Bench
	bo.defaults()
	r := &TorchBench{}
	prof := o.CPUProfile
	for round := 1; round <= o.Rounds; round++ {
		g, rss, err := benchGoRound(o.Dir, bo, prof)
		prof = nil // one profile: the first round
		if err != nil {
			return nil, err
		}
		if r.Go.StepSeconds == 0 || g.StepSeconds < r.Go.StepSeconds {
			r.Go = g
		}
		if r.GoStepCPUSeconds == 0 || g.StepCPUSeconds < r.GoStepCPUSeconds {
			r.GoStepCPUSeconds = g.StepCPUSeconds
		}
		fmt.Fprintf(o.Progress, "round %d go:    %.3fs/step (%.3f CPU-s; reference forward %.3fs), %.3f pairs/s, %.1f GFLOP/s; RSS after the round %.0f MB\n",
			round, g.StepSeconds, g.StepCPUSeconds, g.RefSeconds, g.PairsPerS, g.GFLOPs, rss)
		if o.Python == "" {
			continue
		}
		ts, tc, rss, err := torchTrainRound(ctx, o, bo)
		if err != nil {
			return nil, fmt.Errorf("torch baseline: %w", err)
		}
		if r.TorchStepSeconds == 0 || ts < r.TorchStepSeconds {
			r.TorchStepSeconds = ts
		}
		if r.TorchStepCPUSeconds == 0 || tc < r.TorchStepCPUSeconds {
			r.TorchStepCPUSeconds = tc
		}
		r.TorchPeakRSSMB = max(r.TorchPeakRSSMB, rss)
		fmt.Fprintf(o.Progress, "round %d torch: %.3fs/step (%.3f CPU-s), %.3f pairs/s, peak RSS %.0f MB\n", round, ts, tc, float64(bo.PairsPerStep)/ts, rss)
	}
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru) // this process only: torch is a child
	r.GoPeakRSSMB = float64(ru.Maxrss) / 1024       // KiB on Linux
	r.PeakGFLOPs = MatmulPeakGFLOPs(1024, time.Second)
	return r, nil
}

// benchGoRound loads the checkpoint, times one bench Run (profiled into prof when set), and
// returns the trainer's memory to the OS; rssMB is the process's resident set after that.
func benchGoRound(dir string, bo BenchOptions, prof io.Writer) (r BenchResult, rssMB float64, err error) {
	r, err = func() (BenchResult, error) {
		load := model.Load
		if bo.LoRA != nil {
			// The frozen base as stored: a BF16 checkpoint stays BF16.
			load = func(dir string) (*model.Weights, error) { return model.LoadWeights(dir, model.LoadOptions{}) }
		}
		w, err := load(dir)
		if err != nil {
			return BenchResult{}, err
		}
		bench, err := NewBench(w, bo)
		if err != nil {
			return BenchResult{}, err
		}
		defer bench.Close()
		if prof != nil {
			if err := pprof.StartCPUProfile(prof); err != nil {
				return BenchResult{}, err
			}
			defer pprof.StopCPUProfile()
		}
		return bench.Run()
	}()
	debug.FreeOSMemory()
	return r, residentMB(), err
}

// residentMB is the process's resident set now (VmRSS), 0 where /proc is not there.
func residentMB() float64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "VmRSS:" {
			kb, _ := strconv.ParseFloat(f[1], 64)
			return kb / 1024
		}
	}
	return 0
}

// torchTrainRound runs scripts/torch_train_bench.py on the same checkpoint and shapes and
// returns its best step time, best step CPU time and peak RSS in MB.
func torchTrainRound(ctx context.Context, o TorchBenchOptions, bo BenchOptions) (stepS, stepCPUS, rssMB float64, err error) {
	args := []string{"--model", o.Dir, "--pairs", strconv.Itoa(bo.PairsPerStep),
		"--prompt-len", strconv.Itoa(bo.PromptLen), "--response-len", strconv.Itoa(bo.ResponseLen),
		"--steps", strconv.Itoa(bo.Steps), "--threads", strconv.Itoa(o.Threads), "--seed", strconv.FormatUint(bo.Seed, 10),
		"--micro-batch", strconv.Itoa(o.TorchMicroBatch)}
	if bo.LoRA != nil {
		args = append(args, "--lora-rank", strconv.Itoa(bo.LoRA.Rank), "--lora-alpha", strconv.FormatFloat(bo.LoRA.Alpha, 'g', -1, 64))
	}
	var r struct {
		StepS    float64 `json:"step_s"`
		StepCPUS float64 `json:"step_cpu_s"`
	}
	rssMB, err = torchref.Run(ctx, o.Python, "torch_train_bench.py", o.Threads, &r, args...)
	if err != nil {
		return 0, 0, 0, err
	}
	if r.StepS <= 0 {
		return 0, 0, 0, fmt.Errorf("torch_train_bench.py: step_s %g, want a positive time", r.StepS)
	}
	return r.StepS, r.StepCPUS, rssMB, nil
}
