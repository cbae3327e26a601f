package main

import (
	"errors"
	"fmt"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/urfave/cli/v2"

	"github.com/autoif/autoif/natsbus"
	"github.com/autoif/autoif/trainer"
)

func trainCheckLedgerCommand() *cli.Command {
	return &cli.Command{
		Name:  "check-ledger",
		Usage: "compare the online trainer's pair ledger with the run's pair stream: no pair lost, none trained twice",
		Description: "Reads --out/" + trainer.LedgerFile + ", every batch in the run's pair stream and the trainer consumer's\n" +
			"acknowledged position. Exits non-zero when a pair was lost, trained twice, stored twice or is unknown.",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "out", Usage: "the trainer's output directory (as `autoif train stream --out`; required)"},
			&cli.StringFlag{Name: "durable", Value: "trainer", Usage: "the trainer's JetStream durable consumer name"},
		},
		Action: func(c *cli.Context) error {
			if c.String("out") == "" {
				return errors.New("check-ledger: --out is required")
			}
			run, err := runFromFlags(c)
			if err != nil {
				return err
			}
			bus, err := connectBus(c.Context, c, "check-ledger")
			if err != nil {
				return err
			}
			defer bus.Close()
			// Only look: a run that does not exist is an error, not a run to create.
			pairs, err := bus.JS.Stream(c.Context, run.PairsStream())
			if errors.Is(err, jetstream.ErrStreamNotFound) {
				return fmt.Errorf("check-ledger: run %s has no pair stream at %s", run.ID, bus.URL())
			}
			if err != nil {
				return fmt.Errorf("check-ledger: %w", err)
			}
			check, err := trainer.CheckLedger(c.Context, &natsbus.RunResources{Run: run, Pairs: pairs}, trainer.LedgerPath(c.String("out")), c.String("durable"))
			if err != nil {
				return fmt.Errorf("check-ledger: %w", err)
			}
			fmt.Fprintln(c.App.Writer, check)
			if err := printJSONLine(c, check); err != nil {
				return err
			}
			if !check.OK() {
				return errors.New(check.String())
			}
			return nil
		},
	}
}
