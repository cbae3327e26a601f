package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/autoif/autoif/atomicfile"
	"github.com/autoif/autoif/proto"
	"github.com/autoif/autoif/reward"
	"github.com/autoif/autoif/reward/crossval"
	"github.com/autoif/autoif/reward/rewardbench"
)

func rewardCommand() *cli.Command {
	return &cli.Command{
		Name:  "reward",
		Usage: "code-execution reward: run verification functions in the sandbox",
		Subcommands: []*cli.Command{
			rewardExecCommand(),
			rewardCrossvalCommand(),
			rewardServeCommand(),
			rewardStatsCommand(),
		},
	}
}

// rewardPoolFlags configure the sandbox pool wherever one is started.
func rewardPoolFlags() []cli.Flag {
	return []cli.Flag{
		&cli.StringFlag{Name: "python", Usage: "interpreter for the sandbox (default: python3's real executable if the sandbox uid can run it, else /usr/bin/python3)", EnvVars: []string{"AUTOIF_PYTHON"}},
		&cli.IntFlag{Name: "workers", Usage: "sandbox workers (default: number of CPUs)"},
		&cli.DurationFlag{Name: "deadline", Usage: "wall-clock limit of one evaluation", Value: 2 * time.Second},
		&cli.IntFlag{Name: "memory-mb", Usage: "address-space limit of each worker, MiB", Value: 1024},
		&cli.IntFlag{Name: "max-output", Usage: "characters one evaluation may print", Value: 1 << 20},
		returnsFlag(),
		unsafeNoSandboxFlag(),
	}
}

// returnsFlag picks how an evaluate result other than True or False counts, wherever
// functions run: reward exec, crossval, serve, rollout and run.
func returnsFlag() cli.Flag {
	return &cli.StringFlag{Name: "returns", Value: string(reward.ReturnsAutoIF), EnvVars: []string{"AUTOIF_RETURNS"},
		Usage: "what an evaluate result other than True/False counts as: autoif (AutoIF's rule: None, or what int() refuses such as \"True\", is skipped, the function not counting for that response; int(result) otherwise), strict (only True, False, 0, 1; anything else is an error), lenient (also \"True\"/\"False\" in any case, \"1\"/\"0\", 1.0/0.0); through a reward service, the server's policy applies"}
}

// unsafeNoSandboxFlag is the one way to run verification functions where the kernel forbids
// the sandbox's namespaces.
func unsafeNoSandboxFlag() cli.Flag {
	return &cli.BoolFlag{Name: "unsafe-no-sandbox", EnvVars: []string{"AUTOIF_UNSAFE_NO_SANDBOX"},
		Usage: "run verification functions without the OS sandbox (namespaces, private root, seccomp), for kernels that forbid namespaces: they can then read what the worker uid can and reach the network"}
}

func rewardPoolOptions(c *cli.Context) (reward.Options, error) {
	returns, err := reward.ParseReturns(c.String("returns"))
	if err != nil {
		return reward.Options{}, fmt.Errorf("--returns: %w", err)
	}
	return reward.Options{
		Python:      c.String("python"),
		Workers:     c.Int("workers"),
		Deadline:    c.Duration("deadline"),
		MemoryLimit: uint64(c.Int("memory-mb")) << 20,
		MaxOutput:   c.Int("max-output"),
		Returns:     returns,

		UnsafeNoSandbox: c.Bool("unsafe-no-sandbox"),
	}, nil
}

func startRewardPool(c *cli.Context, opts reward.Options) (*reward.Pool, error) {
	ctx, cancel := context.WithTimeout(c.Context, time.Minute)
	defer cancel()
	return reward.NewPool(ctx, opts)
}

