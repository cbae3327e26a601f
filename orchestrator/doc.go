// Package orchestrator owns an autoif run: its prompt schedule, the policy-lag bound, its
// metrics and samples, its budgets and its resumable state. It meets the rollout workers and
// the trainer only on the run's NATS resources (proto.Run): it publishes prompt units to the
// Prompts work queue, reads the Rollouts, Pairs and Metrics streams, and follows the policy
// bucket's `current` key.
//
// # Scheduling
//
// Each prompt unit is one message, so the work queue's depth is the number of prompts in
// flight: a rollout worker deletes a prompt only once its rollouts and pairs are stored, and
// also deletes prompts it skips without producing any rollout (counting rollouts alone would
// leak those slots). Arriving rollouts wake the scheduler; the depth is the count.
//
//   - sync: enqueue MaxInFlight prompts, wait until they are done and the trainer has published
//     a newer version, repeat (TRL's online DPO). A batch that gave the trainer fewer than
//     PairsPerVersion pairs of the current policy is topped up at once, since the version it
//     waits for cannot come; so is one that waited Options.SyncStall. A worker still loading
//     the new version samples a batch's first prompts with the old one, so pairs can lag by
//     one even in sync mode.
//   - async: keep MaxInFlight prompts queued all the time; sampling and training overlap.
//
// Epochs walk the prompt set in an order shuffled by (seed, epoch), so the cursor in
// state.json is all a resumed run needs; message ids derive from the prompt and its epoch.
//
// # Policy lag
//
// The trainer enforces max_lag: it alone knows the version it trains against when it takes a
// pair (a pair fresh when the orchestrator sees it can be stale by the time the trainer gets
// to it, so filtering here would be both late and a second copy of every pair). Wire
// Config.MaxLag into the trainer's lag bound. The orchestrator measures every pair's lag on
// arrival against the current version and counts those already beyond max_lag as pairs/stale
// (a lower bound of what the trainer drops, since lag only grows), with policy/lag and
// policy/lag_max per step.
//
// # Steps and metrics
//
// A step is the interval between two policy publications: step s ends when version s is
// published. Its reward/mean is the mean score of the rollouts that arrived during it, and
// its line shows the trainer's figures for step s (loss, rewards/accuracies, rewards/margins)
// when some component reported them on the metrics stream (MetricsPublisher). The
// orchestrator publishes its step aggregates to the metrics stream too (component
// "orchestrator"), so metrics.parquet holds everything any observer of the run saw.
//
// # Files and resume
//
// RUN_DIR/metrics.parquet (every metric event, with its stream sequence and policy version),
// RUN_DIR/samples.parquet (SamplesPerStep prompts per step with responses, scores and pairs)
// and RUN_DIR/state.json are rewritten every FlushEvery through a temporary file and a
// rename. state.json is written last and is the commit point: it records the stream positions
// the Parquet files cover, and a resumed run drops rows beyond them and reads those batches
// again. The streams are read with ordered consumers started at those positions, not durable
// consumers: the position that matters is the one committed with the files, and keeping a
// second copy on the server could only disagree with it.
package orchestrator
