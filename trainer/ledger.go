package trainer

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/autoif/autoif/atomicfile"
)

// LedgerFile is the online trainer's pair ledger under StreamOptions.OutDir.
//
// It is an append-only, tab-separated text file with one line per pair the trainer consumed:
//
//	<global step>\t<policy version>\t<pair id>\t<outcome>
//
// The step is the optimiser step the pair was applied in (or, for a dropped pair, offered
// to); the policy version is the first published version whose weights include the pair (0
// for a dropped one); the outcome is "applied" or "dropped:<reason>" ("stale" for a pair past
// StreamOptions.MaxPolicyLag, otherwise one of the trainer's Skip* reasons). A pair id that
// needs quoting (it holds a tab, CR or LF, or starts with '"') is written as a Go string
// literal. A redelivered pair already consumed is not written again.
//
// A checkpoint's lines are written and fsynced before the checkpoint, whose State.LedgerBytes
// is the ledger's length then; resuming truncates the ledger to that length (the lines past it
// are of steps the crash undid, whose pairs come back and are written again). So the first
// LedgerBytes bytes, as of the newest checkpoint, name every pair its weights consumed, each
// once.
const LedgerFile = "pairs_ledger.tsv"

// OutcomeApplied is a ledger outcome: the pair was trained on.
const OutcomeApplied = "applied"

const droppedPrefix = "dropped:"

// LedgerEntry is one line of the pair ledger (see LedgerFile).
type LedgerEntry struct {
	Step          int
	PolicyVersion int64
	PairID        string
	// Outcome is OutcomeApplied or "dropped:<reason>".
	Outcome string
}

// Applied reports whether the pair was trained on.
func (e LedgerEntry) Applied() bool { return e.Outcome == OutcomeApplied }

// DropReason is why the pair was consumed without training on it ("" if it was applied).
func (e LedgerEntry) DropReason() string { return strings.TrimPrefix(e.Outcome, droppedPrefix) }

func droppedOutcome(reason string) string { return droppedPrefix + reason }

// line renders e as one ledger line, newline included.
func (e LedgerEntry) line() string {
	id := e.PairID
	if strings.ContainsAny(id, "\t\r\n") || strings.HasPrefix(id, `"`) {
		id = strconv.Quote(id)
	}
	return fmt.Sprintf("%d\t%d\t%s\t%s\n", e.Step, e.PolicyVersion, id, e.Outcome)
}

// LedgerPath is the pair ledger's path under an output directory.
func LedgerPath(out string) string { return filepath.Join(out, LedgerFile) }

// ReadLedger parses a whole pair ledger file. To read only what a checkpoint covers, parse
// the first State.LedgerBytes bytes with ParseLedger.
func ReadLedger(path string) ([]LedgerEntry, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("pair ledger: %w", err)
	}
	defer f.Close()
	entries, err := ParseLedger(f)
	if err != nil {
		return entries, fmt.Errorf("pair ledger %s: %w", path, err)
	}
	return entries, nil
}

// ParseLedger parses pair ledger lines. A malformed line, an unterminated last line included,
// is an error naming its 1-based line number; the entries before it are returned with it.
func ParseLedger(r io.Reader) ([]LedgerEntry, error) {
	br := bufio.NewReader(r)
	var out []LedgerEntry
	for n := 1; ; n++ {
		line, err := br.ReadString('\n')
		if err == io.EOF {
			if line != "" {
				return out, fmt.Errorf("line %d: no newline at the end (torn write?): %q", n, line)
			}
			return out, nil
		}
		if err != nil {
			return out, fmt.Errorf("line %d: %w", n, err)
		}
		e, err := parseLedgerLine(strings.TrimSuffix(line, "\n"))
		if err != nil {
			return out, fmt.Errorf("line %d: %w", n, err)
		}
		out = append(out, e)
	}
}

