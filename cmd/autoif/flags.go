package main

import (
	"strings"

	"github.com/urfave/cli/v2"
)

// Global flag names. Every component reads them from the root context.
const (
	flagNATS     = "nats"
	flagRun      = "run"
	flagConfig   = "config"
	flagLogLevel = "log-level"
	flagRunDir   = "run-dir"
)

func globalFlags() []cli.Flag {
	return []cli.Flag{
		&cli.StringFlag{Name: flagNATS, Usage: "NATS server URL(s), comma-separated; empty starts an embedded server", Value: ""},
		&cli.StringFlag{Name: flagRun, Aliases: []string{"run-id"}, Usage: "run id: namespaces every subject, stream and bucket", Value: "default"},
		&cli.StringFlag{Name: flagRunDir, Usage: "run directory (embedded JetStream store, checkpoints, metrics); default runs/<run id>"},
		&cli.StringFlag{Name: flagConfig, Usage: "YAML config file: global flags at the top level, command flags in a section per command"},
		&cli.StringFlag{Name: flagLogLevel, Usage: "debug, info, warn or error", Value: "info"},
		&cli.StringFlag{Name: "nats-user", Usage: "NATS user name (with --nats-password)"},
		&cli.StringFlag{Name: "nats-password", Usage: "NATS password"},
		&cli.StringFlag{Name: "nats-token", Usage: "NATS authentication token"},
		&cli.StringFlag{Name: "nats-creds", Usage: "NATS credentials file (JWT + nkey seed)"},
		&cli.StringFlag{Name: "nats-ca", Usage: "CA certificate (PEM) to verify the NATS server"},
		&cli.StringFlag{Name: "nats-cert", Usage: "client certificate (PEM) for NATS mutual TLS"},
		&cli.StringFlag{Name: "nats-key", Usage: "client key (PEM) for NATS mutual TLS"},
	}
}

// listFlag splits the values of a repeatable flag that also takes a comma-separated list in
// one value (its help says so): "--prompts a.jsonl,b.jsonl" and "--prompts a.jsonl --prompts
// b.jsonl" mean the same. Text flags are never split (see newAppWith).
func listFlag(values []string) []string {
	var out []string
	for _, v := range values {
		for _, item := range strings.Split(v, ",") {
			if item = strings.TrimSpace(item); item != "" {
				out = append(out, item)
			}
		}
	}
	return out
}
