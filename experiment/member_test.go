package experiment

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/autoif/autoif/natsbus"
)

// memberEnv makes this test binary a NATS cluster member: the value is its ServerOptions as
// JSON. A member is a process of its own, so a test can SIGKILL it as a host would die.
const memberEnv = "AUTOIF_TEST_NATS_MEMBER"

func TestMain(m *testing.M) {
	if spec := os.Getenv(memberEnv); spec != "" {
		os.Exit(serveMember(spec))
	}
	os.Exit(m.Run())
}

func serveMember(spec string) int {
	var o natsbus.ServerOptions
	if err := json.Unmarshal([]byte(spec), &o); err != nil {
		fmt.Fprintln(os.Stderr, "member options:", err)
		return 2
	}
	s, err := natsbus.StartServer(o)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	fmt.Println("ready")
	s.WaitForShutdown()
	return 0
}

// procCluster is a NATS cluster on loopback whose members are processes (this test binary
// under memberEnv), each keeping its ports and file store across a kill and a restart.
type procCluster struct {
	t    *testing.T
	opts []natsbus.ServerOptions
	mu   sync.Mutex
	cmds []*exec.Cmd
	logs io.Writer
}

// startProcCluster starts n members and waits until each is routed to the others and
// JetStream answers.
func startProcCluster(ctx context.Context, t *testing.T, n int, dir string, logs io.Writer) *procCluster {
	t.Helper()
	var ls []net.Listener
	var ports []int
	for range 2 * n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		ls = append(ls, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	for _, l := range ls {
		l.Close()
	}
	pc := &procCluster{t: t, cmds: make([]*exec.Cmd, n), logs: logs}
	var routes []string
	for i := range n {
		routes = append(routes, fmt.Sprintf("nats://127.0.0.1:%d", ports[n+i]))
	}
	for i := range n {
		pc.opts = append(pc.opts, natsbus.ServerOptions{
			Host: "127.0.0.1", Port: ports[i], StoreDir: filepath.Join(dir, fmt.Sprintf("autoif-%d", i)),
			ServerName: fmt.Sprintf("autoif-%d", i), ClusterName: "autoif", ClusterPort: ports[n+i], Routes: routes,
		})
	}
	t.Cleanup(pc.Shutdown)
	for i := range n {
		if err := pc.Start(i); err != nil {
			t.Fatal(err)
		}
	}
	bus, err := natsbus.Connect(ctx, natsbus.Options{URL: pc.URL(), Name: "cluster check"})
	if err != nil {
		t.Fatal(err)
	}
	defer bus.Close()
	deadline := time.Now().Add(time.Minute)
	for {
		ci, err := natsbus.Cluster(ctx, bus.NC)
		if err == nil && ci.Size() >= n {
			if _, err = bus.JS.AccountInfo(ctx); err == nil {
				return pc
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("cluster of %d processes not ready: %v", n, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// Start starts member i's process (again) and waits until it listens.
func (pc *procCluster) Start(i int) error {
	spec, err := json.Marshal(pc.opts[i])
	if err != nil {
		return err
	}
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), memberEnv+"="+string(spec))
	cmd.Stderr = pc.logs
	out, err := cmd.StdoutPipe()
	if err != nil {
		return err
	}
	if err := cmd.Start(); err != nil {
		return err
	}
	line, _ := bufio.NewReader(out).ReadString('\n')
	if strings.TrimSpace(line) != "ready" {
		cmd.Process.Kill()
		cmd.Wait()
		return fmt.Errorf("member %d did not start", i)
	}
	go io.Copy(io.Discard, out)
	pc.mu.Lock()
	pc.cmds[i] = cmd
	pc.mu.Unlock()
	return nil
}

// Kill SIGKILLs member i and waits until it is gone: no shutdown, no leader hand-over, a
// store left as the process left it.
func (pc *procCluster) Kill(i int) {
	pc.mu.Lock()
	cmd := pc.cmds[i]
	pc.cmds[i] = nil
	pc.mu.Unlock()
	if cmd != nil {
		cmd.Process.Kill()
		cmd.Wait()
	}
}

// Shutdown kills every member.
func (pc *procCluster) Shutdown() {
	for i := range pc.opts {
		pc.Kill(i)
	}
}

func (pc *procCluster) Size() int { return len(pc.opts) }

func (pc *procCluster) ClientURL(i int) string {
	return fmt.Sprintf("nats://127.0.0.1:%d", pc.opts[i].Port)
}

// URL lists every member's client URL, as natsbus.Options.URL takes it.
func (pc *procCluster) URL() string {
	urls := make([]string, len(pc.opts))
	for i := range pc.opts {
		urls[i] = pc.ClientURL(i)
	}
	return strings.Join(urls, ",")
}

// Member is the index of the member named name, or -1.
func (pc *procCluster) Member(name string) int {
	for i, o := range pc.opts {
		if o.ServerName == name {
			return i
		}
	}
	return -1
}
