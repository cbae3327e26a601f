package orchestrator

// backlog mirrors the pairs the trainer has not taken yet, from what the orchestrator sees:
// pairs arrive in stream order, the trainer pulls them in that order, drops those more than
// maxLag versions behind its own, and takes exactly perVersion for each version it publishes.
// Async mode's scheduler stops sampling while enough usable pairs wait, since sampling more
// would only make pairs that go stale before the trainer reaches them. An estimate (the
// trainer's own drops, redeliveries and publish-every are not seen), rebuilt empty on resume.
type backlog struct {
	perVersion int
	maxLag     int64
	version    int64        // the last version published
	runs       []versionRun // untaken pairs in arrival order, by sampling version
}

type versionRun struct {
	version int64
	n       int
}

func newBacklog(perVersion int, maxLag int64) *backlog {
	return &backlog{perVersion: perVersion, maxLag: maxLag}
}

// add records n pairs sampled by version v arriving.
func (b *backlog) add(v int64, n int) {
	if n <= 0 {
		return
	}
	if k := len(b.runs); k > 0 && b.runs[k-1].version == v {
		b.runs[k-1].n += n
		return
	}
	b.runs = append(b.runs, versionRun{version: v, n: n})
}

// published records the trainer publishing version v: each step from the last version on
// dropped what was stale at its version and took perVersion pairs, oldest first.
func (b *backlog) published(v int64) {
	for ; b.version < v; b.version++ {
		b.dropStale(b.version)
		for take := b.perVersion; take > 0 && len(b.runs) > 0; {
			n := min(take, b.runs[0].n)
			take -= n
			if b.runs[0].n -= n; b.runs[0].n == 0 {
				b.runs = b.runs[1:]
			}
		}
	}
}

// dropStale forgets pairs a trainer at version v drops.
func (b *backlog) dropStale(v int64) {
	if b.maxLag < 0 {
		return
	}
	kept := b.runs[:0]
	for _, r := range b.runs {
		if v-r.version <= b.maxLag {
			kept = append(kept, r)
		}
	}
	b.runs = kept
}

// usable counts the pairs waiting that a trainer at the last version published can still
// use.
func (b *backlog) usable() int {
	n := 0
	for _, r := range b.runs {
		if b.maxLag < 0 || b.version-r.version <= b.maxLag {
			n += r.n
		}
	}
	return n
}
