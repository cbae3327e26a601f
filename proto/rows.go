package proto

import "time"

// PromptUnit is one unit of rollout work: an instruction crossed with a query, with the
// instruction's verified functions.
type PromptUnit struct {
	PromptID      string
	InstructionID string
	Instruction   string
	Query         string
	// Prompt is the text the policy sees (instruction and query combined), before any chat
	// template is applied.
	Prompt string
	// Functions are the sources of the instruction's verification functions, each defining
	// `evaluate(response) -> bool`.
	Functions []string
	CreatedAt time.Time
}

// ScoredRollout is one sampled response with its verification outcome.
type ScoredRollout struct {
	RolloutID     string
	PromptID      string
	InstructionID string
	Response      string
	TokenIDs      []int32
	// LogProbSum is the summed log-probability of TokenIDs under the sampling policy.
	LogProbSum float64
	// Score is the mean pass rate over the functions that ran without error.
	Score  float64
	Passed int32
	Failed int32
	Errors int32
	// Timeouts are the Errors that ran past the deadline; Skipped the functions whose result
	// the reward's return policy left out (neither a verdict nor an error).
	Timeouts int32
	Skipped  int32
	// ErrorKinds names each function's error on this response: its kind, with the exception's
	// type for an exception ("exception:ValueError"), "timeout" for a timeout.
	ErrorKinds []string
	// ErrorExample is one of those errors' messages, for a person to read.
	ErrorExample string
	// PromptPairs is how many pairs the response's prompt made in its step, the same on each
	// of the prompt's rows: what tells a prompt that taught nothing.
	PromptPairs   int32
	PolicyVersion int64
	CreatedAt     time.Time
}

// Pair is one preference pair: a chosen and a rejected response to the same prompt.
type Pair struct {
	PairID           string
	PromptID         string
	Prompt           string
	Chosen           string
	Rejected         string
	PromptTokenIDs   []int32
	ChosenTokenIDs   []int32
	RejectedTokenIDs []int32
	ChosenScore      float64
	RejectedScore    float64
	// PolicyVersion is the policy that sampled both responses; the trainer uses it to bound
	// policy lag.
	PolicyVersion int64
	CreatedAt     time.Time
}

// MetricEvent is one named measurement of a run.
type MetricEvent struct {
	Time time.Time
	// Component is who measured it: orchestrator, rollout, reward, trainer.
	Component string
	Step      int64
	// Name follows the field's conventions: "loss", "rewards/margins", "reward/mean", ...
	Name  string
	Value float64
	// Label narrows the metric, e.g. to one instruction id; empty for run-wide values.
	Label string
}

// PromptUnits is the codec of prompt-unit batches.
var PromptUnits = newCodec("prompts/v1",
	stringCol("prompt_id", func(r *PromptUnit) string { return r.PromptID }, func(r *PromptUnit, v string) { r.PromptID = v }),
	stringCol("instruction_id", func(r *PromptUnit) string { return r.InstructionID }, func(r *PromptUnit, v string) { r.InstructionID = v }),
	stringCol("instruction", func(r *PromptUnit) string { return r.Instruction }, func(r *PromptUnit, v string) { r.Instruction = v }),
	stringCol("query", func(r *PromptUnit) string { return r.Query }, func(r *PromptUnit, v string) { r.Query = v }),
	stringCol("prompt", func(r *PromptUnit) string { return r.Prompt }, func(r *PromptUnit, v string) { r.Prompt = v }),
	stringListCol("functions", func(r *PromptUnit) []string { return r.Functions }, func(r *PromptUnit, v []string) { r.Functions = v }),
	timeCol("created_at", func(r *PromptUnit) time.Time { return r.CreatedAt }, func(r *PromptUnit, v time.Time) { r.CreatedAt = v }),
)

