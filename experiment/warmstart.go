package experiment

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"time"

	"github.com/autoif/autoif/atomicfile"
	"github.com/autoif/autoif/model"
	"github.com/autoif/autoif/testbed/tinyif"
	"github.com/autoif/autoif/tokenizer"
	"github.com/autoif/autoif/trainer"
)

// ModelShape is the tiny byte-level policy's architecture.
type ModelShape struct {
	Layers       int `json:"layers"`
	Hidden       int `json:"hidden"`
	Heads        int `json:"heads"`
	Intermediate int `json:"intermediate"`
	MaxPositions int `json:"max_positions"`
}

// WarmStartOptions describe the warm-start policy: a fresh tiny model fine-tuned by SFT on
// tinyIF's partly compliant examples.
type WarmStartOptions struct {
	// Dir caches the result; a directory whose warmstart.json matches these options is
	// reused as it is.
	Dir   string     `json:"-"`
	Shape ModelShape `json:"shape"`
	Seed  uint64     `json:"seed"`
	// Comply is the fraction of SFT examples that follow their instruction (tinyif.SFTOptions).
	Comply    float64 `json:"comply"`
	PerPrompt int     `json:"per_prompt"`
	Steps     int     `json:"steps"`
	BatchSize int     `json:"batch_size"`
	LR        float64 `json:"lr"`
	// ChatTemplate renders prompts as the rollout workers will.
	ChatTemplate bool         `json:"chat_template"`
	Logger       *slog.Logger `json:"-"`
}

// DefaultWarmStart is the make-run warm start: a 2.5M-parameter byte-level Llama (3 layers,
// hidden 256).
func DefaultWarmStart() WarmStartOptions {
	return WarmStartOptions{
		Dir:   filepath.Join("runs", "tinyif-warmstart"),
		Shape: ModelShape{Layers: 3, Hidden: 256, Heads: 4, Intermediate: 704, MaxPositions: 256},
		Seed:  1, Comply: 0.5, PerPrompt: 1, Steps: 300, BatchSize: 16, LR: 3e-3, ChatTemplate: true,
	}
}

// SmallWarmStart is bench loop's warm start: the same recipe on a 0.46M-parameter policy (2
// layers, hidden 128), so that both modes of the benchmark run in about two minutes.
func SmallWarmStart() WarmStartOptions {
	o := DefaultWarmStart()
	o.Dir = filepath.Join("runs", "tinyif-warmstart-small")
	o.Shape = ModelShape{Layers: 2, Hidden: 128, Heads: 4, Intermediate: 384, MaxPositions: 256}
	return o
}

// WarmStartInfo is RUN_DIR/warmstart.json: the options a cached warm start was made with.
type WarmStartInfo struct {
	Options    WarmStartOptions `json:"options"`
	Params     int64            `json:"params"`
	FinalLoss  float64          `json:"final_loss"`
	TrainWallS float64          `json:"train_wall_s"`
}

const warmStartInfoFile = "warmstart.json"

// EnsureWarmStart returns o.Dir, training the warm start there first unless a matching one is
// cached. cached reports which.
func EnsureWarmStart(ctx context.Context, o WarmStartOptions) (info WarmStartInfo, cached bool, err error) {
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.Dir == "" {
		return info, false, errors.New("warm start: no directory")
	}
	want, _ := json.Marshal(o)
	if data, err := os.ReadFile(filepath.Join(o.Dir, warmStartInfoFile)); err == nil {
		if json.Unmarshal(data, &info) == nil {
			got, _ := json.Marshal(info.Options)
			if bytes.Equal(got, want) {
				return info, true, nil
			}
		}
		o.Logger.Info("warm start cache made with other options: training again", "dir", o.Dir)
	}
	start := time.Now()
	parent := filepath.Dir(o.Dir)
	if err := os.MkdirAll(parent, 0o755); err != nil {
		return info, false, fmt.Errorf("warm start: %w", err)
	}
	work, err := os.MkdirTemp(parent, ".tmp-warmstart-")
	if err != nil {
		return info, false, fmt.Errorf("warm start: %w", err)
	}
	defer os.RemoveAll(work)

	initDir := filepath.Join(work, "init")
	params, err := initTinyModel(initDir, o.Shape, o.Seed)
	if err != nil {
		return info, false, err
	}
	tok, err := tokenizer.Load(initDir)
	if err != nil {
		return info, false, fmt.Errorf("warm start: %w", err)
	}
	set, err := tinyif.Load()
	if err != nil {
		return info, false, fmt.Errorf("warm start: %w", err)
	}
	examples := set.SFT(tinyif.Train, tinyif.SFTOptions{Seed: o.Seed, Comply: o.Comply, PerPrompt: o.PerPrompt})
	// The trainer's own loader turns text into ids, so the warm start sees prompts exactly
	// as its chat-template convention says the rollout workers render them.
	sftPath := filepath.Join(work, "sft.jsonl")
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	for _, e := range examples {
		if err := enc.Encode(map[string]string{"id": e.PromptID, "prompt": e.Prompt, "response": e.Response}); err != nil {
			return info, false, err
		}
	}
	if err := os.WriteFile(sftPath, buf.Bytes(), 0o644); err != nil {
		return info, false, fmt.Errorf("warm start: %w", err)
	}
	exs, err := trainer.LoadSFT(sftPath, trainer.TextOptions{Tokenizer: tok, Chat: o.ChatTemplate})
	if err != nil {
		return info, false, fmt.Errorf("warm start: %w", err)
	}
	topts := trainer.DefaultOptions()
	topts.BatchSize = o.BatchSize
	topts.Optim.LR = o.LR
	topts.Optim.Schedule = "cosine"
	topts.Optim.WarmupSteps = min(20, o.Steps/10)
	topts.Optim.TotalSteps = o.Steps
	topts.Logger = o.Logger
	w, err := model.Load(initDir)
	if err != nil {
		return info, false, fmt.Errorf("warm start: %w", err)
	}
	tr, err := trainer.New(w, topts)
	if err != nil {
		return info, false, fmt.Errorf("warm start: %w", err)
	}
	var m trainer.Metrics
	batches := shapeStableBatches(exs, o.BatchSize, o.Steps, o.Seed)
	lastLog := time.Now()
	for i, b := range batches {
		if err := ctx.Err(); err != nil {
			return info, false, err
		}
		if m, err = tr.StepSFT(b); err != nil {
			return info, false, fmt.Errorf("warm start: sft step %d: %w", i+1, err)
		}
		if time.Since(lastLog) > 10*time.Second || i == len(batches)-1 {
			lastLog = time.Now()
			o.Logger.Info("warm start sft", "step", i+1, "of", len(batches), "loss", m.Loss)
		}
	}
	info = WarmStartInfo{Options: o, Params: params, FinalLoss: m.Loss, TrainWallS: time.Since(start).Seconds()}
	data, _ := json.MarshalIndent(info, "", "  ")
	err = atomicfile.ReplaceDir(o.Dir, func(tmp string) error {
		if err := tr.Policy.WriteFiles(tmp, model.SaveOptions{TokenizerDir: initDir}); err != nil {
			return err
		}
		return atomicfile.WriteFile(filepath.Join(tmp, warmStartInfoFile), append(data, '\n'), 0o644)
	})
	if err != nil {
		return info, false, fmt.Errorf("warm start: %w", err)
	}
	return info, false, nil
}

