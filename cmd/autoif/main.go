// Command autoif is the single binary of the autoif system: it runs the whole online DPO loop in
// one process (embedded NATS) or any one component against a NATS cluster.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"runtime/debug"
	"strings"
	"syscall"

	"github.com/urfave/cli/v2"

	"github.com/autoif/autoif/model"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

func main() {
	limitHeap()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := runApp(ctx, newApp(), os.Args, os.Stderr)
	stop()
	os.Exit(code)
}

// limitHeap sets Go's soft memory limit to 80% of the machine's memory unless GOMEMLIMIT
// says otherwise. Go's collector otherwise lets the heap grow to twice what is live before it
// runs: with a 0.5B policy's ~14 GB of weights, optimiser state and sampler live, the next
// checkpoint load's garbage would take the process past the machine's 24 GB (measured: the
// kernel's OOM killer at 24.3 GB), where near the limit the collector runs instead. 80%, not
// more: the limit is what the heap fills up to, and memory outside it (OpenBLAS, thread stacks)
// and other processes need the rest (at 90% that run peaked at 21.3 GB).
func limitHeap() {
	if os.Getenv("GOMEMLIMIT") != "" {
		return
	}
	if m := model.PhysicalMemory(); m > 0 {
		debug.SetMemoryLimit(m / 10 * 8)
	}
}

// runApp runs the app and returns the process exit code; an error is printed as one line.
func runApp(ctx context.Context, app *cli.App, args []string, stderr io.Writer) int {
	err := app.RunContext(ctx, args)
	if err == nil {
		return 0
	}
	var exit cli.ExitCoder
	if errors.As(err, &exit) && exit.ExitCode() == 0 {
		return 0
	}
	fmt.Fprintf(stderr, "autoif: %v\n", err)
	if errors.As(err, &exit) {
		return exit.ExitCode()
	}
	return 1
}

func newApp() *cli.App {
	return newAppWith([]*cli.Command{
		runCommand(),
		natsCommand(),
		rewardCommand(),
		synthCommand(),
		rolloutCommand(),
		trainCommand(),
		modelCommand(),
		generateCommand(),
		evalCommand(),
		serveCommand(),
		curvesCommand(),
		dashboardCommand(),
		exportCommand(),
		experimentCommand(),
		benchCommand(),
		versionCommand(),
		docsCommand(),
	})
}

// newAppWith builds the app around a command tree: global flags, logging, and every flag
// wired to its AUTOIF_* variable and config-file key.
func newAppWith(commands []*cli.Command) *cli.App {
	app := &cli.App{
		Name:                 "autoif",
		Usage:                "instruction-following alignment by self-play with execution feedback (online DPO)",
		Version:              version,
		EnableBashCompletion: true,
		Flags:                globalFlags(),
		Commands:             commands,
		Before: func(c *cli.Context) error {
			if err := setupLogging(c.String(flagLogLevel)); err != nil {
				return err
			}
			return loadConfig(c)
		},
		// Errors are printed once, by main, as one line.
		ExitErrHandler: func(*cli.Context, error) {},
		OnUsageError:   usageError,
		// A repeatable flag takes each occurrence verbatim: text (a response, a stop string)
		// may hold commas. The flags that take a list in one value split it themselves
		// (listFlag) and say so in their help.
		DisableSliceFlagSeparator: true,
	}
	wireConfigAndEnv(app)
	return app
}

// usageError makes a flag that does not parse one line naming it, not a help page.
func usageError(_ *cli.Context, err error, _ bool) error {
	// Go's flag package names flags with one dash; this CLI documents them with two.
	msg := strings.NewReplacer("for flag -", "for flag --", "defined: -", "defined: --").Replace(err.Error())
	return fmt.Errorf("%s (see --help)", msg)
}

func setupLogging(level string) error {
	var l slog.Level
	if err := l.UnmarshalText([]byte(level)); err != nil {
		return fmt.Errorf("--log-level %q: want debug, info, warn or error", level)
	}
	slog.SetDefault(slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: l})))
	return nil
}
