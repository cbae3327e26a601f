package orchestrator

import (
	"fmt"
	"strings"
	"time"
)

// Progress is where a run stands, for a live status line (Options.OnProgress).
type Progress struct {
	// Version is the current policy version; MaxSteps, MaxPairs and MaxWall the budgets (0:
	// none).
	Version  int64
	MaxSteps int64
	Pairs    int64
	MaxPairs int64
	MaxWall  time.Duration
	// RewardMean is the mean score of the rollouts of the step under way, or of the last
	// step when none arrived yet; HasReward is false before any rollout.
	RewardMean float64
	HasReward  bool
	// PairsPerSec is this process's pair rate so far.
	PairsPerSec float64
	// Elapsed is the run time used, resumes included; ETA the time left to the nearest
	// budget at the pace so far (0: no budget, or no pace yet).
	Elapsed time.Duration
	ETA     time.Duration
	// IdlePrompts is how many prompts in a row made no pair.
	IdlePrompts int
	InFlight    int
}

// Line renders the progress as one short line.
func (p Progress) Line() string {
	var b strings.Builder
	if p.MaxSteps > 0 {
		fmt.Fprintf(&b, "policy v%d/%d", p.Version, p.MaxSteps)
	} else {
		fmt.Fprintf(&b, "policy v%d", p.Version)
	}
	if p.MaxPairs > 0 {
		fmt.Fprintf(&b, "  pairs %d/%d", p.Pairs, p.MaxPairs)
	} else {
		fmt.Fprintf(&b, "  pairs %d", p.Pairs)
	}
	if p.HasReward {
		fmt.Fprintf(&b, "  reward %.3f", p.RewardMean)
	} else {
		b.WriteString("  reward -")
	}
	fmt.Fprintf(&b, "  %.2f pairs/s  in-flight %d  %s", p.PairsPerSec, p.InFlight, p.Elapsed.Round(time.Second))
	if p.ETA > 0 {
		fmt.Fprintf(&b, "  ETA %s", p.ETA.Round(time.Second))
	}
	if p.IdlePrompts > 0 {
		fmt.Fprintf(&b, "  %d prompts without a pair", p.IdlePrompts)
	}
	return b.String()
}

// eta is the time to the nearest budget: versions and pairs at this process's pace since
// it started (startVersion, startPairs, over since), wall time as it is.
func eta(p Progress, startVersion, startPairs int64, since time.Duration) time.Duration {
	var best time.Duration
	consider := func(d time.Duration) {
		if d > 0 && (best == 0 || d < best) {
			best = d
		}
	}
	if p.MaxSteps > 0 && p.Version > startVersion {
		per := since / time.Duration(p.Version-startVersion)
		consider(per * time.Duration(max(p.MaxSteps-p.Version, 0)))
	}
	if p.MaxPairs > 0 && p.Pairs > startPairs {
		rate := float64(p.Pairs-startPairs) / since.Seconds()
		consider(time.Duration(float64(max(p.MaxPairs-p.Pairs, 0)) / rate * float64(time.Second)))
	}
	if p.MaxWall > 0 {
		consider(p.MaxWall - p.Elapsed)
	}
	return best
}
