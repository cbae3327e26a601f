package trainer

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestLedgerLinesRoundTripAndMalformedLinesAreNamed(t *testing.T) {
	in := []LedgerEntry{
		{Step: 1, PolicyVersion: 1, PairID: "p-1", Outcome: OutcomeApplied},
		{Step: 2, PairID: "odd\tid\n", Outcome: droppedOutcome(SkipTooLong)},
		{Step: 2, PairID: `"quoted"`, Outcome: droppedOutcome("stale")},
	}
	var text strings.Builder
	for _, e := range in {
		text.WriteString(e.line())
	}
	out, err := ParseLedger(strings.NewReader(text.String()))
	if err != nil || len(out) != len(in) {
		t.Fatalf("parse: %v %v", out, err)
	}
	for i := range in {
		if out[i] != in[i] {
			t.Errorf("line %d: %+v, want %+v", i+1, out[i], in[i])
		}
	}
	if out[1].DropReason() != SkipTooLong || out[0].Applied() == false || out[1].Applied() {
		t.Errorf("outcomes: %+v", out)
	}
	for _, c := range []struct{ text, want string }{
		{"1\t1\tp\tapplied\n2\t1\tq\n", "line 2: 3 tab-separated fields"},
		{"x\t1\tp\tapplied\n", "line 1: step"},
		{"1\t-1\tp\tapplied\n", "line 1: policy version"},
		{"1\t1\tp\tapplied\n1\t1\tq\tdropped:\n", "line 2: outcome"},
		{"1\t1\t\tapplied\n", "line 1: empty pair id"},
		{"1\t1\tp\tapplied\n1\t1\tq\tappl", "line 2: no newline"},
	} {
		if _, err := ParseLedger(strings.NewReader(c.text)); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%q: error %v, want one with %q", c.text, err, c.want)
		}
	}
	path := filepath.Join(t.TempDir(), LedgerFile)
	os.WriteFile(path, []byte("1\t1\tp\tapplied\nbad\n"), 0o644)
	if _, err := ReadLedger(path); err == nil || !strings.Contains(err.Error(), path+": line 2:") {
		t.Errorf("ReadLedger: %v, want the path and line 2", err)
	}
}

// Resuming cuts the ledger back to the checkpoint's LedgerBytes; with no checkpoint, or one
// from before the ledger, an existing ledger is moved aside, not trusted and not deleted.
func TestOpenLedgerCutsBackToTheCheckpoint(t *testing.T) {
	const lines = "1\t1\ta\tapplied\n1\t1\tb\tapplied\n2\t2\tc\tapplied\n"
	for _, c := range []struct {
		name     string
		st       State
		resumed  bool
		wantSize int64
		aside    bool
	}{
		{"checkpoint", State{LedgerBytes: 28, ledgerRecorded: true}, true, 28, false}, // two lines
		{"checkpoint at zero", State{ledgerRecorded: true}, true, 0, false},
		{"ledger shorter than the checkpoint", State{LedgerBytes: 1000, ledgerRecorded: true}, true, int64(len(lines)), false},
		{"checkpoint before the ledger", State{GlobalStep: 5}, true, 0, true},
		{"no checkpoint", State{}, false, 0, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			out := t.TempDir()
			os.WriteFile(LedgerPath(out), []byte(lines), 0o644)
			l, err := openLedger(out, c.st, c.resumed, quietLogger())
			if err != nil {
				t.Fatal(err)
			}
			defer l.close()
			if fi, err := os.Stat(LedgerPath(out)); err != nil || fi.Size() != c.wantSize || l.size != c.wantSize {
				t.Errorf("ledger %v (%v), size %d; want %d bytes", fi, err, l.size, c.wantSize)
			}
			asides, _ := filepath.Glob(LedgerPath(out) + ".unverified-*")
			if c.aside != (len(asides) == 1) {
				t.Errorf("moved aside: %v, want %v", asides, c.aside)
			}
			if len(asides) == 1 {
				if data, _ := os.ReadFile(asides[0]); string(data) != lines {
					t.Errorf("moved-aside ledger holds %q", data)
				}
			}
			if err := l.append([]LedgerEntry{{Step: 9, PolicyVersion: 9, PairID: "z", Outcome: OutcomeApplied}}); err != nil {
				t.Fatal(err)
			}
			entries, err := ReadLedger(LedgerPath(out))
			if err != nil || entries[len(entries)-1].PairID != "z" {
				t.Errorf("after append: %v %v", entries, err)
			}
		})
	}
}

// A checkpoint records whether it knows the ledger's length: one written before the ledger
// existed has no ledger_bytes.
func TestLoadCheckpointTellsWhetherItRecordsLedgerBytes(t *testing.T) {
	tr, err := New(tinyWeights(t, tinyConfig(true, true, false), 8), DefaultOptions())
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(t.TempDir(), "ck")
	if err := tr.SaveCheckpoint(dir, State{LedgerBytes: 42}, ""); err != nil {
		t.Fatal(err)
	}
	st, err := tr.LoadCheckpoint(dir)
	if err != nil || !st.ledgerRecorded || st.LedgerBytes != 42 {
		t.Fatalf("new checkpoint: %+v %v", st, err)
	}
	path := filepath.Join(dir, stateFile)
	data, _ := os.ReadFile(path)
	old := strings.Replace(string(data), `"ledger_bytes": 42,`, "", 1)
	if old == string(data) {
		t.Fatalf("no ledger_bytes in %s", data)
	}
	os.WriteFile(path, []byte(old), 0o644)
	if st, err = tr.LoadCheckpoint(dir); err != nil || st.ledgerRecorded {
		t.Fatalf("old checkpoint: %+v %v", st, err)
	}
}
