package natsbus

import (
	"context"
	"fmt"
	"net"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// LocalCluster is a NATS cluster of embedded servers on loopback, for tests, benchmarks
// and demonstrations of replicated runs. Its members keep their ports and stores, so one
// that was stopped can be started again as the same member.
type LocalCluster struct {
	Name string
	mu   sync.Mutex
	opts []ServerOptions
	srvs []*server.Server
}

// StartLocalCluster starts n members named <name>-0 … with stores under dir, and waits
// until they are routed to each other and JetStream has a meta leader.
func StartLocalCluster(ctx context.Context, name string, n int, dir string) (*LocalCluster, error) {
	if n < 1 {
		return nil, fmt.Errorf("local cluster: %d members", n)
	}
	ports, err := freePorts(2 * n)
	if err != nil {
		return nil, fmt.Errorf("local cluster: %w", err)
	}
	lc := &LocalCluster{Name: name, srvs: make([]*server.Server, n)}
	var routes []string
	for i := range n {
		routes = append(routes, fmt.Sprintf("nats://127.0.0.1:%d", ports[n+i]))
	}
	for i := range n {
		lc.opts = append(lc.opts, ServerOptions{
			Host: "127.0.0.1", Port: ports[i], StoreDir: filepath.Join(dir, fmt.Sprintf("%s-%d", name, i)),
			ServerName: fmt.Sprintf("%s-%d", name, i), ClusterName: name, ClusterPort: ports[n+i], Routes: routes,
		})
	}
	for i := range n {
		if err := lc.Start(i); err != nil {
			lc.Shutdown()
			return nil, err
		}
	}
	if err := lc.WaitReady(ctx); err != nil {
		lc.Shutdown()
		return nil, err
	}
	return lc, nil
}

// freePorts reserves n distinct loopback ports the kernel says are free now.
func freePorts(n int) ([]int, error) {
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	var ports []int
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		ls = append(ls, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

// Start starts member i (again) on its ports and store. It does not wait for the cluster.
func (lc *LocalCluster) Start(i int) error {
	lc.mu.Lock()
	defer lc.mu.Unlock()
	if lc.srvs[i] != nil {
		return fmt.Errorf("local cluster: member %d is running", i)
	}
	s, err := StartServer(lc.opts[i])
	if err != nil {
		return fmt.Errorf("local cluster member %d: %w", i, err)
	}
	lc.srvs[i] = s
	return nil
}

// Stop shuts member i down at once: its clients and routes drop as if the host died (the
// store stays on disk for Start).
func (lc *LocalCluster) Stop(i int) {
	lc.mu.Lock()
	s := lc.srvs[i]
	lc.srvs[i] = nil
	lc.mu.Unlock()
	if s != nil {
		s.Shutdown()
		s.WaitForShutdown()
	}
}

// Shutdown stops every member.
func (lc *LocalCluster) Shutdown() {
	for i := range lc.srvs {
		lc.Stop(i)
	}
}

// Server is member i, nil while it is stopped.
func (lc *LocalCluster) Server(i int) *server.Server {
	lc.mu.Lock()
	defer lc.mu.Unlock()
	return lc.srvs[i]
}

// Size is the number of members, running or not.
func (lc *LocalCluster) Size() int { return len(lc.opts) }

// ClientURL is member i's client URL, whether it runs or not.
func (lc *LocalCluster) ClientURL(i int) string {
	return fmt.Sprintf("nats://127.0.0.1:%d", lc.opts[i].Port)
}

// URL lists every member's client URL, comma-separated, as Options.URL takes it.
func (lc *LocalCluster) URL() string {
	urls := make([]string, len(lc.opts))
	for i := range lc.opts {
		urls[i] = lc.ClientURL(i)
	}
	return strings.Join(urls, ",")
}

// Member is the index of the running member named name, or -1.
func (lc *LocalCluster) Member(name string) int {
	for i, o := range lc.opts {
		if o.ServerName == name {
			return i
		}
	}
	return -1
}

// WaitReady waits until JetStream has a meta leader that sees every running member as a
// current peer.
func (lc *LocalCluster) WaitReady(ctx context.Context) error {
	for {
		lc.mu.Lock()
		var running []*server.Server
		for _, s := range lc.srvs {
			if s != nil {
				running = append(running, s)
			}
		}
		lc.mu.Unlock()
		// Only the meta leader knows which peers are current.
		routed, leader := false, false
		for _, s := range running {
			if s.JetStreamIsLeader() {
				leader = true
				routed = len(s.JetStreamClusterPeers()) >= len(running)
			}
		}
		if routed && leader {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("local cluster %s: not ready (routed %v, meta leader %v): %w", lc.Name, routed, leader, ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
}
