package main

import (
	"fmt"
	"log/slog"

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
	s, err := natsbus.StartServer(natsbus.ServerOptions{
		Host:       c.String("host"),
		Port:       c.Int("port"),
		StoreDir:   store,
		MaxPayload: int32(c.Int("max-payload")),
		HTTPPort:   c.Int("http-port"),
		User:       c.String("user"),
		Password:   c.String("password"),
		Token:      c.String("token"),
		TLSCert:    c.String("tls-cert"),
		TLSKey:     c.String("tls-key"),
		ServerName: "autoif",
		Logs:       c.Bool("server-logs"),
	})
	if err != nil {
		return err
	}
	slog.Info("nats server ready", "url", s.ClientURL(), "store", store, "max_payload", c.Int("max-payload"))
	fmt.Fprintln(c.App.Writer, s.ClientURL())
	<-c.Context.Done()
	slog.Info("nats server stopping")
	s.Shutdown()
	s.WaitForShutdown()
	return nil
}