func rewardExecCommand() *cli.Command {
	return &cli.Command{
		Name:      "exec",
		Usage:     "run one verification function on responses and show each outcome",
		UsageText: "autoif reward exec --func evaluate.py (--response TEXT | --responses FILE) [--json]",
		Flags: append([]cli.Flag{
			&cli.StringFlag{Name: "func", Usage: "Python source file defining evaluate(response)", Required: true},
			&cli.StringSliceFlag{Name: "response", KeepSpace: true, Usage: "a response to check, taken verbatim (repeatable)"},
			&cli.StringFlag{Name: "responses", Usage: "file of responses: JSON lines, each a string or an object with \"response\"; - for stdin"},
			&cli.BoolFlag{Name: "json", Usage: "print one JSON object instead of a table"},
			&cli.BoolFlag{Name: "remote", Usage: "score through the reward service (`autoif reward serve` on --nats) instead of a local sandbox"},
		}, rewardPoolFlags()...),
		Action: func(c *cli.Context) error {
			src, err := os.ReadFile(c.String("func"))
			if err != nil {
				return fmt.Errorf("--func: %w", err)
			}
			responses := c.StringSlice("response")
			if path := c.String("responses"); path != "" {
				more, err := readResponses(path)
				if err != nil {
					return fmt.Errorf("--responses %s: %w", path, err)
				}
				responses = append(responses, more...)
			}
			if len(responses) == 0 {
				return errors.New("give --response TEXT or --responses FILE")
			}
			if c.Bool("remote") {
				return rewardExecRemote(c, string(src), responses)
			}
			opts, err := rewardPoolOptions(c)
			if err != nil {
				return err
			}
			if opts.Workers == 0 {
				opts.Workers = 1
			}
			pool, err := startRewardPool(c, opts)
			if err != nil {
				return err
			}
			defer pool.Close()
			start := time.Now()
			res, err := pool.Score(c.Context, []string{string(src)}, responses)
			if err != nil {
				return err
			}
			elapsed := time.Since(start)
			if c.Bool("json") {
				type row struct {
					Response string `json:"response"`
					reward.Eval
				}
				rows := make([]row, len(responses))
				for i, r := range responses {
					rows[i] = row{Response: r, Eval: res.Evals[0][i]}
				}
				return json.NewEncoder(c.App.Writer).Encode(map[string]any{
					"python": pool.Python(), "results": rows, "stats": pool.Stats(), "elapsed_ms": elapsed.Milliseconds(),
				})
			}
			tw := tabwriter.NewWriter(c.App.Writer, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "#\tOUTCOME\tKIND\tRESPONSE\tMESSAGE")
			for i, e := range res.Evals[0] {
				fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\n", i, e.Outcome, e.Kind, preview(responses[i], 40), preview(e.Message, 80))
			}
			if err := tw.Flush(); err != nil {
				return err
			}
			s := pool.Stats()
			fmt.Fprintf(c.App.Writer, "%d passed, %d failed, %d skipped, %d errors, %d timeouts in %v (python %s, --returns %s)\n",
				s.Passes, s.Fails, s.Skipped, s.Errors, s.Timeouts, elapsed.Round(time.Millisecond), pool.Python(), pool.Options().Returns)
			return nil
		},
	}
}

func readResponses(path string) ([]string, error) {
	var r io.Reader = os.Stdin
	if path != "-" {
		f, err := os.Open(path)
		if err != nil {
			return nil, err
		}
		defer f.Close()
		r = f
	}
	var out []string
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 1<<20), 64<<20)
	for line := 1; sc.Scan(); line++ {
		text := strings.TrimSpace(sc.Text())
		if text == "" {
			continue
		}
		var s string
		if err := json.Unmarshal([]byte(text), &s); err == nil {
			out = append(out, s)
			continue
		}
		var obj struct {
			Response *string `json:"response"`
		}
		if err := json.Unmarshal([]byte(text), &obj); err != nil || obj.Response == nil {
			return nil, fmt.Errorf("line %d: want a JSON string or {\"response\": ...}", line)
		}
		out = append(out, *obj.Response)
	}
	return out, sc.Err()
}

func preview(s string, n int) string {
	s = strings.ReplaceAll(s, "\n", `\n`)
	if r := []rune(s); len(r) > n {
		return string(r[:n-1]) + "…"
	}
	return s
}

