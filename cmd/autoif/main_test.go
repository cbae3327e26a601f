package main

import (
	"context"
	"fmt"
	"os"
	"testing"
)

// envBeAutoif makes the test binary run as the autoif command (with the experiment commands
// mounted), so tests can start real autoif child processes without building the binary: the
// in-process run's trainer children re-execute os.Executable().
const envBeAutoif = "AUTOIF_TEST_BE_AUTOIF"

func TestMain(m *testing.M) {
	if os.Getenv(envBeAutoif) == "1" {
		app := newApp()
		if findCommand(app.Commands, "experiment") == nil {
			app.Commands = append(app.Commands, experimentCommand())
		}
		if err := app.RunContext(context.Background(), os.Args); err != nil {
			fmt.Fprintf(os.Stderr, "autoif: %v\n", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	// Children inherit the environment.
	os.Setenv(envBeAutoif, "1")
	code := m.Run()
	os.Exit(code)
}