// ScoredRollouts is the codec of scored-rollout batches.
var ScoredRollouts = newCodec("rollouts/v1",
	stringCol("rollout_id", func(r *ScoredRollout) string { return r.RolloutID }, func(r *ScoredRollout, v string) { r.RolloutID = v }),
	stringCol("prompt_id", func(r *ScoredRollout) string { return r.PromptID }, func(r *ScoredRollout, v string) { r.PromptID = v }),
	stringCol("instruction_id", func(r *ScoredRollout) string { return r.InstructionID }, func(r *ScoredRollout, v string) { r.InstructionID = v }),
	stringCol("response", func(r *ScoredRollout) string { return r.Response }, func(r *ScoredRollout, v string) { r.Response = v }),
	tokenListCol("token_ids", func(r *ScoredRollout) []int32 { return r.TokenIDs }, func(r *ScoredRollout, v []int32) { r.TokenIDs = v }),
	float64Col("logprob_sum", func(r *ScoredRollout) float64 { return r.LogProbSum }, func(r *ScoredRollout, v float64) { r.LogProbSum = v }),
	float64Col("score", func(r *ScoredRollout) float64 { return r.Score }, func(r *ScoredRollout, v float64) { r.Score = v }),
	int32Col("passed", func(r *ScoredRollout) int32 { return r.Passed }, func(r *ScoredRollout, v int32) { r.Passed = v }),
	int32Col("failed", func(r *ScoredRollout) int32 { return r.Failed }, func(r *ScoredRollout, v int32) { r.Failed = v }),
	int32Col("errors", func(r *ScoredRollout) int32 { return r.Errors }, func(r *ScoredRollout, v int32) { r.Errors = v }),
	int32Col("timeouts", func(r *ScoredRollout) int32 { return r.Timeouts }, func(r *ScoredRollout, v int32) { r.Timeouts = v }),
	int32Col("skipped", func(r *ScoredRollout) int32 { return r.Skipped }, func(r *ScoredRollout, v int32) { r.Skipped = v }),
	stringListCol("error_kinds", func(r *ScoredRollout) []string { return r.ErrorKinds }, func(r *ScoredRollout, v []string) { r.ErrorKinds = v }),
	stringCol("error_example", func(r *ScoredRollout) string { return r.ErrorExample }, func(r *ScoredRollout, v string) { r.ErrorExample = v }),
	int32Col("prompt_pairs", func(r *ScoredRollout) int32 { return r.PromptPairs }, func(r *ScoredRollout, v int32) { r.PromptPairs = v }),
	int64Col("policy_version", func(r *ScoredRollout) int64 { return r.PolicyVersion }, func(r *ScoredRollout, v int64) { r.PolicyVersion = v }),
	timeCol("created_at", func(r *ScoredRollout) time.Time { return r.CreatedAt }, func(r *ScoredRollout, v time.Time) { r.CreatedAt = v }),
)

// Pairs is the codec of preference-pair batches.
var Pairs = newCodec("pairs/v1",
	stringCol("pair_id", func(r *Pair) string { return r.PairID }, func(r *Pair, v string) { r.PairID = v }),
	stringCol("prompt_id", func(r *Pair) string { return r.PromptID }, func(r *Pair, v string) { r.PromptID = v }),
	stringCol("prompt", func(r *Pair) string { return r.Prompt }, func(r *Pair, v string) { r.Prompt = v }),
	stringCol("chosen", func(r *Pair) string { return r.Chosen }, func(r *Pair, v string) { r.Chosen = v }),
	stringCol("rejected", func(r *Pair) string { return r.Rejected }, func(r *Pair, v string) { r.Rejected = v }),
	tokenListCol("prompt_token_ids", func(r *Pair) []int32 { return r.PromptTokenIDs }, func(r *Pair, v []int32) { r.PromptTokenIDs = v }),
	tokenListCol("chosen_token_ids", func(r *Pair) []int32 { return r.ChosenTokenIDs }, func(r *Pair, v []int32) { r.ChosenTokenIDs = v }),
	tokenListCol("rejected_token_ids", func(r *Pair) []int32 { return r.RejectedTokenIDs }, func(r *Pair, v []int32) { r.RejectedTokenIDs = v }),
	float64Col("chosen_score", func(r *Pair) float64 { return r.ChosenScore }, func(r *Pair, v float64) { r.ChosenScore = v }),
	float64Col("rejected_score", func(r *Pair) float64 { return r.RejectedScore }, func(r *Pair, v float64) { r.RejectedScore = v }),
	int64Col("policy_version", func(r *Pair) int64 { return r.PolicyVersion }, func(r *Pair, v int64) { r.PolicyVersion = v }),
	timeCol("created_at", func(r *Pair) time.Time { return r.CreatedAt }, func(r *Pair, v time.Time) { r.CreatedAt = v }),
)

// MetricEvents is the codec of metric-event batches.
var MetricEvents = newCodec("metrics/v1",
	timeCol("time", func(r *MetricEvent) time.Time { return r.Time }, func(r *MetricEvent, v time.Time) { r.Time = v }),
	stringCol("component", func(r *MetricEvent) string { return r.Component }, func(r *MetricEvent, v string) { r.Component = v }),
	int64Col("step", func(r *MetricEvent) int64 { return r.Step }, func(r *MetricEvent, v int64) { r.Step = v }),
	stringCol("name", func(r *MetricEvent) string { return r.Name }, func(r *MetricEvent, v string) { r.Name = v }),
	float64Col("value", func(r *MetricEvent) float64 { return r.Value }, func(r *MetricEvent, v float64) { r.Value = v }),
	stringCol("label", func(r *MetricEvent) string { return r.Label }, func(r *MetricEvent, v string) { r.Label = v }),
)