func rewardCrossvalCommand() *cli.Command {
	return &cli.Command{
		Name:      "crossval",
		Usage:     "AutoIF stage 3: cross-validate generated verification functions and test cases",
		UsageText: "autoif reward crossval --in eval_func_rft.jsonl --out cross_validation.jsonl [--verbose]",
		Flags: append([]cli.Flag{
			&cli.StringFlag{Name: "in", Usage: "stage-2 completions (eval_func_rft.jsonl format)", Required: true},
			&cli.StringFlag{Name: "out", Usage: "survivors, JSON lines: instruction, eval_func [[source, accuracy]], cases [[input, expected]]", Required: true},
			&cli.IntFlag{Name: "min-functions", Usage: "drop instructions with fewer distinct functions", Value: 3},
			&cli.IntFlag{Name: "min-cases", Usage: "drop instructions with fewer distinct test cases", Value: 10},
			&cli.Float64Flag{Name: "min-accuracy", Usage: "keep functions at least this accurate on the kept cases", Value: 0.8},
			&cli.BoolFlag{Name: "reference-thresholds", Usage: "apply --min-functions/--min-cases only before cross-validation, as the reference script does"},
			&cli.BoolFlag{Name: "verbose", Usage: "report every instruction"},
		}, rewardPoolFlags()...),
		Action: func(c *cli.Context) error {
			f, err := os.Open(c.String("in"))
			if err != nil {
				return fmt.Errorf("--in: %w", err)
			}
			inputs, err := crossval.ReadInputs(f)
			f.Close()
			if err != nil {
				return fmt.Errorf("--in %s: %w", c.String("in"), err)
			}
			opts, err := rewardPoolOptions(c)
			if err != nil {
				return err
			}
			if !c.IsSet("deadline") {
				opts.Deadline = 5 * time.Second // the reference script's alarm
			}
			pool, err := startRewardPool(c, opts)
			if err != nil {
				return err
			}
			defer pool.Close()
			outs, rep, err := crossval.Run(c.Context, pool, inputs, crossval.Options{
				MinFunctions:        c.Int("min-functions"),
				MinCases:            c.Int("min-cases"),
				MinAccuracy:         c.Float64("min-accuracy"),
				ReferenceThresholds: c.Bool("reference-thresholds"),
				Parallel:            pool.Options().Workers,
			})
			if err != nil {
				return err
			}
			if err := atomicfile.Write(c.String("out"), 0o644, func(w io.Writer) error { return crossval.WriteOutputs(w, outs) }); err != nil {
				return fmt.Errorf("--out: %w", err)
			}
			w := c.App.ErrWriter
			fmt.Fprintf(w, "kept %d of %d instructions → %s\n", rep.Kept, rep.Instructions, c.String("out"))
			for _, r := range crossval.SortedReasons(rep.Dropped) {
				fmt.Fprintf(w, "  dropped %4d  %s\n", rep.Dropped[r], r)
			}
			if c.Bool("verbose") {
				for _, ir := range rep.PerInstr {
					status := "kept"
					if !ir.Kept {
						status = "dropped: " + string(ir.Reason)
					}
					fmt.Fprintf(w, "- %s\n  %s; functions %d → %d, cases %d → %d, %d expected outputs normalised\n",
						preview(ir.Instruction, 90), status, ir.Functions, ir.KeptFuncs, ir.Cases, ir.KeptCases, ir.Normalised)
					for _, r := range crossval.SortedReasons(ir.Dropped) {
						fmt.Fprintf(w, "    %3d  %s\n", ir.Dropped[r], r)
					}
				}
			}
			return nil
		},
	}
}

