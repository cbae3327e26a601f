package proto

import (
	"fmt"
	"regexp"
	"strings"
)

// RewardService is the subject of the reward service's requests. It is shared by all runs:
// reward workers need no run state, so one pool of them can serve many runs.
const RewardService = "autoif.reward"

// RewardQueueGroup is the queue group reward workers join so that each request goes to one.
const RewardQueueGroup = "autoif-reward"

// PolicyCurrentKey is the key, in a run's policy KV bucket, of the current policy version.
// Its value is the version as a decimal integer ("7"). A trainer publishes version v by first
// putting every file of the checkpoint into the run's CheckpointBucket under
// CheckpointObject(v, file) — config.json, model.safetensors, generation_config.json and the
// tokenizer files — and only then moving this key, so a reader that sees v finds it whole.
const PolicyCurrentKey = "current"

var runIDPattern = regexp.MustCompile(`^[A-Za-z0-9_-]{1,64}$`)

// Run names every subject, stream and bucket of one run.
type Run struct{ ID string }

// NewRun checks the run id: it becomes part of subjects and stream names, so it may not hold
// dots, wildcards or spaces.
func NewRun(id string) (Run, error) {
	if !runIDPattern.MatchString(id) {
		return Run{}, fmt.Errorf("run id %q: use 1-64 letters, digits, '-' or '_'", id)
	}
	return Run{ID: id}, nil
}

func (r Run) subject(kind string) string { return "autoif." + r.ID + "." + kind }

// Prompts is the work-queue subject of prompt units.
func (r Run) Prompts() string { return r.subject("prompts") }

// Pairs is the subject of preference-pair batches.
func (r Run) Pairs() string { return r.subject("pairs") }

// Rollouts is the subject of scored-rollout batches (kept for analysis, not needed to train).
func (r Run) Rollouts() string { return r.subject("rollouts") }

// Metrics is the subject of metric events.
func (r Run) Metrics() string { return r.subject("metrics") }

// streamName turns a subject kind into a JetStream stream name (no dots allowed there).
func (r Run) streamName(kind string) string {
	return "AUTOIF_" + strings.ToUpper(strings.ReplaceAll(r.ID, "-", "_")) + "_" + strings.ToUpper(kind)
}

// PromptsStream is the work-queue stream holding Prompts.
func (r Run) PromptsStream() string { return r.streamName("prompts") }

// PairsStream is the stream holding Pairs.
func (r Run) PairsStream() string { return r.streamName("pairs") }

// RolloutsStream is the stream holding Rollouts.
func (r Run) RolloutsStream() string { return r.streamName("rollouts") }

// MetricsStream is the stream holding Metrics.
func (r Run) MetricsStream() string { return r.streamName("metrics") }

// PolicyBucket is the KV bucket whose PolicyCurrentKey holds the current policy version.
func (r Run) PolicyBucket() string { return "autoif_" + r.ID + "_policy" }

// CheckpointBucket is the Object Store bucket holding checkpoints, one object per file.
func (r Run) CheckpointBucket() string { return "autoif_" + r.ID + "_checkpoints" }

// CheckpointObject names one file of a policy version's checkpoint in CheckpointBucket.
func (r Run) CheckpointObject(version int64, file string) string {
	return fmt.Sprintf("v%08d/%s", version, file)
}
