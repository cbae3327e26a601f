package trainer

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/autoif/autoif/atomicfile"
	"github.com/autoif/autoif/model"
	"github.com/autoif/autoif/natsbus"
	"github.com/autoif/autoif/proto"
)

// State is trainer_state.json: everything besides weights and optimiser moments that a
// resumed run needs to continue exactly where the checkpoint was taken.
type State struct {
	GlobalStep int `json:"global_step"`
	// Offline data position: Epoch (0-based) and the number of its shuffled items already
	// applied. The shuffle of an epoch is a pure function of Seed and Epoch, so these three
	// numbers are the data RNG's whole state.
	Epoch  int    `json:"epoch"`
	Offset int    `json:"offset"`
	Seed   uint64 `json:"seed"`
	// StreamSeq is the pair stream's newest sequence some of whose rows these weights
	// applied or dropped (online; a batch can straddle checkpoints).
	StreamSeq uint64 `json:"stream_seq,omitempty"`
	// PolicyVersion is the version this checkpoint was published as (online).
	PolicyVersion int64 `json:"policy_version,omitempty"`
	// PendingPairIDs are pairs these weights include whose batches were acknowledged only
	// after this file was written: a resumed consumer drops their redelivery.
	PendingPairIDs []string `json:"pending_pair_ids,omitempty"`
	// LedgerBytes is the length of the online trainer's pair ledger (LedgerFile) that these
	// weights cover: its lines for every pair consumed up to this checkpoint are written and
	// fsynced before it, and a resumed trainer cuts the ledger back to this length.
	LedgerBytes  int64              `json:"ledger_bytes"`
	Optimizer    string             `json:"optimizer"`
	LearningRate float64            `json:"learning_rate"`
	Skipped      map[string]int     `json:"skipped,omitempty"`
	LastMetrics  map[string]float64 `json:"last_metrics,omitempty"`
	// ReferenceLogps caches each offline pair's reference log-probs (chosen, rejected) by id,
	// so a resumed run uses the very numbers the interrupted one did.
	ReferenceLogps map[string][2]float64 `json:"reference_logps,omitempty"`
	// ReferenceVersion is the policy version the reference was last refreshed to (online,
	// StreamOptions.RefRefreshEvery); 0 is the starting reference. When it is set the
	// checkpoint holds the reference's weights in reference.safetensors.
	ReferenceVersion int64 `json:"reference_version,omitempty"`

	// ledgerRecorded is set by LoadCheckpoint when the file has ledger_bytes (checkpoints
	// written before the pair ledger existed lack it).
	ledgerRecorded bool
}

const (
	stateFile     = "trainer_state.json"
	optimizerFile = "optimizer.safetensors"
	referenceFile = "reference.safetensors"
	// referenceAdapterDir holds a refreshed reference's adapter snapshot (LoRA).
	referenceAdapterDir = "reference_adapter"
	ckptPrefix          = "checkpoint-"
)

// CheckpointDir is the directory name of step's checkpoint under an output directory.
func CheckpointDir(out string, step int) string {
	return filepath.Join(out, fmt.Sprintf("%s%08d", ckptPrefix, step))
}