func benchRewardCommand() *cli.Command {
	return &cli.Command{
		Name:  "reward",
		Usage: "score real AutoIF functions × responses in the sandbox pool, in-process exec, a bare fork per function and a process per evaluation",
		Flags: append([]cli.Flag{
			&cli.StringFlag{Name: "data", Usage: "AutoIF reference data directory (query_rft.jsonl, dpo_query_w_funcs.jsonl, back_trans.jsonl); default: the built-in copy of the AutoIF sample data"},
			&cli.IntFlag{Name: "responses", Usage: "use at most this many responses (0: all)"},
			&cli.IntFlag{Name: "process-sample", Usage: "evaluations for the process-per-evaluation baseline", Value: 64},
			&cli.IntFlag{Name: "rounds", Usage: "repeat the workload this many times for the sandbox and in-process runs", Value: 10},
			&cli.IntFlag{Name: "trials", Usage: "measure the sandbox, in-process exec and the fork floor this many times in turn and keep each one's best", Value: 3},
			&cli.StringFlag{Name: "ifeval", Usage: "instead: native IFEval checks against the same constraints as Python functions in the sandbox, on this official-format responses file (e.g. the bundled ifeval/testdata/official_gpt4/input_response_data_gpt4_20231107_145030.jsonl; --responses caps it, --rounds best of)"},
		}, rewardPoolFlags()...),
		Action: func(c *cli.Context) error {
			if path := c.String("ifeval"); path != "" {
				w, err := reward.LoadIFEvalWorkload(path, c.Int("responses"))
				if err != nil {
					return fmt.Errorf("--ifeval: %w", err)
				}
				rounds := 3
				if c.IsSet("rounds") {
					rounds = c.Int("rounds")
				}
				opts, err := rewardPoolOptions(c)
				if err != nil {
					return err
				}
				fig, err := rewardbench.RunIFEval(c.Context, w, rewardbench.Options{Pool: opts, Rounds: rounds, Progress: c.App.ErrWriter})
				if err != nil {
					return err
				}
				return printModelJSON(c.App.Writer, fig)
			}
			data := rewardbench.Bundled()
			if dir := c.String("data"); dir != "" {
				data = os.DirFS(dir)
			}
			w, err := rewardbench.LoadWorkload(data)
			if err != nil {
				if dir := c.String("data"); dir != "" {
					return fmt.Errorf("--data %s: %w", dir, err)
				}
				return err
			}
			if n := c.Int("responses"); n > 0 && n < len(w.Responses) {
				w.Responses = w.Responses[:n]
			}
			opts, err := rewardPoolOptions(c)
			if err != nil {
				return err
			}
			if !c.IsSet("deadline") {
				opts.Deadline = 5 * time.Second
			}
			fig, err := rewardbench.Run(c.Context, w, rewardbench.Options{
				Pool: opts, ProcessSample: c.Int("process-sample"), Rounds: c.Int("rounds"), Trials: c.Int("trials"),
				Progress: c.App.ErrWriter,
			})
			if err != nil {
				return err
			}
			b, err := json.Marshal(fig)
			if err != nil {
				return err
			}
			fmt.Fprintln(c.App.Writer, string(b))
			return nil
		},
	}
}

