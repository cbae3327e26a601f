package main

import (
	"context"
	"fmt"
	"path/filepath"

	"github.com/autoif/autoif/natsbus"
	"github.com/autoif/autoif/proto"
	"github.com/urfave/cli/v2"
)

// runFromFlags reads the global --run id.
func runFromFlags(c *cli.Context) (proto.Run, error) {
	return proto.NewRun(c.String(flagRun))
}

// runDir is --run-dir, or runs/<run id>.
func runDir(c *cli.Context) string {
	if d := c.String(flagRunDir); d != "" {
		return d
	}
	return filepath.Join("runs", c.String(flagRun))
}

// busOptions turns the global NATS flags into connection options. With no --nats URL the
// embedded server keeps its JetStream store in the run directory.
func busOptions(c *cli.Context, name string) natsbus.Options {
	return natsbus.Options{
		URL:       c.String(flagNATS),
		Name:      "autoif " + name,
		User:      c.String("nats-user"),
		Password:  c.String("nats-password"),
		Token:     c.String("nats-token"),
		CredsFile: c.String("nats-creds"),
		TLSCA:     c.String("nats-ca"),
		TLSCert:   c.String("nats-cert"),
		TLSKey:    c.String("nats-key"),
		StoreDir:  natsbus.DefaultStoreDir(runDir(c)),
	}
}

// connectBus connects as the named component.
func connectBus(ctx context.Context, c *cli.Context, name string) (*natsbus.Bus, error) {
	bus, err := natsbus.Connect(ctx, busOptions(c, name))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	return bus, nil
}

// joinRun connects to the bus as name and opens (creating if needed) the run's streams and
// buckets, in memory with --memory. The caller closes the bus.
func joinRun(c *cli.Context, name string) (*natsbus.Bus, *natsbus.RunResources, error) {
	run, err := runFromFlags(c)
	if err != nil {
		return nil, nil, err
	}
	bus, err := connectBus(c.Context, c, name)
	if err != nil {
		return nil, nil, err
	}
	res, err := natsbus.EnsureRun(c.Context, bus.JS, run, natsbus.RunOptions{Memory: c.Bool("memory")})
	if err != nil {
		bus.Close()
		return nil, nil, err
	}
	return bus, res, nil
}
