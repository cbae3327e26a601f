package natsbus

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
)

// ClusterInfo is what the connected server says about its cluster.
type ClusterInfo struct {
	// Name is the cluster's name ("" for a lone server).
	Name string
	// Servers are the client URLs of the members routed to the connected server now, itself
	// included: a member that is down is not among them.
	Servers []string
}

// Size is the number of live members (1 for a lone server).
func (ci ClusterInfo) Size() int { return max(len(ci.Servers), 1) }

// Cluster asks the server nc is connected to about its cluster. The client library keeps the
// members it learns of, dead seeds included, so the server's own INFO greeting, which lists
// the members routed to it now, is read on a second, short-lived TCP connection.
func Cluster(ctx context.Context, nc *nats.Conn) (ClusterInfo, error) {
	addr := nc.ConnectedAddr()
	if addr == "" {
		return ClusterInfo{}, errors.New("nats: not connected")
	}
	d := net.Dialer{Timeout: 5 * time.Second}
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return ClusterInfo{}, fmt.Errorf("nats cluster info from %s: %w", addr, err)
	}
	defer conn.Close()
	deadline := time.Now().Add(5 * time.Second)
	if dl, ok := ctx.Deadline(); ok && dl.Before(deadline) {
		deadline = dl
	}
	_ = conn.SetDeadline(deadline)
	line, err := bufio.NewReaderSize(conn, 64<<10).ReadString('\n')
	if err != nil {
		return ClusterInfo{}, fmt.Errorf("nats cluster info from %s: %w", addr, err)
	}
	payload, ok := strings.CutPrefix(strings.TrimSpace(line), "INFO ")
	if !ok {
		return ClusterInfo{}, fmt.Errorf("nats cluster info from %s: greeting %.40q is not INFO", addr, line)
	}
	var info struct {
		Cluster     string   `json:"cluster"`
		ConnectURLs []string `json:"connect_urls"`
	}
	if err := json.Unmarshal([]byte(payload), &info); err != nil {
		return ClusterInfo{}, fmt.Errorf("nats cluster info from %s: %w", addr, err)
	}
	ci := ClusterInfo{Name: info.Cluster}
	if ci.Name != "" {
		ci.Servers = info.ConnectURLs
	}
	return ci, nil
}

// checkReplicas refuses a replica count the cluster cannot hold, before anything is
// created, so a run never starts with some streams made and others refused.
func checkReplicas(ctx context.Context, nc *nats.Conn, replicas int) error {
	if replicas <= 1 {
		return nil
	}
	if replicas > 5 {
		return fmt.Errorf("%d replicas: JetStream keeps at most 5", replicas)
	}
	ci, err := Cluster(ctx, nc)
	if err != nil {
		return fmt.Errorf("%d replicas: %w", replicas, err)
	}
	if ci.Name == "" {
		return fmt.Errorf("%d replicas: the NATS server at %s is not in a cluster (start %d members with autoif nats serve --cluster-name ...)", replicas, nc.ConnectedUrlRedacted(), replicas)
	}
	if ci.Size() < replicas {
		return fmt.Errorf("%d replicas: NATS cluster %s has %d live server(s) (%s), fewer than the replicas", replicas, ci.Name, ci.Size(), strings.Join(ci.Servers, ", "))
	}
	return nil
}