func rewardServeCommand() *cli.Command {
	return &cli.Command{
		Name:  "serve",
		Usage: "answer " + proto.RewardService + " score requests from a sandbox pool, sharing the load with every other server",
		Description: "Start any number of these, on any machines, pointed at the same NATS (--nats URL): they join\n" +
			"the queue group " + proto.RewardQueueGroup + " and NATS gives each request to one of them. SIGTERM or\n" +
			"Ctrl-C stops taking requests, refuses queued ones (their clients resend them to another server),\n" +
			"finishes those being scored and closes the sandbox. `autoif reward stats` shows every server.",
		Flags: append([]cli.Flag{
			&cli.IntFlag{Name: "concurrent", Usage: "requests scored at once (default: --workers)"},
			&cli.IntFlag{Name: "max-queued", Usage: "requests waiting for a turn before more are refused", Value: 4096},
			&cli.IntFlag{Name: "max-evaluations", Usage: "refuse requests of more functions × responses", Value: 1 << 20},
			&cli.DurationFlag{Name: "heartbeat", Usage: "how often clients of held requests hear the server is alive", Value: time.Second},
			&cli.DurationFlag{Name: "shutdown-grace", Usage: "how long a stopping server waits for requests being scored", Value: time.Minute},
			&cli.DurationFlag{Name: "stats-interval", Usage: "log a stats line this often; 0 never", Value: 30 * time.Second},
		}, rewardPoolFlags()...),
		Action: func(c *cli.Context) error {
			bus, err := connectBus(c.Context, c, "reward")
			if err != nil {
				return err
			}
			defer bus.Close()
			opts, err := rewardPoolOptions(c)
			if err != nil {
				return err
			}
			pool, err := startRewardPool(c, opts)
			if err != nil {
				return err
			}
			defer pool.Close()
			srv, err := reward.NewServer(bus.NC, pool, reward.ServerOptions{
				MaxConcurrent:  c.Int("concurrent"),
				MaxQueued:      c.Int("max-queued"),
				MaxEvaluations: c.Int("max-evaluations"),
				Heartbeat:      c.Duration("heartbeat"),
				ShutdownGrace:  c.Duration("shutdown-grace"),
				StatsInterval:  c.Duration("stats-interval"),
			})
			if err != nil {
				return err
			}
			slog.Info("reward server ready", "nats", bus.URL(), "id", srv.ID())
			// main's context ends on SIGTERM or Ctrl-C: that is the graceful stop.
			return srv.Serve(c.Context)
		},
	}
}

func rewardStatsCommand() *cli.Command {
	return &cli.Command{
		Name:      "stats",
		Usage:     "show every running reward server's load, evaluation rate and failures (NATS micro $SRV.STATS)",
		UsageText: "autoif --nats URL reward stats [--watch 5s] [--json]",
		Flags: []cli.Flag{
			&cli.DurationFlag{Name: "wait", Usage: "how long to gather answers", Value: time.Second},
			&cli.DurationFlag{Name: "watch", Usage: "repeat this often until interrupted; 0 once"},
			&cli.BoolFlag{Name: "json", Usage: "print one JSON line per round instead of a table"},
		},
		Action: func(c *cli.Context) error {
			bus, err := connectBus(c.Context, c, "reward stats")
			if err != nil {
				return err
			}
			defer bus.Close()
			for {
				reports, err := reward.CollectStats(c.Context, bus.NC, c.Duration("wait"))
				if err != nil {
					return err
				}
				once := c.Duration("watch") <= 0
				if len(reports) > 0 || !once {
					if err := printRewardStats(c, reports); err != nil {
						return err
					}
				}
				if once {
					if len(reports) == 0 {
						if bus.Embedded() != nil {
							return errors.New("no reward server answered: none can reach this command's own embedded NATS server; give --nats URL")
						}
						return fmt.Errorf("no reward server answered on %s within --wait %v", bus.URL(), c.Duration("wait"))
					}
					return nil
				}
				select {
				case <-c.Context.Done():
					return nil
				case <-time.After(c.Duration("watch")):
				}
			}
		},
	}
}

