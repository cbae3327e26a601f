package natsbus

import (
	"errors"
	"fmt"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// DefaultMaxPayload is the largest message the embedded server accepts. A batch of 1,024
// preference pairs with 256+256 token ids and ~1 KB of text each is ~3.2 MB; the NATS default
// of 1 MB would force tiny batches.
const DefaultMaxPayload = 16 << 20

// ServerOptions configure an embedded or standalone nats-server.
type ServerOptions struct {
	// Host to listen on. Default 127.0.0.1: a run's bus is private unless asked otherwise.
	Host string
	// Port to listen on; 0 picks a free port.
	Port int
	// StoreDir holds JetStream's file store. Required.
	StoreDir string
	// MaxPayload is the largest message accepted, in bytes (default DefaultMaxPayload, at
	// most 64 MiB, the server's own limit).
	MaxPayload int32
	// User and Password, or Token, require clients to authenticate.
	User, Password string
	Token          string
	// TLSCert and TLSKey (PEM files) make the server require TLS.
	TLSCert, TLSKey string
	// HTTPPort serves the monitoring endpoints (/varz, /jsz) when > 0.
	HTTPPort int
	// ServerName names the server in logs and cluster views.
	ServerName string
	// Logs makes the server log through its own logger to stderr.
	Logs bool

	// ClusterName, with ClusterPort, makes the server a member of a NATS cluster whose
	// JetStream replicates streams across members (Replicas in RunOptions). Every member
	// needs a distinct ServerName.
	ClusterName string
	// ClusterHost is the interface for routes from other members (default Host).
	ClusterHost string
	// ClusterPort listens for routes; -1 picks a free port.
	ClusterPort int
	// Routes are the other members' route URLs (nats://HOST:CLUSTER_PORT). A member may list
	// all of them, itself included; routes to itself are ignored.
	Routes []string
}

// StartServer starts a nats-server with JetStream and waits until it accepts connections.
func StartServer(o ServerOptions) (*server.Server, error) {
	if o.StoreDir == "" {
		return nil, errors.New("nats server: a JetStream store directory is required")
	}
	if o.Host == "" {
		o.Host = "127.0.0.1"
	}
	if o.Port == 0 {
		o.Port = server.RANDOM_PORT
	}
	if o.MaxPayload == 0 {
		o.MaxPayload = DefaultMaxPayload
	}
	if o.MaxPayload < 0 || o.MaxPayload > 64<<20 {
		return nil, fmt.Errorf("nats server: max payload %d: want 1 byte to 64 MiB", o.MaxPayload)
	}
	if (o.User == "") != (o.Password == "") {
		return nil, errors.New("nats server: user and password go together")
	}
	if o.Token != "" && o.User != "" {
		return nil, errors.New("nats server: use a token or a user and password, not both")
	}
	opts := &server.Options{
		ServerName: o.ServerName,
		Host:       o.Host,
		Port:       o.Port,
		JetStream:  true,
		StoreDir:   o.StoreDir,
		MaxPayload: o.MaxPayload,
		// Pending data per client must hold a few max-size messages.
		MaxPending:    int64(o.MaxPayload) * 8,
		Username:      o.User,
		Password:      o.Password,
		Authorization: o.Token,
		HTTPPort:      o.HTTPPort,
		HTTPHost:      o.Host,
		NoSigs:        true,
		NoLog:         !o.Logs,
	}
	if o.HTTPPort == 0 {
		opts.HTTPPort = 0
	}
	if err := clusterOptions(o, opts); err != nil {
		return nil, err
	}
	if o.TLSCert != "" || o.TLSKey != "" {
		tc, err := server.GenTLSConfig(&server.TLSConfigOpts{CertFile: o.TLSCert, KeyFile: o.TLSKey})
		if err != nil {
			return nil, fmt.Errorf("nats server: tls: %w", err)
		}
		opts.TLSConfig = tc
		opts.TLS = true
	}
	// Only now that the options hold: a refused server leaves no store directory behind.
	if err := os.MkdirAll(o.StoreDir, 0o755); err != nil {
		return nil, fmt.Errorf("nats server: store directory: %w", err)
	}
	s, err := server.NewServer(opts)
	if err != nil {
		return nil, fmt.Errorf("nats server: %w", err)
	}
	if o.Logs {
		s.ConfigureLogger()
	}
	go s.Start()
	if !s.ReadyForConnections(15 * time.Second) {
		s.Shutdown()
		return nil, fmt.Errorf("nats server on %s:%d: not ready after 15s", o.Host, o.Port)
	}
	// A cluster member's JetStream waits for its peers; only a lone server can be asked now.
	if o.ClusterName == "" && !s.JetStreamEnabled() {
		s.Shutdown()
		return nil, errors.New("nats server: JetStream did not start")
	}
	return s, nil
}

// clusterOptions sets the route listener and seed routes of a cluster member.
func clusterOptions(o ServerOptions, opts *server.Options) error {
	if o.ClusterName == "" {
		if o.ClusterPort != 0 || len(o.Routes) > 0 {
			return errors.New("nats server: a cluster port or routes need a cluster name")
		}
		return nil
	}
	if o.ClusterPort == 0 {
		return fmt.Errorf("nats server: cluster %s: no cluster port", o.ClusterName)
	}
	if o.ServerName == "" {
		return fmt.Errorf("nats server: cluster %s: every member needs a distinct server name", o.ClusterName)
	}
	host := o.ClusterHost
	if host == "" {
		host = o.Host
	}
	opts.Cluster = server.ClusterOpts{Name: o.ClusterName, Host: host, Port: o.ClusterPort}
	if o.ClusterPort < 0 {
		opts.Cluster.Port = server.RANDOM_PORT
	}
	for _, r := range o.Routes {
		r = strings.TrimSpace(r)
		if r == "" {
			continue
		}
		u, err := url.Parse(r)
		if err != nil || u.Host == "" || u.Port() == "" {
			return fmt.Errorf("nats server: route %q: want nats://HOST:PORT", r)
		}
		opts.Routes = append(opts.Routes, u)
	}
	return nil
}
