package orchestrator

import "testing"

func TestBacklogMirrorsTheTrainersQueue(t *testing.T) {
	type arrive struct {
		version int64
		n       int
	}
	cases := []struct {
		name       string
		perVersion int
		maxLag     int64
		events     []any // arrive, or int64: a version published
		usable     int   // pairs waiting that the trainer can still use
		left       int   // pairs waiting
	}{
		{"nothing yet", 4, 1, nil, 0, 0},
		{"pairs wait until a step takes them", 4, 1, []any{arrive{0, 6}}, 6, 6},
		{"a step takes exactly its pairs, oldest first", 4, 1, []any{arrive{0, 6}, int64(1)}, 2, 2},
		{"a step takes what there is", 4, 1, []any{arrive{0, 3}, int64(1), arrive{1, 5}, arrive{0, 2}}, 7, 7},
		// Steps 2 and 3 take four each; at version 3 the two left are two versions behind.
		{"stale pairs do not count", 4, 1, []any{int64(1), arrive{1, 10}, int64(3)}, 0, 2},
		// Step 2 skips the version-0 pair left over and takes two of version 1, leaving one
		// that a trainer at version 2 cannot use either.
		{"a stale pair is dropped, not taken", 2, 0, []any{arrive{0, 3}, int64(1), arrive{1, 3}, int64(2)}, 0, 1},
		{"no lag bound keeps everything", 4, -1, []any{arrive{0, 10}, int64(2)}, 2, 2},
		{"versions published at once take a step each", 4, 2, []any{arrive{0, 12}, int64(2)}, 4, 4},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			b := newBacklog(tc.perVersion, tc.maxLag)
			for _, e := range tc.events {
				switch e := e.(type) {
				case arrive:
					b.add(e.version, e.n)
				case int64:
					b.published(e)
				}
			}
			left := 0
			for _, r := range b.runs {
				left += r.n
			}
			if got := b.usable(); got != tc.usable || left != tc.left {
				t.Fatalf("usable %d of %d waiting, want %d of %d (runs %+v at version %d)", got, left, tc.usable, tc.left, b.runs, b.version)
			}
		})
	}
}