func printRewardStats(c *cli.Context, reports []reward.ServerReport) error {
	if c.Bool("json") {
		b, err := json.Marshal(map[string]any{"time": time.Now().UTC(), "servers": reports})
		if err != nil {
			return err
		}
		_, err = fmt.Fprintln(c.App.Writer, string(b))
		return err
	}
	tw := tabwriter.NewWriter(c.App.Writer, 0, 4, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "SERVER\tUPTIME\tWORKERS\tEVALS/S\tEVALS\tREQUESTS\tSCORED\tFAILED\tBAD\tREFUSED\tIN FLIGHT\tQUEUED\tERRORS\tTIMEOUTS\tCRASHES\tRESTARTED\tRECONNECTS\t")
	var total reward.ServerStats
	for _, r := range reports {
		s := r.Stats
		fmt.Fprintf(tw, "%s\t%s\t%d\t%.1f\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t\n",
			r.ID, s.Uptime.Round(time.Second), s.Workers, s.EvalsPerSec, s.Pool.Evals, s.Requests, s.Scored, s.Failed,
			s.BadRequests, s.Rejected, s.InFlight, s.Queued, s.Pool.Errors, s.Pool.Timeouts, s.Pool.Crashes, s.Pool.WorkersRestarted,
			s.Reconnects)
		total.Workers += s.Workers
		total.EvalsPerSec += s.EvalsPerSec
		total.Pool.Evals += s.Pool.Evals
		total.Requests += s.Requests
		total.Scored += s.Scored
		total.Failed += s.Failed
		total.BadRequests += s.BadRequests
		total.Rejected += s.Rejected
		total.InFlight += s.InFlight
		total.Queued += s.Queued
		total.Pool.Errors += s.Pool.Errors
		total.Pool.Timeouts += s.Pool.Timeouts
		total.Pool.Crashes += s.Pool.Crashes
		total.Pool.WorkersRestarted += s.Pool.WorkersRestarted
		total.Reconnects += s.Reconnects
	}
	if len(reports) > 1 {
		s := total
		fmt.Fprintf(tw, "%s\t%s\t%d\t%.1f\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t\n",
			fmt.Sprintf("all %d", len(reports)), "", s.Workers, s.EvalsPerSec, s.Pool.Evals, s.Requests, s.Scored, s.Failed,
			s.BadRequests, s.Rejected, s.InFlight, s.Queued, s.Pool.Errors, s.Pool.Timeouts, s.Pool.Crashes, s.Pool.WorkersRestarted,
			s.Reconnects)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	// What isolates and bounds each server's workers, once per distinct answer.
	seen := map[string]bool{}
	for _, r := range reports {
		line := fmt.Sprintf("sandbox: %s; limits: %s", r.Stats.Pool.Isolation, r.Stats.Pool.Limits)
		if r.Stats.Pool.Isolation != "" && !seen[line] {
			seen[line] = true
			fmt.Fprintln(c.App.Writer, line)
		}
	}
	return nil
}

// rewardExecRemote is exec through the reward service: what a rollout worker sees.
func rewardExecRemote(c *cli.Context, src string, responses []string) error {
	bus, err := connectBus(c.Context, c, "reward exec")
	if err != nil {
		return err
	}
	defer bus.Close()
	client, err := reward.NewClient(bus.NC, reward.ClientOptions{Deadline: c.Duration("deadline")})
	if err != nil {
		return err
	}
	defer client.Close()
	start := time.Now()
	rep, err := client.Do(c.Context, []string{src}, responses)
	if err != nil {
		return err
	}
	elapsed := time.Since(start)
	evals := rep.Result.Evals[0]
	if c.Bool("json") {
		type row struct {
			Response string `json:"response"`
			reward.Eval
		}
		rows := make([]row, len(responses))
		for i, r := range responses {
			rows[i] = row{Response: r, Eval: evals[i]}
		}
		return json.NewEncoder(c.App.Writer).Encode(map[string]any{
			"server": rep.Server, "attempts": rep.Attempts, "results": rows, "client": client.Stats(),
			"elapsed_ms": elapsed.Milliseconds(), "server_ms": rep.Elapsed.Milliseconds(),
		})
	}
	tw := tabwriter.NewWriter(c.App.Writer, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "#\tOUTCOME\tKIND\tRESPONSE\tMESSAGE")
	n := map[reward.Outcome]int{}
	for i, e := range evals {
		n[e.Outcome]++
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\n", i, e.Outcome, e.Kind, preview(responses[i], 40), preview(e.Message, 80))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintf(c.App.Writer, "%d passed, %d failed, %d skipped, %d errors, %d timeouts in %v (server %s, %d attempts)\n",
		n[reward.Pass], n[reward.Fail], n[reward.Skipped], n[reward.Error], n[reward.Timeout], elapsed.Round(time.Millisecond), rep.Server, rep.Attempts)
	return nil
}
