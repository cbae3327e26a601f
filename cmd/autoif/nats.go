package main

import (
	"fmt"
	"log/slog"
	"strings"

	"github.com/autoif/autoif/natsbus"
	"github.com/urfave/cli/v2"
)

func natsCommand() *cli.Command {
	return &cli.Command{
		Name:  "nats",
		Usage: "run or inspect the NATS JetStream bus that connects autoif's components",
		Subcommands: []*cli.Command{
			{
				Name:  "serve",
				Usage: "run a standalone NATS server with JetStream for multi-process and multi-machine runs",
				Description: "Start it once, then point every component at it with --nats nats://HOST:PORT.\n" +
					"It listens on 127.0.0.1 unless --host says otherwise; use authentication and TLS on any\n" +
					"other interface.",
				Flags: []cli.Flag{
					&cli.StringFlag{Name: "host", Value: "127.0.0.1", Usage: "interface to listen on (0.0.0.0 for all)"},
					&cli.IntFlag{Name: "port", Value: 4222, Usage: "client port"},
					&cli.StringFlag{Name: "store-dir", Usage: "JetStream file store (default <run dir>/jetstream)"},
					&cli.IntFlag{Name: "max-payload", Value: natsbus.DefaultMaxPayload, Usage: "largest message in bytes (at most 64 MiB)"},
					&cli.IntFlag{Name: "http-port", Usage: "monitoring port (/varz, /jsz); 0 disables"},
					&cli.StringFlag{Name: "user", Usage: "require this user name (with --password)"},
					&cli.StringFlag{Name: "password", Usage: "password for --user"},
					&cli.StringFlag{Name: "token", Usage: "require this authentication token"},
					&cli.StringFlag{Name: "tls-cert", Usage: "server certificate (PEM); enables TLS"},
					&cli.StringFlag{Name: "tls-key", Usage: "server key (PEM)"},
					&cli.BoolFlag{Name: "server-logs", Usage: "print the NATS server's own log"},
					&cli.StringFlag{Name: "server-name", Usage: "this server's name, distinct in a cluster (default autoif, or autoif-HOST-PORT in a cluster)"},
					&cli.StringFlag{Name: "cluster-name", Usage: "join the NATS cluster of this name (with --cluster-port); streams can then be replicated (autoif run --replicas 3)"},
					&cli.IntFlag{Name: "cluster-port", Usage: "port for routes from the other cluster members (on --host)"},
					&cli.StringFlag{Name: "routes", Usage: "the cluster members' route URLs, comma-separated: nats://H1:P1,nats://H2:P2 (listing this server too is fine)"},
				},
				Action: natsServe,
			},
		},
	}
}

func natsServe(c *cli.Context) error {
	store := c.String("store-dir")
	if store == "" {
		store = natsbus.DefaultStoreDir(runDir(c))
	}
	name := c.String("server-name")
	if name == "" {
		name = "autoif"
		if c.String("cluster-name") != "" {
			name = fmt.Sprintf("autoif-%s-%d", c.String("host"), c.Int("port"))
		}
	}
	s, err := natsbus.StartServer(natsbus.ServerOptions{
		Host:        c.String("host"),
		Port:        c.Int("port"),
		StoreDir:    store,
		MaxPayload:  int32(c.Int("max-payload")),
		HTTPPort:    c.Int("http-port"),
		User:        c.String("user"),
		Password:    c.String("password"),
		Token:       c.String("token"),
		TLSCert:     c.String("tls-cert"),
		TLSKey:      c.String("tls-key"),
		ServerName:  name,
		Logs:        c.Bool("server-logs"),
		ClusterName: c.String("cluster-name"),
		ClusterPort: c.Int("cluster-port"),
		Routes:      splitList(c.String("routes")),
	})
	if err != nil {
		return err
	}
	slog.Info("nats server ready", "url", s.ClientURL(), "store", store, "max_payload", c.Int("max-payload"),
		"name", name, "cluster", c.String("cluster-name"))
	fmt.Fprintln(c.App.Writer, s.ClientURL())
	<-c.Context.Done()
	slog.Info("nats server stopping")
	s.Shutdown()
	s.WaitForShutdown()
	return nil
}

// splitList reads a comma-separated flag value; empty items (an unset flag, a trailing
// comma) are dropped.
func splitList(v string) []string {
	var out []string
	for _, item := range strings.Split(v, ",") {
		if item = strings.TrimSpace(item); item != "" {
			out = append(out, item)
		}
	}
	return out
}
