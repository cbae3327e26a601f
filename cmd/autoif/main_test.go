package main

import (
	"context"
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
		os.Exit(runApp(context.Background(), app, os.Args, os.Stderr))
	}
	// Children inherit the environment.
	os.Setenv(envBeAutoif, "1")
	code := m.Run()
	os.Exit(code)
}
