package main

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/autoif/autoif/natsbus"
	"github.com/autoif/autoif/orchestrator"
	"github.com/autoif/autoif/proto"
	"github.com/autoif/autoif/trainer"
)

// child is one component running as its own autoif process (the test binary re-executed).
type child struct {
	t    *testing.T
	name string
	args []string
	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan error
	log  *os.File
}

func startChild(t *testing.T, name string, args ...string) *child {
	t.Helper()
	log, err := os.Create(filepath.Join(t.TempDir(), name+".log"))
	if err != nil {
		t.Fatal(err)
	}
	c := &child{t: t, name: name, args: args, log: log}
	c.start()
	t.Cleanup(func() {
		c.stop()
		log.Close()
		if t.Failed() {
			data, _ := os.ReadFile(log.Name())
			t.Logf("%s log:\n%s", name, data)
		}
	})
	return c
}

func (c *child) start() {
	c.mu.Lock()
	defer c.mu.Unlock()
	cmd := exec.Command(os.Args[0], c.args...)
	cmd.Env = append(os.Environ(), envBeAutoif+"=1")
	cmd.Stdout, cmd.Stderr = c.log, c.log
	if err := cmd.Start(); err != nil {
		c.t.Fatalf("start %s: %v", c.name, err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	c.cmd, c.done = cmd, done
}

// kill sends SIGKILL and waits for the process to be gone.
func (c *child) kill() {
	c.mu.Lock()
	defer c.mu.Unlock()
	_ = c.cmd.Process.Kill()
	<-c.done
}

// stop asks the process to finish (SIGINT) and waits, killing it if it takes too long.
func (c *child) stop() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.cmd.ProcessState != nil {
		return
	}
	_ = c.cmd.Process.Signal(os.Interrupt)
	select {
	case <-c.done:
	case <-time.After(20 * time.Second):
		_ = c.cmd.Process.Kill()
		<-c.done
	}
}

// exited waits for the process to end by itself.
func (c *child) exited(timeout time.Duration) error {
	c.mu.Lock()
	done := c.done
	c.mu.Unlock()
	select {
	case err := <-done:
		done <- err
		return err
	case <-time.After(timeout):
		return errors.New("still running")
	}
}

// A run whose trainer, rollout worker or reward worker is SIGKILLed mid-run and started again
// completes; the trainer's steps continue from its checkpoint; and, counted by pair id, no
// pair is published twice, none is trained twice and none published is lost. The last two are
// read from the trainer's pair ledger (pairs_ledger.tsv, as far as its last checkpoint's
// LedgerBytes): no id is in it twice; every message acknowledged to the trainer has all its
// pairs in it (applied, or dropped with a reason), and every message whose pairs are not all
// in it is still owed to the trainer's consumer (pending delivery or awaiting an ack); each of
// the steps applied pairs, into the version it published. The acks are checked too: none is
// ahead of the trainer's checkpoint.
func TestRunSurvivesSIGKILLOfAComponentProcess(t *testing.T) {
	if testing.Short() {
		t.Skip("starts processes, trains a model and runs Python reward workers")
	}
	if _, err := exec.LookPath("python3"); err != nil {
		t.Skip("python3 is needed for the reward sandbox")
	}
	const steps = 6
	modelDir := writeTinyPolicy(t)
	for _, victim := range []string{"trainer", "rollout", "reward"} {
		t.Run("kill "+victim, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			root := t.TempDir()
			bus, err := natsbus.Connect(ctx, natsbus.Options{StoreDir: filepath.Join(root, "jetstream")})
			if err != nil {
				t.Fatal(err)
			}
			defer bus.Close()
			run, err := proto.NewRun("kill-" + victim)
			if err != nil {
				t.Fatal(err)
			}
			res, err := natsbus.EnsureRun(ctx, bus.JS, run, natsbus.RunOptions{Memory: true})
			if err != nil {
				t.Fatal(err)
			}
			global := []string{"--nats", bus.URL(), "--run", run.ID, "--run-dir", root, "--log-level", "warn"}
			outDir := filepath.Join(root, "trainer")
			procs := map[string]*child{
				"reward": startChild(t, "reward", append(global, "reward", "serve", "--workers", "1", "--stats-interval", "0")...),
				"rollout": startChild(t, "rollout", append(global, "rollout", "--memory", "--model", modelDir, "--reward", "service",
					"--k", "4", "--max-new-tokens", "8", "--prompts-per-step", "4", "--seed", "7", "--ack-wait", "2s", "--threads", "1")...),
				"trainer": startChild(t, "trainer", append(global, "experiment", "trainer", "--memory", "--model", modelDir, "--out", outDir,
					"--steps", strconv.Itoa(steps), "--pairs-per-step", "4", "--batch-size", "4", "--lr", "1e-3", "--max-lag", "2", "--ack-wait", "2s")...),
			}

			cfg := orchestrator.DefaultConfig()
			cfg.RunDir, cfg.Prompts, cfg.Mode = filepath.Join(root, "run"), []string{"tinyif"}, orchestrator.ModeAsync
			cfg.K, cfg.MaxInFlight, cfg.PairsPerVersion, cfg.MaxSteps, cfg.MaxLag = 4, 8, 4, steps, 2
			set, err := orchestrator.Prepare(cfg)
			if err != nil {
				t.Fatal(err)
			}
			orc, err := orchestrator.New(bus.JS, res, set, cfg, orchestrator.Options{Out: io.Discard,
				Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), PollInterval: 50 * time.Millisecond, SyncStall: 5 * time.Second})
			if err != nil {
				t.Fatal(err)
			}
			// Kill the victim once version 2 is out, then start it again.
			killed := make(chan int64, 1)
			go func() {
				for ctx.Err() == nil {
					if v, err := policyVersion(ctx, res.Policy); err == nil && v >= 2 {
						procs[victim].kill()
						killed <- v
						procs[victim].start()
						return
					}
					time.Sleep(50 * time.Millisecond)
				}
			}()
			sum, err := orc.Run(ctx)
			if err != nil {
				t.Fatal(err)
			}
			var killedAt int64 = -1
			select {
			case killedAt = <-killed:
			default:
			}
			if sum.Reason != "steps" || sum.Version != steps || killedAt < 0 || killedAt >= steps {
				t.Fatalf("summary %+v, victim killed at version %d: want the run to reach %d steps after a kill mid-run", sum, killedAt, steps)
			}
			if err := procs["trainer"].exited(20 * time.Second); err != nil {
				t.Fatalf("trainer did not finish its %d steps: %v", steps, err)
			}
			for _, name := range []string{"rollout", "reward"} {
				procs[name].stop()
			}

			// No pair is published twice.
			info, err := res.Pairs.Info(ctx)
			if err != nil {
				t.Fatal(err)
			}
			ids := map[string]uint64{}
			rowsBySeq := map[uint64][]string{}
			for seq := info.State.FirstSeq; seq <= info.State.LastSeq; seq++ {
				msg, err := res.Pairs.GetMsg(ctx, seq)
				if err != nil {
					t.Fatalf("pairs seq %d: %v", seq, err)
				}
				rows, err := proto.Pairs.DecodeMsg(msg.Header, msg.Data)
				if err != nil {
					t.Fatalf("pairs seq %d: %v", seq, err)
				}
				for _, r := range rows {
					if prev, dup := ids[r.PairID]; dup {
						t.Fatalf("pair %s published twice (seq %d and %d)", r.PairID, prev, seq)
					}
					ids[r.PairID] = seq
					rowsBySeq[seq] = append(rowsBySeq[seq], r.PairID)
				}
			}
			// The trainer resumed from its checkpoints: its last one is the last step, published
			// as that version.
			st := lastTrainerState(t, outDir)
			if st.GlobalStep != steps || st.PolicyVersion != steps {
				t.Fatalf("trainer state step %d version %d, want %d", st.GlobalStep, st.PolicyVersion, steps)
			}
			// Nothing is acknowledged that the trainer's checkpoint does not hold (an ack ahead of
			// the checkpoint is a pair a crash would lose), and everything else is still owed to
			// the trainer: pending delivery or awaiting redelivery.
			cons, err := bus.JS.Consumer(ctx, res.Pairs.CachedInfo().Config.Name, "trainer")
			if err != nil {
				t.Fatal(err)
			}
			ci, err := cons.Info(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if ci.AckFloor.Stream > st.StreamSeq {
				t.Fatalf("trainer consumer acknowledged up to seq %d, its checkpoint covers only %d", ci.AckFloor.Stream, st.StreamSeq)
			}
			// Messages no longer owed to the trainer (neither pending delivery nor awaiting an
			// ack) must all lie within what its checkpoint covers.
			if done := info.State.LastSeq - ci.NumPending - uint64(ci.NumAckPending); done > st.StreamSeq {
				t.Fatalf("%d pair messages settled, the trainer's checkpoint covers %d: pairs lost", done, st.StreamSeq)
			}

			// Counted by pair id: the trainer's ledger as far as its last checkpoint covers it (all
			// of it: the trainer ended with that checkpoint).
			ledgerPath := trainer.LedgerPath(outDir)
			if fi, err := os.Stat(ledgerPath); err != nil || fi.Size() != st.LedgerBytes {
				t.Fatalf("pair ledger %s: %v (%v); the trainer's last checkpoint covers %d bytes of it", ledgerPath, fi, err, st.LedgerBytes)
			}
			entries, err := trainer.ReadLedger(ledgerPath)
			if err != nil {
				t.Fatal(err)
			}
			ledger := map[string]trainer.LedgerEntry{}
			applied := map[int]int{} // by step
			offered := map[int]int{} // by step: applied or refused by the trainer's input check
			for _, e := range entries {
				if prev, dup := ledger[e.PairID]; dup {
					t.Fatalf("pair %s trained or dropped twice: ledger lines %+v and %+v", e.PairID, prev, e)
				}
				ledger[e.PairID] = e
				seq, ok := ids[e.PairID]
				if !ok {
					t.Fatalf("ledger line %+v names a pair never published", e)
				}
				if e.DropReason() != "stale" {
					offered[e.Step]++
				}
				if e.Applied() {
					applied[e.Step]++
					if seq > st.StreamSeq || e.Step < 1 || e.Step > steps || e.PolicyVersion != int64(e.Step) {
						t.Fatalf("ledger line %+v (stream seq %d): want steps 1-%d, each published as its own version, from seqs up to the checkpoint's %d", e, seq, steps, st.StreamSeq)
					}
				}
			}
			for _, id := range st.PendingPairIDs {
				if _, ok := ledger[id]; !ok {
					t.Fatalf("pair %s is pending in the last checkpoint but not in the ledger", id)
				}
			}
			var unrecorded uint64 // messages some of whose pairs are not in the ledger
			for seq, rows := range rowsBySeq {
				for _, id := range rows {
					if _, ok := ledger[id]; !ok {
						if seq <= ci.AckFloor.Stream {
							t.Fatalf("pair %s (seq %d) was acknowledged (ack floor %d) but is not in the trainer's ledger: lost", id, seq, ci.AckFloor.Stream)
						}
						unrecorded++
						break
					}
				}
			}
			// Redeliveries come out of order, so a message below st.StreamSeq may still be owed:
			// what must hold is that every message the ledger lacks is one the consumer still owes.
			if owed := ci.NumPending + uint64(ci.NumAckPending); unrecorded > owed {
				t.Fatalf("%d pair messages are not (wholly) in the trainer's ledger, only %d are still owed to it: pairs lost", unrecorded, owed)
			}
			for s := 1; s <= steps; s++ {
				if applied[s] < 1 || offered[s] < 4 {
					t.Fatalf("step %d applied %d pairs of %d offered; want every step to take --pairs-per-step 4 (ledger %v)", s, applied[s], offered[s], entries)
				}
			}
			nApplied := 0
			for _, n := range applied {
				nApplied += n
			}
			t.Logf("killed %s at version %d; %d pairs published, %d in the ledger (%d applied over %d steps), %d messages not in it and still owed; trainer covered seq %d of %d",
				victim, killedAt, len(ids), len(entries), nApplied, steps, unrecorded, st.StreamSeq, info.State.LastSeq)
		})
	}
}

func policyVersion(ctx context.Context, kv jetstream.KeyValue) (int64, error) {
	e, err := kv.Get(ctx, proto.PolicyCurrentKey)
	if err != nil {
		return -1, err
	}
	return strconv.ParseInt(string(e.Value()), 10, 64)
}

func lastTrainerState(t *testing.T, out string) trainer.State {
	t.Helper()
	dirs, err := trainer.Checkpoints(out)
	if err != nil || len(dirs) == 0 {
		t.Fatalf("trainer checkpoints in %s: %v %v", out, dirs, err)
	}
	data, err := os.ReadFile(filepath.Join(dirs[len(dirs)-1], "trainer_state.json"))
	if err != nil {
		t.Fatal(err)
	}
	var st trainer.State
	if err := json.Unmarshal(data, &st); err != nil {
		t.Fatal(err)
	}
	return st
}