// SaveCheckpoint writes an HF-layout checkpoint of the policy (with LoRA: the PEFT adapter,
// adapter_config.json and adapter_model.safetensors) plus trainer_state.json and
// optimizer.safetensors to dir as one atomic directory replace (atomicfile.ReplaceDir): a
// crash leaves either the previous state or the whole new checkpoint, never a part, and
// Checkpoints finds it either way. tokDir, if set, supplies tokenizer files (not to an
// adapter, whose base has them).
func (t *Trainer) SaveCheckpoint(dir string, st State, tokDir string) error {
	st.GlobalStep = t.opt.step
	st.Optimizer = t.opts.Optim.Name
	st.LearningRate = t.opts.Optim.LRAt(max(t.opt.step-1, 0))
	st.Skipped = t.Skipped
	js, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return fmt.Errorf("save checkpoint %s: %w", dir, err)
	}
	err = atomicfile.ReplaceDir(dir, func(tmp string) error {
		if t.adapter != nil {
			if err := t.adapter.WriteFiles(tmp); err != nil {
				return err
			}
		} else if err := t.Policy.WriteFiles(tmp, model.SaveOptions{TokenizerDir: tokDir}); err != nil {
			return err
		}
		if err := atomicfile.WriteFile(filepath.Join(tmp, stateFile), append(js, '\n'), 0o644); err != nil {
			return err
		}
		if err := t.writeOptimizer(filepath.Join(tmp, optimizerFile)); err != nil {
			return err
		}
		switch {
		case st.ReferenceVersion > 0 && t.adapter != nil:
			if t.refAdapter != nil {
				return t.refAdapter.Save(filepath.Join(tmp, referenceAdapterDir))
			}
		case st.ReferenceVersion > 0:
			return model.WriteSafetensors(filepath.Join(tmp, referenceFile), t.ref.tensors(), model.F32, nil)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("save checkpoint %s: %w", dir, err)
	}
	return nil
}

func (t *Trainer) writeOptimizer(path string) error {
	var tensors []*model.Tensor
	add := func(prefix string, state [][]float32) {
		for i, p := range t.params {
			tensors = append(tensors, &model.Tensor{Name: prefix + p.Name, Shape: p.Shape, Data: state[i]})
		}
	}
	switch {
	case t.opts.Optim.Name == "adamw":
		add("exp_avg.", t.opt.m)
		add("exp_avg_sq.", t.opt.v)
	case t.opt.m != nil:
		add("momentum_buffer.", t.opt.m)
	}
	meta := map[string]string{"optimizer": t.opts.Optim.Name, "step": strconv.Itoa(t.opt.step)}
	return model.WriteSafetensors(path, tensors, model.F32, meta)
}

// LoadCheckpoint restores weights (into the policy's existing tensors, which compiled graphs
// alias), optimiser state and step from dir, and returns its State.
func (t *Trainer) LoadCheckpoint(dir string) (State, error) {
	dir = atomicfile.Resolve(dir)
	var st State
	data, err := os.ReadFile(filepath.Join(dir, stateFile))
	if err != nil {
		return st, fmt.Errorf("resume from %s: %w", dir, err)
	}
	if err := json.Unmarshal(data, &st); err != nil {
		return st, fmt.Errorf("resume from %s: %s: %w", dir, stateFile, err)
	}
	var probe struct {
		LedgerBytes *int64 `json:"ledger_bytes"`
	}
	if json.Unmarshal(data, &probe) == nil {
		st.ledgerRecorded = probe.LedgerBytes != nil
	}
	if st.Optimizer != t.opts.Optim.Name {
		return st, fmt.Errorf("resume from %s: checkpoint used optimiser %s, this run %s", dir, st.Optimizer, t.opts.Optim.Name)
	}
	if t.adapter != nil {
		if err := t.loadAdapter(dir, st); err != nil {
			return st, fmt.Errorf("resume from %s: %w", dir, err)
		}
	} else if err := t.loadPolicy(dir, st); err != nil {
		return st, err
	}
	f, err := model.OpenSafetensors(filepath.Join(dir, optimizerFile))
	if err != nil {
		return st, fmt.Errorf("resume from %s: %w", dir, err)
	}
	defer f.Close()
	byName := map[string]model.TensorInfo{}
	for _, ti := range f.Tensors {
		byName[ti.Name] = ti
	}
	load := func(prefix string, state [][]float32) error {
		for i, p := range t.params {
			ti, ok := byName[prefix+p.Name]
			if !ok {
				return fmt.Errorf("resume from %s: %s lacks %s", dir, optimizerFile, prefix+p.Name)
			}
			d, err := f.Read(ti)
			if err != nil {
				return fmt.Errorf("resume from %s: %w", dir, err)
			}
			if len(d) != len(state[i]) {
				return fmt.Errorf("resume from %s: %s has %d values, want %d", dir, ti.Name, len(d), len(state[i]))
			}
			copy(state[i], d)
		}
		return nil
	}
	switch {
	case t.opts.Optim.Name == "adamw":
		if err := load("exp_avg.", t.opt.m); err != nil {
			return st, err
		}
		if err := load("exp_avg_sq.", t.opt.v); err != nil {
			return st, err
		}
	case t.opt.m != nil:
		if err := load("momentum_buffer.", t.opt.m); err != nil {
			return st, err
		}
	}
	t.opt.step = st.GlobalStep
	for k, v := range st.Skipped {
		t.Skipped[k] = v
	}
	return st, nil
}

// ownCheckpoints is Checkpoints for the trainer that owns out, at its start: it first puts
// back what a crash inside SaveCheckpoint left (atomicfile.Recover).
func ownCheckpoints(out string) ([]string, error) {
	if err := atomicfile.Recover(out); err != nil {
		return nil, err
	}
	return Checkpoints(out)
}

// Checkpoints lists out's complete checkpoint directories, oldest step first. A checkpoint
// that a crash inside SaveCheckpoint left only as its old copy is listed under that copy's
// path (atomicfile.Resolve).
func Checkpoints(out string) ([]string, error) {
	ents, err := os.ReadDir(out)
	if err != nil {
		if os.IsNotExist(err) {
			return nil, nil
		}
		return nil, err
	}
	type ck struct {
		step int
		dir  string
	}
	var cks []ck
	seen := map[string]bool{}
	for _, e := range ents {
		name := e.Name()
		if orig, ok := atomicfile.OldCopyOf(name); ok {
			name = orig
		}
		if !e.IsDir() || !strings.HasPrefix(name, ckptPrefix) || seen[name] {
			continue // temporaries start with "."
		}
		seen[name] = true
		step, err := strconv.Atoi(strings.TrimPrefix(name, ckptPrefix))
		if err != nil {
			continue
		}
		dir := atomicfile.Resolve(filepath.Join(out, name))
		if _, err := os.Stat(filepath.Join(dir, stateFile)); err != nil {
			continue
		}
		cks = append(cks, ck{step, dir})
	}
	sort.Slice(cks, func(i, j int) bool { return cks[i].step < cks[j].step })
	dirs := make([]string, len(cks))
	for i, c := range cks {
		dirs[i] = c.dir
	}
	return dirs, nil
}

// PruneCheckpoints deletes all but the newest keep checkpoints (keep <= 0 keeps all).
func PruneCheckpoints(out string, keep int) error {
	if keep <= 0 {
		return nil
	}
	dirs, err := Checkpoints(out)
	if err != nil {
		return err
	}
	for len(dirs) > keep {
		if err := os.RemoveAll(dirs[0]); err != nil {
			return fmt.Errorf("prune checkpoint %s: %w", dirs[0], err)
		}
		dirs = dirs[1:]
	}
	return nil
}

// publishedFiles are the checkpoint files rollout workers load; resume state stays local.
var publishedFiles = []string{"config.json", "generation_config.json", "model.safetensors",
	model.AdapterConfigFile, model.AdapterWeightsFile,
	"tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.json", "merges.txt",
	"tokenizer.model", "added_tokens.json", "chat_template.jinja"}

// Publish puts a checkpoint's files into the run's object store as policy version, then
// moves the KV `current` pointer: a reader that sees the version finds every file.
func Publish(ctx context.Context, run proto.Run, store jetstream.ObjectStore, kv jetstream.KeyValue, version int64, dir string) error {
	// Each put is retried through a cluster's failover: an object put again under its name
	// replaces the first copy, and the pointer moves only after every file is in. An attempt
	// has no deadline of its own, however large the file: each chunk's ack then times out by
	// itself (the client's 5 s), so a chunk lost with a killed member fails the attempt in
	// seconds (with a deadline, the put waited for it until the deadline: 2 minutes, seen in
	// the cluster kill test).
	objects := natsbus.RetryOptions{Attempt: -1, For: 10 * time.Minute}
	for _, name := range publishedFiles {
		path := filepath.Join(dir, name)
		if _, err := os.Stat(path); os.IsNotExist(err) {
			continue
		}
		err := natsbus.Retry(ctx, objects, func(ctx context.Context) error {
			f, err := os.Open(path)
			if err != nil {
				return err
			}
			defer f.Close()
			_, err = natsbus.PutObject(ctx, store, jetstream.ObjectMeta{Name: run.CheckpointObject(version, name)}, f)
			return err
		})
		if err != nil {
			return fmt.Errorf("publish policy %d: %s: %w", version, name, err)
		}
	}
	err := natsbus.Retry(ctx, natsbus.RetryOptions{}, func(ctx context.Context) error {
		_, err := kv.Put(ctx, proto.PolicyCurrentKey, []byte(strconv.FormatInt(version, 10)))
		return err
	})
	if err != nil {
		return fmt.Errorf("publish policy %d: move %s: %w", version, proto.PolicyCurrentKey, err)
	}
	return nil
}

// loadReference reads a refreshed reference policy's weights saved with a checkpoint.
func (t *Trainer) loadReference(path string) error {
	f, err := model.OpenSafetensors(path)
	if err != nil {
		return fmt.Errorf("reference: %w", err)
	}
	defer f.Close()
	byName := map[string]model.TensorInfo{}
	for _, ti := range f.Tensors {
		byName[ti.Name] = ti
	}
	for i, name := range t.ref.names {
		ti, ok := byName[name]
		if !ok {
			return fmt.Errorf("reference: %s lacks %s", path, name)
		}
		d, err := f.Read(ti)
		if err != nil {
			return fmt.Errorf("reference: %w", err)
		}
		if len(d) != t.ref.size(i) {
			return fmt.Errorf("reference: %s has %d values, want %d", name, len(d), t.ref.size(i))
		}
		t.ref.set(i, d)
	}
	t.dropReferenceGraphs()
	return nil
}

// loadPolicy restores a full fine-tuning checkpoint's weights (and a refreshed reference).
func (t *Trainer) loadPolicy(dir string, st State) error {
	if model.IsAdapter(dir) {
		return fmt.Errorf("resume from %s: it holds a LoRA adapter, and this run fine-tunes the whole model (resume it with the same --lora-* options, or start afresh)", dir)
	}
	w, err := model.Load(dir)
	if err != nil {
		return fmt.Errorf("resume: %w", err)
	}
	src := w.Tensors()
	if len(src) != len(t.params) {
		return fmt.Errorf("resume from %s: %d tensors, the model has %d", dir, len(src), len(t.params))
	}
	for i, p := range t.params {
		if src[i].Name != p.Name || len(src[i].Data) != len(p.Data) {
			return fmt.Errorf("resume from %s: tensor %s does not fit %s", dir, src[i].Name, p.Name)
		}
		copy(p.Data, src[i].Data)
	}
	if st.ReferenceVersion > 0 {
		if err := t.loadReference(filepath.Join(dir, referenceFile)); err != nil {
			return fmt.Errorf("resume from %s: %w", dir, err)
		}
	}
	return nil
}

// loadAdapter restores a LoRA checkpoint's adapter into the trainer's (whose tensors the
// compiled graphs read), after checking it is an adapter of the same shape and rule, and a
// refreshed reference's snapshot.
func (t *Trainer) loadAdapter(dir string, st State) error {
	if !model.IsAdapter(dir) {
		return fmt.Errorf("it holds a whole model, and this run trains a LoRA adapter (resume it without --lora-rank, or start afresh)")
	}
	load := func(dir string) (*model.Adapter, error) {
		a, err := model.LoadAdapter(dir)
		if err != nil {
			return nil, err
		}
		want, got := t.adapter.Config, a.Config
		if got.Rank != want.Rank || got.Alpha != want.Alpha || got.RSLoRA != want.RSLoRA || !slices.Equal(got.Targets, want.Targets) {
			return nil, fmt.Errorf("its adapter has rank %d, alpha %g, targets %s; this run's rank %d, alpha %g, targets %s",
				got.Rank, got.Alpha, strings.Join(got.Targets, ","), want.Rank, want.Alpha, strings.Join(want.Targets, ","))
		}
		if err := a.Fits(t.Policy.Config); err != nil {
			return nil, err
		}
		return a, nil
	}
	a, err := load(dir)
	if err != nil {
		return err
	}
	src := a.Tensors()
	for i, p := range t.params {
		copy(p.Data, src[i].Data)
	}
	t.refAdapter = nil
	if st.ReferenceVersion > 0 {
		if t.refAdapter, err = load(filepath.Join(dir, referenceAdapterDir)); err != nil {
			return fmt.Errorf("reference: %w", err)
		}
		t.ref = t.base
	}
	t.dropReferenceGraphs()
	return nil
}
