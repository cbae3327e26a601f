package natsbus

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Options say how to reach NATS.
type Options struct {
	// URL of the server or cluster (comma-separated seeds). Empty starts an embedded server
	// whose store lives in StoreDir.
	URL string
	// Name identifies this connection in server monitoring.
	Name string
	// User and Password, Token, or CredsFile (JWT + nkey seed) authenticate.
	User, Password string
	Token          string
	CredsFile      string
	// TLSCA verifies the server; TLSCert and TLSKey present a client certificate.
	TLSCA, TLSCert, TLSKey string
	// StoreDir is the embedded server's JetStream store (only when URL is empty).
	StoreDir string
	// Server configures the embedded server (only when URL is empty); StoreDir above wins.
	Server ServerOptions
	// IgnoreDiscovered keeps the connection to the URLs given, ignoring the members the
	// cluster announces: for clients that reach the cluster only through addresses of their
	// own (a proxy, a NAT), where the announced ones lead nowhere.
	IgnoreDiscovered bool
	// MaxReconnects bounds reconnection rounds after a connection is lost (0: no bound, the
	// right choice for a run's components, which must outlive a failover).
	MaxReconnects int
	// Logger receives connection events; default slog.Default().
	Logger *slog.Logger
}

// Bus is a NATS connection with JetStream, and the embedded server when it started one.
type Bus struct {
	NC      *nats.Conn
	JS      jetstream.JetStream
	server  *server.Server
	log     *slog.Logger
	lastURL atomic.Value // the server last connected to, for the disconnect log line
}

// ReconnectBackoffMax bounds the wait between two rounds of reconnection attempts.
const ReconnectBackoffMax = 2 * time.Second

// ReconnectDelay is the wait before reconnection round attempts (1, 2, …): 250 ms doubling
// to ReconnectBackoffMax, plus up to a quarter of it at random.
func ReconnectDelay(attempts int) time.Duration {
	d := 250 * time.Millisecond << min(max(attempts-1, 0), 3)
	d = min(d, ReconnectBackoffMax)
	return d + rand.N(d/4+1)
}

// MetricReconnects is the metric, in every component's metrics, counting its NATS
// connection's reconnections so far.
const MetricReconnects = "nats/reconnects"

// Reconnects counts the connection's reconnections so far (for components' metrics).
func Reconnects(nc *nats.Conn) int64 {
	if nc == nil {
		return 0
	}
	return int64(nc.Stats().Reconnects)
}

// Connect connects to o.URL, or starts an embedded server and connects to it over loopback
// TCP, so every component uses the same code path either way.
func Connect(ctx context.Context, o Options) (*Bus, error) {
	log := o.Logger
	if log == nil {
		log = slog.Default()
	}
	b := &Bus{log: log}
	url := o.URL
	if url == "" {
		so := o.Server
		if o.StoreDir != "" {
			so.StoreDir = o.StoreDir
		}
		if so.StoreDir == "" {
			return nil, errors.New("embedded nats: no store directory (set the run directory)")
		}
		if so.User == "" && so.Token == "" {
			so.User, so.Password, so.Token = o.User, o.Password, o.Token
		}
		s, err := StartServer(so)
		if err != nil {
			return nil, err
		}
		b.server = s
		url = s.ClientURL()
		log.Debug("embedded nats server started", "url", url, "store", so.StoreDir)
	}
	maxReconnects := o.MaxReconnects
	if maxReconnects == 0 {
		maxReconnects = -1
	}
	opts := []nats.Option{
		nats.Name(o.Name),
		// A component outlives any one server: it tries every member it knows of (the seeds
		// and those the cluster announces), forever unless told otherwise, backing off to at
		// most ReconnectBackoffMax between rounds, with jitter so that a cluster's clients do
		// not all land on the survivors at once.
		nats.MaxReconnects(maxReconnects),
		nats.CustomReconnectDelay(ReconnectDelay),
		// Large batches: a bigger reconnect buffer keeps publishes across a short outage.
		nats.ReconnectBufSize(64 << 20),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if err != nil {
				log.Warn("nats disconnected", "name", o.Name, "url", b.lastURL.Load(), "err", err)
			}
		}),
		nats.ReconnectHandler(func(nc *nats.Conn) {
			b.lastURL.Store(nc.ConnectedUrlRedacted())
			log.Info("nats reconnected", "name", o.Name, "url", nc.ConnectedUrlRedacted(), "reconnects", nc.Stats().Reconnects)
		}),
		nats.ErrorHandler(func(_ *nats.Conn, sub *nats.Subscription, err error) {
			subject := ""
			if sub != nil {
				subject = sub.Subject
			}
			log.Warn("nats async error", "subject", subject, "err", err)
		}),
	}
	if o.IgnoreDiscovered {
		opts = append(opts, nats.IgnoreDiscoveredServers())
	}
	switch {
	case o.CredsFile != "":
		if _, err := os.Stat(o.CredsFile); err != nil {
			b.shutdownServer()
			return nil, fmt.Errorf("nats creds: %w", err)
		}
		opts = append(opts, nats.UserCredentials(o.CredsFile))
	case o.Token != "":
		opts = append(opts, nats.Token(o.Token))
	case o.User != "":
		opts = append(opts, nats.UserInfo(o.User, o.Password))
	}
	if o.TLSCA != "" {
		opts = append(opts, nats.RootCAs(o.TLSCA))
	}
	if o.TLSCert != "" || o.TLSKey != "" {
		opts = append(opts, nats.ClientCert(o.TLSCert, o.TLSKey))
	}
	if deadline, ok := ctx.Deadline(); ok {
		opts = append(opts, nats.Timeout(time.Until(deadline)))
	}
	nc, err := nats.Connect(url, opts...)
	if err != nil {
		b.shutdownServer()
		return nil, fmt.Errorf("connect to nats at %s: %w", url, err)
	}
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncMaxPending(256))
	if err != nil {
		nc.Close()
		b.shutdownServer()
		return nil, fmt.Errorf("jetstream at %s: %w", url, err)
	}
	// A cluster that is still electing its meta leader answers late or with a 503.
	err = Retry(ctx, RetryOptions{For: 30 * time.Second}, func(ctx context.Context) error {
		_, err := js.AccountInfo(ctx)
		return err
	})
	if err != nil {
		nc.Close()
		b.shutdownServer()
		return nil, fmt.Errorf("jetstream at %s: %w (is JetStream enabled on the server?)", url, err)
	}
	b.NC, b.JS = nc, js
	b.lastURL.Store(nc.ConnectedUrlRedacted())
	return b, nil
}

// URL is the server URL the bus is connected to.
func (b *Bus) URL() string { return b.NC.ConnectedUrl() }

// Embedded is the embedded server, or nil when connected to an external one.
func (b *Bus) Embedded() *server.Server { return b.server }

// Close drains the connection (pending publishes go out, subscriptions finish) and stops the
// embedded server if there is one.
func (b *Bus) Close() {
	if b.NC != nil {
		if err := b.NC.Drain(); err != nil {
			b.NC.Close()
		}
		for i := 0; i < 100 && !b.NC.IsClosed(); i++ {
			time.Sleep(20 * time.Millisecond)
		}
		b.NC.Close()
	}
	b.shutdownServer()
}

func (b *Bus) shutdownServer() {
	if b.server != nil {
		b.server.Shutdown()
		b.server.WaitForShutdown()
		b.server = nil
	}
}

// DefaultStoreDir is where an embedded server of a run keeps JetStream data.
func DefaultStoreDir(runDir string) string { return filepath.Join(runDir, "jetstream") }