func parseLedgerLine(line string) (LedgerEntry, error) {
	var e LedgerEntry
	f := strings.Split(line, "\t")
	if len(f) != 4 {
		return e, fmt.Errorf("%d tab-separated fields, want 4 (step, policy version, pair id, outcome): %q", len(f), line)
	}
	step, err := strconv.Atoi(f[0])
	if err != nil || step < 0 {
		return e, fmt.Errorf("step %q is not a non-negative integer", f[0])
	}
	version, err := strconv.ParseInt(f[1], 10, 64)
	if err != nil || version < 0 {
		return e, fmt.Errorf("policy version %q is not a non-negative integer", f[1])
	}
	id := f[2]
	if strings.HasPrefix(id, `"`) {
		if id, err = strconv.Unquote(id); err != nil {
			return e, fmt.Errorf("pair id %s: %w", f[2], err)
		}
	}
	if id == "" {
		return e, errors.New("empty pair id")
	}
	if f[3] != OutcomeApplied && (!strings.HasPrefix(f[3], droppedPrefix) || f[3] == droppedPrefix) {
		return e, fmt.Errorf("outcome %q is neither %q nor %q<reason>", f[3], OutcomeApplied, droppedPrefix)
	}
	return LedgerEntry{Step: step, PolicyVersion: version, PairID: id, Outcome: f[3]}, nil
}

// ledger appends to an output directory's pair ledger.
type ledger struct {
	f    *os.File
	size int64
}

// openLedger opens out's pair ledger for appending, first cutting it back to what the
// checkpoint being resumed from (resumed: st is its state) covers:
//   - a checkpoint that records LedgerBytes: truncate the ledger to that length. A ledger
//     shorter than that (deleted or cut by hand) is logged and appended to as it is.
//   - no checkpoint, or one written before the ledger existed (no ledger_bytes): nothing
//     vouches for any line of an existing ledger. Lines written after such a checkpoint
//     belong to steps a crash undid, but after a downgrade they could also be history, so a
//     non-empty ledger is renamed aside (pairs_ledger.tsv.unverified-<UTC time>), not
//     deleted, and a new one starts; it names the pairs consumed from this point on.
func openLedger(out string, st State, resumed bool, log *slog.Logger) (*ledger, error) {
	path := LedgerPath(out)
	if err := os.MkdirAll(out, 0o755); err != nil {
		return nil, fmt.Errorf("pair ledger: %w", err)
	}
	var size int64
	if fi, err := os.Stat(path); err == nil {
		size = fi.Size()
	} else if !os.IsNotExist(err) {
		return nil, fmt.Errorf("pair ledger: %w", err)
	}
	switch {
	case resumed && st.ledgerRecorded:
		if size > st.LedgerBytes {
			if err := os.Truncate(path, st.LedgerBytes); err != nil {
				return nil, fmt.Errorf("pair ledger: cut back to the checkpoint's %d bytes: %w", st.LedgerBytes, err)
			}
			log.Info("pair ledger cut back to the checkpoint", "bytes", st.LedgerBytes, "dropped_bytes", size-st.LedgerBytes, "step", st.GlobalStep)
		} else if size < st.LedgerBytes {
			log.Warn("pair ledger is shorter than the checkpoint records: it misses pairs; appending to it as it is",
				"path", path, "bytes", size, "checkpoint_bytes", st.LedgerBytes, "step", st.GlobalStep)
		}
	case size > 0:
		aside := path + ".unverified-" + time.Now().UTC().Format("20060102T150405.000000000Z")
		if err := os.Rename(path, aside); err != nil {
			return nil, fmt.Errorf("pair ledger: %w", err)
		}
		why := "there is no checkpoint"
		if resumed {
			why = "the checkpoint predates the ledger"
		}
		log.Warn("pair ledger moved aside: "+why+", so none of its lines is known to be in the weights; a new ledger starts",
			"moved_to", aside, "step", st.GlobalStep)
	}
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("pair ledger: %w", err)
	}
	fi, err := f.Stat()
	if err == nil {
		err = f.Sync()
	}
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("pair ledger: %w", err)
	}
	if err := atomicfile.SyncDir(out); err != nil {
		f.Close()
		return nil, fmt.Errorf("pair ledger: %w", err)
	}
	return &ledger{f: f, size: fi.Size()}, nil
}

// append writes entries and fsyncs them; l.size is then the ledger's length.
func (l *ledger) append(entries []LedgerEntry) error {
	if len(entries) == 0 {
		return nil
	}
	var b strings.Builder
	for _, e := range entries {
		b.WriteString(e.line())
	}
	n, err := l.f.WriteString(b.String())
	l.size += int64(n)
	if err == nil {
		err = l.f.Sync()
	}
	if err != nil {
		return fmt.Errorf("pair ledger: %w", err)
	}
	return nil
}

func (l *ledger) close() error { return l.f.Close() }
