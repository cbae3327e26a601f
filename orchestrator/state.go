package orchestrator

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/autoif/autoif/atomicfile"
)

const stateFormat = 1

// State is what a run directory remembers between processes, in RUN_DIR/state.json. It is
// the commit point of the run's files: it is written last, and on resume rows of
// metrics.parquet and samples.parquet beyond its stream positions are dropped and read again
// from the streams, so a crash between two files' renames never duplicates or loses a row.
type State struct {
	Format int    `json:"format"`
	Run    string `json:"run"`
	// PromptSet is the prompt set's fingerprint and Seed the shuffle seed: the cursor only
	// means something for the same sequence.
	PromptSet string `json:"prompt_set"`
	Prompts   int    `json:"prompts"`
	Seed      uint64 `json:"seed"`

	// Epoch and Cursor are the next prompt to enqueue: index Cursor of epoch Epoch's
	// shuffled order.
	Epoch    int   `json:"epoch"`
	Cursor   int   `json:"cursor"`
	Enqueued int64 `json:"enqueued"`
	// BatchVersion is, in sync mode, the policy version current when the last batch was
	// enqueued (-1: none yet); the next batch waits for a newer one.
	BatchVersion int64 `json:"batch_version"`
	// WallUsed is the run time spent by earlier processes (the wall-time budget's use).
	WallUsed time.Duration `json:"wall_used_ns"`
	// Record is the recorder's state as of the last flush of the Parquet files.
	Record RecordState `json:"record"`
	// StopReason is why the last process stopped, when a budget stopped it.
	StopReason string    `json:"stop_reason,omitempty"`
	UpdatedAt  time.Time `json:"updated_at"`
}

// RecordState is where the recorder is in the run's streams, with the step under way.
type RecordState struct {
	// Next sequence to read from each stream.
	MetricsNext  uint64 `json:"metrics_next"`
	RolloutsNext uint64 `json:"rollouts_next"`
	PairsNext    uint64 `json:"pairs_next"`
	// Version is the newest policy version seen; Open the step under way (it ends when the
	// trainer publishes Version+1).
	Version int64   `json:"version"`
	Open    stepAgg `json:"open"`
	// PairsSinceVersion counts pairs sampled by Version that arrived since it was published.
	PairsSinceVersion int64 `json:"pairs_since_version"`
	Rollouts          int64 `json:"rollouts"`
	Pairs             int64 `json:"pairs"`
	StalePairs        int64 `json:"stale_pairs"`
	// Instructions is each instruction's account over the run (the end-of-run table).
	Instructions map[string]*instrTotals `json:"instructions,omitempty"`
}

func newState(runID string, set *PromptSet, cfg Config) *State {
	return &State{
		Format: stateFormat, Run: runID, PromptSet: set.Fingerprint(), Prompts: len(set.Units), Seed: cfg.Seed,
		BatchVersion: -1,
		Record:       RecordState{MetricsNext: 1, RolloutsNext: 1, PairsNext: 1, Open: stepAgg{Step: 1}},
	}
}

// LoadState reads RUN_DIR/state.json; a directory without one yields (nil, nil).
func LoadState(dir string) (*State, error) {
	data, err := os.ReadFile(filepath.Join(dir, StateFile))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("run state: %w", err)
	}
	var s State
	if err := json.Unmarshal(data, &s); err != nil {
		return nil, fmt.Errorf("run state %s: %w", filepath.Join(dir, StateFile), err)
	}
	if s.Format != stateFormat {
		return nil, fmt.Errorf("run state %s: format %d, this autoif reads %d", filepath.Join(dir, StateFile), s.Format, stateFormat)
	}
	return &s, nil
}

// resumable says why a run directory's state cannot continue with this prompt set and seed.
func (s *State) resumable(runID string, set *PromptSet, cfg Config, dir string) error {
	switch {
	case s.Run != runID:
		return fmt.Errorf("run directory %s belongs to run %q, not %q: use another run directory", dir, s.Run, runID)
	case s.PromptSet != set.Fingerprint() || s.Seed != cfg.Seed:
		return fmt.Errorf("run directory %s was started with another prompt set or seed (%d prompts, seed %d): resume with the same prompts and seed, or use another run directory",
			dir, s.Prompts, s.Seed)
	}
	return nil
}

// save writes state.json atomically.
func (s *State) save(dir string) error {
	s.UpdatedAt = time.Now().UTC()
	data, err := json.MarshalIndent(s, "", "  ")
	if err != nil {
		return err
	}
	return atomicfile.WriteFile(filepath.Join(dir, StateFile), append(data, '\n'), 0o644)
}
