package main

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"runtime/pprof"

	"github.com/autoif/autoif/model"
	"github.com/autoif/autoif/natsbus"
	"github.com/urfave/cli/v2"
)

func benchCommand() *cli.Command {
	return &cli.Command{
		Name:  "bench",
		Usage: "benchmark whole paths against a baseline measured in the same run; the last line is JSON",
		Subcommands: []*cli.Command{
			benchTransportCommand(),
			benchRewardCommand(),
			benchGenerateCommand(),
			benchServeCommand(),
			benchTrainCommand(),
			benchLoopCommand(),
		},
	}
}

func benchTransportCommand() *cli.Command {
	return &cli.Command{
		Name:  "transport",
		Usage: "stream preference pairs through JetStream as Arrow batches, against one JSON message per pair",
		Flags: []cli.Flag{
			&cli.IntFlag{Name: "pairs", Value: 1_000_000, Usage: "pairs to stream"},
			&cli.IntFlag{Name: "batch-size", Value: 1024, Usage: "pairs per Arrow batch"},
			&cli.IntFlag{Name: "window", Value: 16, Usage: "batches published but not yet consumed, at most (the JSON baseline gets the same number of pairs)"},
			&cli.IntFlag{Name: "baseline-pairs", Usage: "pairs for the JSON baseline (default: --pairs)"},
			&cli.IntFlag{Name: "tokens", Value: 256, Usage: "token ids per chosen and per rejected response"},
			&cli.IntFlag{Name: "text-bytes", Value: 1024, Usage: "bytes of text per pair"},
			&cli.StringFlag{Name: "storage", Value: "memory", Usage: "JetStream store of the bench streams: memory (the transport alone) or file (adds the disk)"},
			&cli.StringFlag{Name: "cpuprofile", Usage: "write a CPU profile of the whole process (publisher, embedded server, consumer) to this file"},
			&cli.IntFlag{Name: "replicas", Usage: "after the R1 row, stream the Arrow batches again with this many stream replicas (default: 3 when --nats is a cluster of at least 3 live members)"},
		},
		Action: func(c *cli.Context) error {
			ctx := c.Context
			storage := c.String("storage")
			if storage != "memory" && storage != "file" {
				return fmt.Errorf("--storage %q: want memory or file", storage)
			}
			o := busOptions(c, "bench transport")
			if o.URL == "" {
				dir, err := os.MkdirTemp("", "autoif-bench-js-")
				if err != nil {
					return err
				}
				defer os.RemoveAll(dir)
				o.StoreDir = dir
			}
			bus, err := natsbus.Connect(ctx, o)
			if err != nil {
				return err
			}
			defer bus.Close()
			if stop, err := startCPUProfile(c.String("cpuprofile")); err != nil {
				return err
			} else {
				defer stop()
			}
			slog.Info("bench transport", "nats", bus.URL(), "embedded", bus.Embedded() != nil, "pairs", c.Int("pairs"))
			bo := natsbus.TransportBenchOptions{
				Pairs:         c.Int("pairs"),
				BatchSize:     c.Int("batch-size"),
				Window:        c.Int("window"),
				BaselinePairs: c.Int("baseline-pairs"),
				Tokens:        c.Int("tokens"),
				TextBytes:     c.Int("text-bytes"),
				Memory:        storage == "memory",
				Progress:      progressPrinter(c),
			}
			replicas, err := benchReplicas(ctx, c, bus)
			if err != nil {
				return fmt.Errorf("bench transport: %w", err)
			}
			res, err := natsbus.BenchTransport(ctx, bus, bo)
			if err != nil {
				return fmt.Errorf("bench transport: %w", err)
			}
			fmt.Fprintf(c.App.Writer, "arrow batches: %.0f pairs/s, %.0f MB/s, batch latency p50 %.1f ms p99 %.1f ms\n",
				res.PairsPerS, res.MBPerS, res.P50BatchMs, res.P99BatchMs)
			fmt.Fprintf(c.App.Writer, "json per pair: %.0f pairs/s, %.0f MB/s  (arrow is %.1fx)\n",
				res.BaselinePairsPerS, res.BaselineMBPerS, res.SpeedupVsBaseline)
			if replicas > 1 {
				// The same cluster, the same run: only the replication differs.
				bo.Replicas, bo.NoBaseline = replicas, true
				rep, err := natsbus.BenchTransport(ctx, bus, bo)
				if err != nil {
					return fmt.Errorf("bench transport, %d replicas: %w", replicas, err)
				}
				res.Replicated = append(res.Replicated, rep)
				fmt.Fprintf(c.App.Writer, "arrow batches, R%d: %.0f pairs/s, %.0f MB/s, batch latency p50 %.1f ms p99 %.1f ms  (R1 is %.2fx)\n",
					replicas, rep.PairsPerS, rep.MBPerS, rep.P50BatchMs, rep.P99BatchMs, res.PairsPerS/rep.PairsPerS)
			}
			return printJSONLine(c, res)
		},
	}
}

// printJSONLine prints a bench's figures as the last output line, for scripts.
func printJSONLine(c *cli.Context, v any) error {
	data, err := json.Marshal(v)
	if err != nil {
		return err
	}
	_, err = fmt.Fprintln(c.App.Writer, string(data))
	return err
}

// startCPUProfile profiles the process into path until the returned stop is called; an empty
// path profiles nothing.
func startCPUProfile(path string) (stop func(), err error) {
	if path == "" {
		return func() {}, nil
	}
	f, err := os.Create(path)
	if err != nil {
		return nil, fmt.Errorf("cpu profile: %w", err)
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return nil, fmt.Errorf("cpu profile: %w", err)
	}
	return func() { pprof.StopCPUProfile(); f.Close() }, nil
}

// benchModelDir is --model, or a fresh seeded ~28M-parameter model (model.BenchConfig)
// written to a temporary directory that cleanup removes: the PyTorch baselines load the same
// files.
func benchModelDir(c *cli.Context, prefix string) (dir string, cleanup func(), err error) {
	if dir := c.String("model"); dir != "" {
		return dir, func() {}, nil
	}
	tmp, err := os.MkdirTemp("", prefix)
	if err != nil {
		return "", nil, err
	}
	cleanup = func() { os.RemoveAll(tmp) }
	dir = filepath.Join(tmp, "model")
	w, err := model.Init(model.BenchConfig(), c.Uint64("seed"))
	if err == nil {
		err = w.Save(dir, model.SaveOptions{})
	}
	if err != nil {
		cleanup()
		return "", nil, err
	}
	return dir, cleanup, nil
}

// benchReplicas is the replica count of bench transport's second row: --replicas, or 3 on a
// cluster of at least 3 live members; 1 means no second row.
func benchReplicas(ctx context.Context, c *cli.Context, bus *natsbus.Bus) (int, error) {
	if c.IsSet("replicas") {
		return c.Int("replicas"), nil
	}
	if bus.Embedded() != nil {
		return 1, nil
	}
	ci, err := natsbus.Cluster(ctx, bus.NC)
	if err != nil {
		return 0, err
	}
	if ci.Size() >= 3 {
		return 3, nil
	}
	return 1, nil
}
