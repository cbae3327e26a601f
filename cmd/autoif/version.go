package main

import (
	"fmt"
	"runtime"
	"runtime/debug"

	"github.com/urfave/cli/v2"
)

func versionCommand() *cli.Command {
	return &cli.Command{
		Name:  "version",
		Usage: "print the autoif version and the versions of its core dependencies",
		Action: func(c *cli.Context) error {
			fmt.Fprintf(c.App.Writer, "autoif %s (%s %s/%s)\n", version, runtime.Version(), runtime.GOOS, runtime.GOARCH)
			if info, ok := debug.ReadBuildInfo(); ok {
				for _, dep := range info.Deps {
					switch dep.Path {
					case "github.com/nats-io/nats-server/v2", "github.com/nats-io/nats.go",
						"github.com/apache/arrow-go/v18", "gorgonia.org/gorgonia":
						fmt.Fprintf(c.App.Writer, "  %s %s\n", dep.Path, dep.Version)
					}
				}
			}
			return nil
		},
	}
}
