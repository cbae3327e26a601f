package trainer

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"

	"github.com/autoif/autoif/model"
)

// RunOptions configure an offline run over a fixed data set (`autoif train dpo|sft`).
type RunOptions struct {
	// ModelDir is the starting policy; RefDir the frozen reference (default ModelDir).
	ModelDir, RefDir string
	// OutDir receives checkpoint-NNNNNNNN/ directories and, at the end, the final model's
	// files at its top level.
	OutDir  string
	Trainer Options
	// GradAccum is the number of micro-batches (of Trainer.BatchSize) per optimiser step.
	GradAccum int
	// Steps stops after this many optimiser steps in all (0: Epochs decide).
	Steps int
	// Epochs over the data (default 1); ignored when Steps is set.
	Epochs int
	// SaveEvery writes a checkpoint every N steps (0: only at the end); KeepLast keeps the
	// newest M (default 3; <0 keeps all).
	SaveEvery, KeepLast int
	// Seed drives the per-epoch shuffle; NoShuffle keeps file order.
	Seed      uint64
	NoShuffle bool
	// NoResume starts afresh even if OutDir holds checkpoints.
	NoResume bool
	// Progress, if set, is called after every step.
	Progress func(done, total int, m Metrics)
	Logger   *slog.Logger
}

func (o *RunOptions) defaults() {
	if o.GradAccum <= 0 {
		o.GradAccum = 1
	}
	if o.Epochs <= 0 {
		o.Epochs = 1
	}
	if o.KeepLast == 0 {
		o.KeepLast = 3
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.Trainer.BatchSize <= 0 {
		o.Trainer.BatchSize = 4
	}
}

// RunDPO trains on pairs. It returns the trainer (its Policy is the final model) and the last
// step's metrics.
func RunDPO(ctx context.Context, ro RunOptions, pairs []*Pair) (*Trainer, Metrics, error) {
	h := hooks{
		step: func(tr *Trainer, idx []int) (Metrics, error) {
			batch := make([]*Pair, len(idx))
			for i, j := range idx {
				batch[i] = pairs[j]
			}
			return tr.Step(batch)
		},
		save: func(st *State) {
			st.ReferenceLogps = map[string][2]float64{}
			for _, p := range pairs {
				if p.HasRef {
					st.ReferenceLogps[p.ID] = [2]float64{p.RefChosen, p.RefRejected}
				}
			}
		},
		load: func(st State) {
			for _, p := range pairs {
				if r, ok := st.ReferenceLogps[p.ID]; ok {
					p.RefChosen, p.RefRejected, p.HasRef = r[0], r[1], true
				}
			}
		},
	}
	return run(ctx, ro, len(pairs), h)
}

// RunSFT trains on examples with the NLL loss.
func RunSFT(ctx context.Context, ro RunOptions, examples []*Example) (*Trainer, Metrics, error) {
	return run(ctx, ro, len(examples), hooks{step: func(tr *Trainer, idx []int) (Metrics, error) {
		batch := make([]*Example, len(idx))
		for i, j := range idx {
			batch[i] = examples[j]
		}
		return tr.StepSFT(batch)
	}})
}

// hooks adapt the run loop to a data kind: step applies items idx; save and load (optional)
// add to and restore from a checkpoint's State.
type hooks struct {
	step func(*Trainer, []int) (Metrics, error)
	save func(*State)
	load func(State)
}

func run(ctx context.Context, ro RunOptions, n int, h hooks) (*Trainer, Metrics, error) {
	ro.defaults()
	var last Metrics
	if n == 0 {
		return nil, last, errors.New("train: no data")
	}
	if ro.OutDir == "" {
		return nil, last, errors.New("train: no output directory")
	}
	policy, err := loadPolicy(ro.ModelDir, ro.Trainer)
	if err != nil {
		return nil, last, fmt.Errorf("train: policy: %w", err)
	}
	if ro.RefDir != "" && ro.RefDir != ro.ModelDir {
		if ro.Trainer.Reference, err = model.Load(ro.RefDir); err != nil {
			return nil, last, fmt.Errorf("train: reference: %w", err)
		}
	}
	if ro.Trainer.Logger == nil {
		ro.Trainer.Logger = ro.Logger
	}
	tr, err := newWithBase(policy, ro.Trainer, ro.ModelDir)
	if err != nil {
		return nil, last, err
	}
	ro.Trainer.Reference = nil // the trainer keeps its own copy; let the float32 one go
	tokDir := ""
	if _, err := os.Stat(filepath.Join(ro.ModelDir, "tokenizer.json")); err == nil {
		tokDir = ro.ModelDir
	}
	st := State{Seed: ro.Seed}
	if !ro.NoResume {
		dirs, err := ownCheckpoints(ro.OutDir)
		if err != nil {
			return nil, last, fmt.Errorf("train: %w", err)
		}
		if len(dirs) > 0 {
			if st, err = tr.LoadCheckpoint(dirs[len(dirs)-1]); err != nil {
				return nil, last, err
			}
			if h.load != nil {
				h.load(st)
			}
			ro.Logger.Info("resumed", "checkpoint", dirs[len(dirs)-1], "step", st.GlobalStep, "epoch", st.Epoch, "offset", st.Offset)
		}
	}
	perStep := ro.Trainer.BatchSize * ro.GradAccum
	total := ro.Steps
	if total <= 0 {
		total = ro.Epochs * ((n + perStep - 1) / perStep)
	}
	saved := -1
	save := func() error {
		if saved == tr.StepCount() {
			return nil
		}
		st.LastMetrics = last.Map()
		if h.save != nil {
			h.save(&st)
		}
		if err := tr.SaveCheckpoint(CheckpointDir(ro.OutDir, tr.StepCount()), st, tokDir); err != nil {
			return err
		}
		saved = tr.StepCount()
		return PruneCheckpoints(ro.OutDir, ro.KeepLast)
	}
	var perm []int
	permEpoch := -1
	emptyRun := 0 // consecutive items without a step: all-bad data must not loop forever
	for tr.StepCount() < total {
		if err := ctx.Err(); err != nil {
			return tr, last, err
		}
		if st.Offset >= n {
			st.Epoch++
			st.Offset = 0
		}
		if permEpoch != st.Epoch {
			perm = epochOrder(n, ro.Seed, st.Epoch, ro.NoShuffle)
			permEpoch = st.Epoch
		}
		idx := perm[st.Offset:min(st.Offset+perStep, n)]
		m, err := h.step(tr, idx)
		if err != nil {
			return tr, last, err
		}
		st.Offset += len(idx)
		if m.Pairs == 0 {
			if emptyRun += len(idx); emptyRun >= n {
				return tr, last, fmt.Errorf("train: a whole pass over the data had nothing usable (skipped: %v)", tr.Skipped)
			}
			continue
		}
		emptyRun = 0
		last = m
		if ro.Progress != nil {
			ro.Progress(tr.StepCount(), total, m)
		}
		if ro.SaveEvery > 0 && tr.StepCount()%ro.SaveEvery == 0 {
			if err := save(); err != nil {
				return tr, last, err
			}
		}
	}
	if err := save(); err != nil {
		return tr, last, err
	}
	if err := saveFinal(tr, ro.OutDir, tokDir); err != nil {
		return tr, last, err
	}
	return tr, last, nil
}

// epochOrder is the order epoch visits n items: a pure function of (seed, epoch), so a
// resumed run replays the same order.
func epochOrder(n int, seed uint64, epoch int, noShuffle bool) []int {
	if noShuffle {
		p := make([]int, n)
		for i := range p {
			p[i] = i
		}
		return p
	}
	return rand.New(rand.NewPCG(seed, uint64(epoch))).Perm(n)
}

// saveFinal writes the model's HF files (with LoRA: the PEFT adapter's) at out's top level,
// next to the checkpoints, each replaced atomically.
func saveFinal(tr *Trainer, out, tokDir string) error {
	var err error
	if tr.adapter != nil {
		err = tr.adapter.WriteFiles(out)
	} else {
		err = tr.Policy.WriteFiles(out, model.SaveOptions{TokenizerDir: tokDir})
	}
	if err != nil {
		return fmt.Errorf("save final model: %w", err)
	}
	return nil
}

// loadPolicy reads the starting policy: float32 for full fine-tuning, as stored (BF16 stays
// BF16) for the frozen base under a LoRA adapter.
func loadPolicy(dir string, o Options) (*model.Weights, error) {
	if o.LoRA != nil {
		return model.LoadWeights(dir, model.LoadOptions{})
	}
	return model.Load(dir)
}

// newWithBase is New, its adapter (if any) naming baseDir as its base model
// (base_model_name_or_path), absolute so the adapter finds it from anywhere.
func newWithBase(policy *model.Weights, o Options, baseDir string) (*Trainer, error) {
	tr, err := New(policy, o)
	if err != nil {
		return nil, err
	}
	if tr.adapter != nil {
		if abs, err := filepath.Abs(baseDir); err == nil {
			baseDir = abs
		}
		tr.adapter.BaseModel = baseDir
	}
	return tr, nil
}
