package main

import (
	"context"
	"fmt"
	"io"

	"github.com/urfave/cli/v2"

	"github.com/autoif/autoif/dashboard"
	"github.com/autoif/autoif/orchestrator"
)

// watchFlags are the ways to follow a run while it trains.
func watchFlags() []cli.Flag {
	return []cli.Flag{
		&cli.StringFlag{Name: "http", Usage: "serve a live dashboard (GET /) and Prometheus metrics (GET /metrics) on this address, e.g. 127.0.0.1:8080 (port 0 picks one; off by default)"},
	}
}

// watch is what follows a run: the dashboard's listener, if any, and the observer that
// feeds them.
type watch struct {
	server   *dashboard.Server
	observer orchestrator.Observer
}

func startWatch(ctx context.Context, c *cli.Context, runID string) (*watch, error) {
	w := &watch{}
	if addr := c.String("http"); addr != "" {
		hub := dashboard.NewHub()
		srv, err := dashboard.Start(ctx, addr, hub)
		if err != nil {
			return nil, err
		}
		w.server, w.observer = srv, hub.Observer(runID)
	}
	return w, nil
}

// announce says where the dashboard is.
func (w *watch) announce(out io.Writer) {
	if w.server != nil {
		fmt.Fprintf(out, "dashboard %s  (Prometheus metrics: %smetrics)\n", w.server.URL, w.server.URL)
	}
}

func (w *watch) Close() error {
	if w.server != nil {
		return w.server.Close()
	}
	return nil
}
