package experiment

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/autoif/autoif/natsbus"
	"github.com/autoif/autoif/orchestrator"
	"github.com/autoif/autoif/proto"
	"github.com/autoif/autoif/reward"
	"github.com/autoif/autoif/rollout"
	"github.com/autoif/autoif/trainer"
)

// clusterFault is what befalls a replicated run once its trainer has taken a few steps.
type clusterFault int

const (
	// killPairsLeader SIGKILLs the member (a process of its own) leading the pair stream and
	// starts it again on its store a few seconds later.
	killPairsLeader clusterFault = iota
	// partitionTrainer cuts the trainer's connection to the cluster, and any new one, for
	// a few seconds.
	partitionTrainer
)

// The online loop on tinyIF over a three-member NATS cluster with every stream, the policy
// bucket and the checkpoint store replicated three times, through a fault in the middle of
// the run. It still stops at its step budget, and the trainer's pair ledger against the pair
// stream shows no pair lost and none trained twice.
func TestReplicatedRunLosesNoPairThroughFaults(t *testing.T) {
	if testing.Short() {
		t.Skip("runs a three-member NATS cluster, trains a model and starts Python reward workers")
	}
	if _, err := exec.LookPath("python3"); err != nil {
		t.Skip("python3 is needed for the reward sandbox")
	}
	modelDir := filepath.Join(t.TempDir(), "policy")
	if _, err := initTinyModel(modelDir, ModelShape{Layers: 1, Hidden: 32, Heads: 2, Intermediate: 64, MaxPositions: 256}, 3); err != nil {
		t.Fatal(err)
	}
	t.Run("the pair stream's leader dies and comes back", func(t *testing.T) {
		runReplicatedLoop(t, modelDir, killPairsLeader)
	})
	t.Run("the trainer is partitioned from the cluster", func(t *testing.T) {
		runReplicatedLoop(t, modelDir, partitionTrainer)
	})
}