// initTinyModel writes a randomly initialised byte-level Llama-style model to dir.
func initTinyModel(dir string, s ModelShape, seed uint64) (int64, error) {
	tokDir := dir + ".tok"
	if err := os.MkdirAll(tokDir, 0o755); err != nil {
		return 0, fmt.Errorf("init model: %w", err)
	}
	files, err := tokenizer.NewByteLevelJSON(tokenizer.ByteLevelOptions{})
	if err != nil {
		return 0, fmt.Errorf("init model: %w", err)
	}
	if err := files.WriteDir(tokDir); err != nil {
		return 0, fmt.Errorf("init model: %w", err)
	}
	defer os.RemoveAll(tokDir)
	tok, err := tokenizer.Load(tokDir)
	if err != nil {
		return 0, fmt.Errorf("init model: %w", err)
	}
	if s.Heads <= 0 || s.Hidden%s.Heads != 0 {
		return 0, fmt.Errorf("init model: hidden %d is not a multiple of heads %d", s.Hidden, s.Heads)
	}
	cfg := &model.Config{
		Architecture: model.ArchLlama, HiddenSize: s.Hidden, IntermediateSize: s.Intermediate,
		NumHiddenLayers: s.Layers, NumAttentionHeads: s.Heads, NumKeyValueHeads: s.Heads,
		HeadDim: s.Hidden / s.Heads, RMSNormEps: 1e-6, RopeTheta: 10000,
		VocabSize: tok.VocabSize(), MaxPositionEmbeddings: s.MaxPositions, TieWordEmbeddings: true,
		EOSTokenIDs: tok.EOSIDs(), InitializerRange: 0.02,
	}
	if id, ok := tok.BOS(); ok {
		cfg.BOSTokenID = &id
	}
	w, err := model.Init(cfg, seed)
	if err != nil {
		return 0, fmt.Errorf("init model: %w", err)
	}
	if err := w.Save(dir, model.SaveOptions{TokenizerDir: tokDir}); err != nil {
		return 0, fmt.Errorf("init model: %w", err)
	}
	return int64(cfg.NumParams()), nil
}

// shapeStableBatches draws steps batches of size examples that all pad to one graph shape:
// each holds the longest example (so the padded length is the same) and its responses add up
// to the same 32-token window (the trainer sizes its scored-position buffer by that sum,
// rounded up to 32). The trainer compiles a graph per shape and keeps only a few, and a
// compiled graph's memory is not all given back when it is dropped: a warm start whose
// batches changed shape at every step grew by gigabytes.
func shapeStableBatches(exs []*trainer.Example, size, steps int, seed uint64) [][]*trainer.Example {
	const window = 32
	longest, total := 0, 0
	for i, e := range exs {
		if len(e.Prompt)+len(e.Response) > len(exs[longest].Prompt)+len(exs[longest].Response) {
			longest = i
		}
		total += len(e.Response)
	}
	size = max(size, 3)
	mean := float64(total) / float64(len(exs))
	// The window above the expected sum, so most random batches can be completed into it.
	hi := (int(mean*float64(size)) + window) / window * window
	lo := hi - window + 1
	rng := rand.New(rand.NewPCG(seed, 0x5f7))
	out := make([][]*trainer.Example, 0, steps)
	for len(out) < steps {
		b := []*trainer.Example{exs[longest]}
		sum := len(exs[longest].Response)
		for len(b) < size-1 {
			e := exs[rng.IntN(len(exs))]
			b = append(b, e)
			sum += len(e.Response)
		}
		// The last example lands the sum in the window; a batch no example completes is
		// drawn again.
		need := [2]int{lo - sum, hi - sum}
		for range 64 {
			e := exs[rng.IntN(len(exs))]
			if n := len(e.Response); n >= need[0] && n <= need[1] {
				b = append(b, e)
				break
			}
		}
		if len(b) == size {
			out = append(out, b)
		}
	}
	return out
}