func runReplicatedLoop(t *testing.T, modelDir string, fault clusterFault) {
	const steps = 6
	// A deadline, not a context deadline: the JetStream client bounds a request by its
	// context's deadline when there is one, else by its own 5 s, and a run's components
	// have none.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	// A kill used to cost up to 2.5 minutes: the policy's object put waited out its 2-minute
	// attempt for a chunk ack lost with the killed member. Its chunks' acks now time out in
	// 5 s (trainer.Publish); a pull parked on the member is noticed within 10 s (two missed
	// heartbeats). A kill run takes 15-18 s on the 2-core VM; the bound stays generous for
	// slow CI machines.
	stopAt := time.AfterFunc(5*time.Minute, cancel)
	defer stopAt.Stop()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	var out io.Writer = io.Discard
	if testing.Verbose() {
		log = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
		out = os.Stdout
	}
	var memberLogs io.Writer = io.Discard
	if testing.Verbose() {
		memberLogs = os.Stderr
	}
	lc := startProcCluster(ctx, t, 3, t.TempDir(), memberLogs)
	run, err := proto.NewRun("cluster")
	if err != nil {
		t.Fatal(err)
	}
	observer, err := natsbus.Connect(ctx, natsbus.Options{URL: lc.URL(), Name: "observer", Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	defer observer.Close()
	res, err := natsbus.EnsureRun(ctx, observer.JS, run, natsbus.RunOptions{Replicas: 3})
	if err != nil {
		t.Fatal(err)
	}

	runDir := t.TempDir()
	cfg := orchestrator.DefaultConfig()
	cfg.RunDir, cfg.Prompts = runDir, []string{"tinyif"}
	cfg.K, cfg.Mode, cfg.MaxInFlight, cfg.PairsPerVersion = 4, orchestrator.ModeAsync, 8, 4
	cfg.MaxLag, cfg.MaxSteps, cfg.Seed = 2, steps, 1
	set, err := orchestrator.Prepare(cfg)
	if err != nil {
		t.Fatal(err)
	}
	topts := trainer.DefaultOptions()
	topts.BatchSize, topts.Optim.LR = 4, 1e-3
	trainerDir := filepath.Join(runDir, "trainer")

	var proxy *tcpProxy
	reconnects := func() int64 { return 0 } // the proxied trainer's, once it connects
	var runTrainer func(ctx context.Context, _ string, _ *natsbus.RunResources, so trainer.StreamOptions) error
	if fault == partitionTrainer {
		var targets []string
		for i := range lc.Size() {
			targets = append(targets, strings.TrimPrefix(lc.ClientURL(i), "nats://"))
		}
		proxy = startProxy(t, targets)
		// The trainer reaches the cluster only through the proxy: the members the cluster
		// announces would bypass the partition.
		runTrainer = func(ctx context.Context, _ string, _ *natsbus.RunResources, so trainer.StreamOptions) error {
			bus, err := natsbus.Connect(ctx, natsbus.Options{URL: "nats://" + proxy.Addr(), Name: "autoif trainer (proxied)", IgnoreDiscovered: true, Logger: log})
			if err != nil {
				return err
			}
			defer bus.Close()
			res, err := natsbus.EnsureRun(ctx, bus.JS, run, natsbus.RunOptions{})
			if err != nil {
				return err
			}
			reconnects = func() int64 { return natsbus.Reconnects(bus.NC) }
			return TrainStream(ctx, bus.JS, res, so)
		}
	}

	// The fault strikes once the trainer has taken two steps, from its own goroutine, so the
	// loop runs on through it.
	var faultOnce sync.Once
	var faultWG sync.WaitGroup
	faultErr := make(chan error, 1)
	strike := func() {
		defer faultWG.Done()
		switch fault {
		case killPairsLeader:
			info, err := res.Pairs.Info(ctx)
			if err != nil {
				faultErr <- err
				return
			}
			i := lc.Member(info.Cluster.Leader)
			if i < 0 {
				faultErr <- errors.New("pair stream leader " + info.Cluster.Leader + " is no member")
				return
			}
			t.Logf("SIGKILL to %s, the pair stream's leader", info.Cluster.Leader)
			lc.Kill(i)
			time.Sleep(4 * time.Second)
			t.Logf("starting %s again", info.Cluster.Leader)
			faultErr <- lc.Start(i)
		case partitionTrainer:
			t.Log("partitioning the trainer from the cluster for 4s")
			proxy.Partition(4 * time.Second)
			faultErr <- nil
		}
	}
	var faultAtVersion int64
	loop, err := NewLoop(LoopOptions{
		NATS: natsbus.Options{URL: lc.URL(), Logger: log}, Run: run,
		Set: set, Config: cfg, Orchestrator: orchestrator.Options{Out: out, Logger: log},
		RewardMode: RewardService, Reward: reward.Options{Workers: 1, Logger: log},
		RolloutWorkers: 1,
		Rollout: rollout.Options{
			K: cfg.K, Temperature: 1, MaxNewTokens: 8, PromptsPerStep: 4, Seed: 1, ChatTemplate: false, ModelDir: modelDir,
			CacheDir: filepath.Join(runDir, "rollout-cache"), Threads: 1, Logger: log,
		},
		Trainer: &trainer.StreamOptions{
			ModelDir: modelDir, OutDir: trainerDir, KeepLast: 2, Trainer: topts,
			PairsPerStep: 4, MaxPolicyLag: cfg.TrainerMaxLag(), Steps: steps, Logger: log,
		},
		OnTrainerStep: func(m trainer.Metrics, _ trainer.StreamStep, _ time.Time) {
			if m.Step == 2 {
				faultOnce.Do(func() {
					faultAtVersion = int64(m.Step)
					faultWG.Add(1)
					go strike()
				})
			}
		},
		RunTrainer: runTrainer,
		Logger:     log,
	})
	if err != nil {
		t.Fatal(err)
	}
	sum, err := loop.Run(ctx)
	faultWG.Wait()
	if err != nil {
		t.Fatalf("run: %v", err)
	}
	if faultAtVersion == 0 {
		t.Fatal("the trainer never reached step 2: no fault struck")
	}
	if err := <-faultErr; err != nil {
		t.Fatalf("fault: %v", err)
	}
	if sum.Reason != "steps" || sum.Version != steps {
		t.Fatalf("summary %+v, want stopped by its %d steps", sum, steps)
	}

	check, err := trainer.CheckLedger(ctx, res, trainer.LedgerPath(trainerDir), "trainer")
	if err != nil {
		t.Fatal(err)
	}
	t.Log(check)
	for _, id := range check.Lost {
		t.Errorf("pair %s was acknowledged but is not in the ledger: lost", id)
	}
	for _, id := range check.TrainedTwice {
		t.Errorf("pair %s is in the ledger twice: trained twice", id)
	}
	for _, id := range check.StoredTwice {
		t.Errorf("pair %s is stored twice in the pair stream: a retried publish was not recognised", id)
	}
	for _, id := range check.Unknown {
		t.Errorf("the ledger names pair %s, which no rollout worker published", id)
	}
	if check.LastStep != steps || check.AckFloor == 0 || check.Consumed < steps*4 {
		t.Errorf("%s: want %d steps of 4 pairs and acknowledged batches", check, steps)
	}
	if fault == partitionTrainer && reconnects() == 0 {
		t.Error("the trainer's connection never reconnected: the partition did not cut it")
	}
}

// tcpProxy forwards TCP connections to the first of its targets that answers, and can cut
// every connection and refuse new ones for a while: a network partition between its clients
// and the targets.
type tcpProxy struct {
	ln      net.Listener
	targets []string
	mu      sync.Mutex
	conns   map[net.Conn]struct{}
	cut     time.Time
}

func startProxy(t *testing.T, targets []string) *tcpProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &tcpProxy{ln: ln, targets: targets, conns: map[net.Conn]struct{}{}}
	go p.serve()
	t.Cleanup(func() {
		ln.Close()
		p.Partition(0)
	})
	return p
}

func (p *tcpProxy) Addr() string { return p.ln.Addr().String() }

func (p *tcpProxy) serve() {
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.mu.Lock()
		cut := time.Now().Before(p.cut)
		p.mu.Unlock()
		if cut {
			c.Close()
			continue
		}
		go p.forward(c)
	}
}

func (p *tcpProxy) forward(c net.Conn) {
	var up net.Conn
	for _, target := range p.targets {
		var err error
		if up, err = net.DialTimeout("tcp", target, time.Second); err == nil {
			break
		}
	}
	if up == nil {
		c.Close()
		return
	}
	p.mu.Lock()
	p.conns[c], p.conns[up] = struct{}{}, struct{}{}
	p.mu.Unlock()
	done := make(chan struct{}, 2)
	pipe := func(dst, src net.Conn) {
		_, _ = io.Copy(dst, src)
		done <- struct{}{}
	}
	go pipe(up, c)
	go pipe(c, up)
	<-done
	c.Close()
	up.Close()
	p.mu.Lock()
	delete(p.conns, c)
	delete(p.conns, up)
	p.mu.Unlock()
}

// Partition drops every forwarded connection now and refuses new ones for d.
func (p *tcpProxy) Partition(d time.Duration) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.cut = time.Now().Add(d)
	for c := range p.conns {
		c.Close()
	}
}
