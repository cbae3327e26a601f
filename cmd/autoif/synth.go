package main

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/autoif/autoif/endpoint"
	"github.com/autoif/autoif/reward"
	"github.com/autoif/autoif/reward/crossval"
	"github.com/autoif/autoif/synth"
)

func synthCommand() *cli.Command {
	return &cli.Command{
		Name:  "synth",
		Usage: "AutoIF's data pipeline against an OpenAI-compatible model: instructions → functions → crossval → backtranslate → queries → responses → judge → export",
		Description: "Each stage reads the previous stage's file (the reference pipeline's formats) and writes its own; " +
			"its line of the funnel (items in, kept, dropped by reason) is merged into funnel.json next to --out. " +
			"Requests are cached on disk by their content (--cache), so a killed stage resumes and a repeated one sends nothing. " +
			"The API key comes from --api-key, AUTOIF_API_KEY or OPENAI_API_KEY.",
		Subcommands: []*cli.Command{
			synthAllCommand(),
			synthLLMCommand("instructions", "stage 1: new instructions from seed instructions (one per line), deduplicated",
				"seed instructions, one per line (or JSONL with instruction)", "instructions, JSONL", 1, 1, nil, synthInstructions),
			synthLLMCommand("functions", "stage 2: K verification functions with test cases per instruction",
				"instructions, one per line or JSONL", "eval_func_rft.jsonl format: instruction, gpt-answer", 8, 0.7, nil, synthFunctions),
			synthCrossvalCommand(),
			synthLLMCommand("backtranslate", "stages 4-5: functions back to instructions, dropping instructions a back-translation contradicts (NLI)",
				"cross-validated instructions (crossval's --out or back_trans.jsonl)", "back_trans.jsonl format with back_instruction, nli_scores", 1, 0.7, []cli.Flag{
					&cli.IntFlag{Name: "functions", Value: 3, Usage: "functions shown per prompt (-1: all)"},
					&cli.IntFlag{Name: "checks", Value: 3, Usage: "back-translations checked by NLI per instruction (-1: all)"},
					&cli.StringFlag{Name: "nli-endpoint", Usage: "text-classification server with an NLI model (Hugging Face TEI /predict); default: ask --model with an NLI prompt"},
				}, synthBacktranslate),
			synthQueriesCommand(),
			synthLLMCommand("responses", "stage 7: K responses per query, verified by the query's functions in the sandbox",
				"query rows (synth queries' --out)", "one row per query: responses [[text, pass rate]], kept", 4, 0.7, append([]cli.Flag{
					&cli.Float64Flag{Name: "min-pass-rate", Usage: "keep responses whose pass rate over the functions is above this (0: any function accepts it, as the reference)"},
				}, rewardPoolFlags()...), synthResponses),
			synthLLMCommand("judge", "stage 8: an LLM scores each kept response 0-10; keep those at or above --min-score",
				"responses rows (synth responses' --out) or rows of instruction, query, response", "kept rows (query_rft_score.jsonl format)", 1, 0.7, []cli.Flag{
					&cli.Float64Flag{Name: "min-score", Value: 9, Usage: "keep a response whose mean score is at least this (9: the reference's mean above 8 of integer scores)"},
					&cli.StringFlag{Name: "scores", Usage: "also write every judged row, kept or not, here"},
				}, synthJudge),
			synthExportCommand(),
		},
	}
}

// llmFlags are the flags of a stage that asks a model.
func llmFlags(n int, temperature float64) []cli.Flag {
	return []cli.Flag{
		&cli.StringFlag{Name: "endpoint", Usage: "OpenAI-compatible server: base URL (.../v1) or chat completions URL", Required: true},
		&cli.StringFlag{Name: "model", Usage: "served model name", Required: true},
		&cli.StringFlag{Name: "api-key", Usage: "bearer token (default: $AUTOIF_API_KEY, else $OPENAI_API_KEY)"},
		&cli.IntFlag{Name: "n", Value: n, Usage: "completions per prompt"},
		&cli.Float64Flag{Name: "temperature", Value: temperature, Usage: "sampling temperature (0: greedy)"},
		&cli.Float64Flag{Name: "top-p", Value: 1, Usage: "nucleus sampling mass"},
		&cli.IntFlag{Name: "max-tokens", Value: 1024, Usage: "tokens per completion"},
		&cli.IntFlag{Name: "concurrency", Value: 8, Usage: "requests in flight at once"},
		&cli.DurationFlag{Name: "timeout", Value: 10 * time.Minute, Usage: "limit of one request"},
		&cli.IntFlag{Name: "retries", Value: 6, Usage: "retries of a request after a 429, 5xx, timeout or cut connection (exponential backoff with jitter, Retry-After honoured)"},
		&cli.StringFlag{Name: "cache", Usage: "request cache directory (default: cache/ next to --out)"},
	}
}

func ioFlags(in, out string) []cli.Flag {
	return []cli.Flag{
		&cli.StringFlag{Name: "in", Usage: in, Required: true},
		&cli.StringFlag{Name: "out", Usage: out, Required: true},
	}
}

func synthLLMCommand(name, usage, in, out string, n int, temperature float64, extra []cli.Flag, run func(c *cli.Context, llm *endpoint.Client, s synth.Sampling) (*synth.StageReport, error)) *cli.Command {
	flags := append(ioFlags(in, out), llmFlags(n, temperature)...)
	return &cli.Command{
		Name:      name,
		Usage:     usage,
		UsageText: "autoif synth " + name + " --in FILE --out FILE --endpoint URL --model NAME [--n N] [--concurrency N] [--cache DIR]",
		Flags:     append(flags, extra...),
		Action: func(c *cli.Context) error {
			llm, err := synthClient(c, name)
			if err != nil {
				return err
			}
			s := synth.Sampling{N: c.Int("n"), Temperature: c.Float64("temperature"), TopP: c.Float64("top-p"), MaxTokens: c.Int("max-tokens")}
			before := llm.Stats()
			rep, err := run(c, llm, s)
			if err != nil {
				return err
			}
			d := synth.StatsDelta(before, llm.Stats())
			rep.Client = &d
			return recordStage(c, rep)
		},
	}
}

func synthClient(c *cli.Context, label string) (*endpoint.Client, error) {
	key := c.String("api-key")
	if key == "" {
		key = endpoint.APIKeyFromEnv()
	}
	cache := c.String("cache")
	if cache == "" {
		cache = filepath.Join(filepath.Dir(c.String("out")), "cache")
	}
	return endpoint.NewClient(endpoint.ClientOptions{URL: c.String("endpoint"), Model: c.String("model"), APIKey: key,
		Concurrency: c.Int("concurrency"), Timeout: c.Duration("timeout"), Retries: c.Int("retries"), CacheDir: cache,
		Progress: c.App.ErrWriter, Label: label})
}

// recordStage merges a stage's report into funnel.json next to --out and prints the funnel.
func recordStage(c *cli.Context, rep *synth.StageReport) error {
	path := filepath.Join(filepath.Dir(filepath.Clean(c.String("out"))), "funnel.json")
	f, err := synth.LoadFunnel(path)
	if err != nil {
		return err
	}
	f.Set(*rep)
	if err := f.Save(path); err != nil {
		return err
	}
	f.Table(c.App.ErrWriter)
	return nil
}

// live refuses to write a stage whose run was interrupted: its unsent requests would look
// like a model's refusals.
func live(c *cli.Context) error {
	if err := c.Context.Err(); err != nil {
		return fmt.Errorf("interrupted (%w); the answered requests are cached, run the stage again to resume", err)
	}
	return nil
}

func synthInstructions(c *cli.Context, llm *endpoint.Client, s synth.Sampling) (*synth.StageReport, error) {
	seeds, err := synth.ReadInstructions(c.String("in"))
	if err != nil {
		return nil, fmt.Errorf("--in: %w", err)
	}
	rows, rep := synth.Instructions(c.Context, llm, seeds, synth.InstructionsOptions{Sampling: s})
	if err := live(c); err != nil {
		return nil, err
	}
	return rep, synth.WriteJSONL(c.String("out"), rows)
}

func synthFunctions(c *cli.Context, llm *endpoint.Client, s synth.Sampling) (*synth.StageReport, error) {
	instr, err := synth.ReadInstructions(c.String("in"))
	if err != nil {
		return nil, fmt.Errorf("--in: %w", err)
	}
	rows, rep := synth.Functions(c.Context, llm, instr, synth.FunctionsOptions{Sampling: s})
	if err := live(c); err != nil {
		return nil, err
	}
	return rep, synth.WriteJSONL(c.String("out"), rows)
}

func synthBacktranslate(c *cli.Context, llm *endpoint.Client, s synth.Sampling) (*synth.StageReport, error) {
	rows, err := synth.ReadJSONL[synth.BackTransRow](c.String("in"))
	if err != nil {
		return nil, fmt.Errorf("--in: %w", err)
	}
	var nli synth.NLI = synth.LLMNLI{LLM: llm, Sampling: synth.Sampling{Temperature: 0, MaxTokens: c.Int("max-tokens")}}
	if u := c.String("nli-endpoint"); u != "" {
		nli = synth.TEINLI{URL: u, APIKey: c.String("api-key")}
	}
	out, rep := synth.BackTranslate(c.Context, llm, nli, rows, synth.BackTranslateOptions{Sampling: s, Functions: c.Int("functions"), Checks: c.Int("checks")})
	if err := live(c); err != nil {
		return nil, err
	}
	return rep, synth.WriteJSONL(c.String("out"), out)
}

func synthResponses(c *cli.Context, llm *endpoint.Client, s synth.Sampling) (*synth.StageReport, error) {
	rows, err := synth.ReadQueryRows(c.String("in"), synth.DefaultPrompts())
	if err != nil {
		return nil, fmt.Errorf("--in: %w", err)
	}
	pool, err := synthPool(c)
	if err != nil {
		return nil, err
	}
	defer pool.Close()
	out, rep, err := synth.Responses(c.Context, llm, pool, rows, synth.ResponsesOptions{Sampling: s, MinPassRate: c.Float64("min-pass-rate"), Parallel: pool.Options().Workers})
	if err != nil {
		return nil, err
	}
	if err := live(c); err != nil {
		return nil, err
	}
	return rep, synth.WriteJSONL(c.String("out"), out)
}

func synthJudge(c *cli.Context, llm *endpoint.Client, s synth.Sampling) (*synth.StageReport, error) {
	rows, err := synth.ReadJudgeInput(c.String("in"))
	if err != nil {
		return nil, fmt.Errorf("--in: %w", err)
	}
	kept, all, rep := synth.Judge(c.Context, llm, rows, synth.JudgeOptions{Sampling: s, MinScore: c.Float64("min-score")})
	if err := live(c); err != nil {
		return nil, err
	}
	if p := c.String("scores"); p != "" {
		if err := synth.WriteJSONL(p, all); err != nil {
			return nil, err
		}
	}
	return rep, synth.WriteJSONL(c.String("out"), kept)
}

func synthPool(c *cli.Context) (*reward.Pool, error) {
	opts, err := rewardPoolOptions(c)
	if err != nil {
		return nil, err
	}
	if !c.IsSet("deadline") {
		opts.Deadline = 5 * time.Second // the reference scripts' alarm
	}
	return startRewardPool(c, opts)
}

func synthCrossvalCommand() *cli.Command {
	return &cli.Command{
		Name:      "crossval",
		Usage:     "stage 3: cross-validate the functions and test cases (as autoif reward crossval), recording the funnel",
		UsageText: "autoif synth crossval --in functions.jsonl --out cross_validation.jsonl",
		Flags: append(append(ioFlags("functions stage output (eval_func_rft.jsonl format)", "survivors: instruction, eval_func, cases"),
			&cli.IntFlag{Name: "min-functions", Usage: "drop instructions with fewer distinct functions", Value: 3},
			&cli.IntFlag{Name: "min-cases", Usage: "drop instructions with fewer distinct test cases", Value: 10},
			&cli.Float64Flag{Name: "min-accuracy", Usage: "keep functions at least this accurate on the kept cases", Value: 0.8},
			&cli.BoolFlag{Name: "reference-thresholds", Usage: "apply --min-functions/--min-cases only before cross-validation, as the reference script does"},
		), rewardPoolFlags()...),
		Action: func(c *cli.Context) error {
			rows, err := synth.ReadJSONL[synth.FunctionsRow](c.String("in"))
			if err != nil {
				return fmt.Errorf("--in: %w", err)
			}
			pool, err := synthPool(c)
			if err != nil {
				return err
			}
			defer pool.Close()
			out, rep, err := synth.CrossValidate(c.Context, pool, rows, crossval.Options{MinFunctions: c.Int("min-functions"), MinCases: c.Int("min-cases"),
				MinAccuracy: c.Float64("min-accuracy"), ReferenceThresholds: c.Bool("reference-thresholds"), Parallel: pool.Options().Workers})
			if err != nil {
				return err
			}
			if err := synth.WriteJSONL(c.String("out"), out); err != nil {
				return err
			}
			return recordStage(c, rep)
		},
	}
}

func synthQueriesCommand() *cli.Command {
	return &cli.Command{
		Name:      "queries",
		Usage:     "stage 6: pair each instruction with user queries (no model involved)",
		UsageText: "autoif synth queries --in back_translation.jsonl --queries sharegpt.json --out queries.jsonl",
		Flags: append(ioFlags("back-translated instructions (synth backtranslate's --out or back_trans.jsonl)", "query rows: instruction, query, prompt, eval_func"),
			&cli.StringFlag{Name: "queries", Usage: "user queries: ShareGPT JSON/JSONL (first human turn), JSONL with query or prompt, or text lines", Required: true},
			&cli.IntFlag{Name: "per-instruction", Value: 16, Usage: "queries drawn per instruction"},
			&cli.IntFlag{Name: "min-chars", Value: 20, Usage: "use queries longer than this"},
			&cli.IntFlag{Name: "max-chars", Value: 300, Usage: "use queries shorter than this"},
			&cli.Uint64Flag{Name: "seed", Value: 1, Usage: "seed of the draw"},
		),
		Action: func(c *cli.Context) error {
			rows, err := synth.ReadJSONL[synth.BackTransRow](c.String("in"))
			if err != nil {
				return fmt.Errorf("--in: %w", err)
			}
			queries, err := synth.ReadQueries(c.String("queries"))
			if err != nil {
				return fmt.Errorf("--queries: %w", err)
			}
			if c.Int("min-chars") >= c.Int("max-chars") {
				return errors.New("--min-chars must be less than --max-chars")
			}
			out, rep, err := synth.Queries(rows, queries, synth.QueriesOptions{PerInstruction: c.Int("per-instruction"),
				MinChars: c.Int("min-chars"), MaxChars: c.Int("max-chars"), Seed: c.Uint64("seed")})
			if err != nil {
				return err
			}
			if err := synth.WriteJSONL(c.String("out"), out); err != nil {
				return err
			}
			return recordStage(c, rep)
		},
	}
}

func synthExportCommand() *cli.Command {
	return &cli.Command{
		Name:      "export",
		Usage:     "stage 9: SFT data (messages JSONL, Alpaca JSON), DPO pairs (AutoIF and TRL) and the prompt set of autoif run --prompts",
		UsageText: "autoif synth export --in judged.jsonl --responses responses.jsonl --out DIR",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "in", Usage: "judged rows (synth judge's --out)", Required: true},
			&cli.StringFlag{Name: "responses", Usage: "scored responses (synth responses' --out): DPO pairs and the prompt set"},
			&cli.StringFlag{Name: "out", Usage: "directory for " + synth.SFTMessagesFile + ", " + synth.SFTAlpacaFile + ", " + synth.DPOAutoIFFile + ", " + synth.DPOTRLFile + ", " + synth.PromptsFile, Required: true},
			&cli.IntFlag{Name: "pairs-per-side", Value: 2, Usage: "passing and failing responses of a query paired with each other"},
			&cli.Float64Flag{Name: "min-positive", Value: 0.5, Usage: "pass rate at which a response can be chosen (rejected ones pass no function)"},
			&cli.Uint64Flag{Name: "seed", Value: 1, Usage: "seed of the pair sampling"},
		},
		Action: func(c *cli.Context) error {
			judged, err := synth.ReadJSONL[synth.JudgedRow](c.String("in"))
			if err != nil {
				return fmt.Errorf("--in: %w", err)
			}
			var responses []synth.ResponsesRow
			if p := c.String("responses"); p != "" {
				if responses, err = synth.ReadJSONL[synth.ResponsesRow](p); err != nil {
					return fmt.Errorf("--responses: %w", err)
				}
			}
			rep, err := synth.Export(judged, responses, c.String("out"), synth.ExportOptions{PairsPerSide: c.Int("pairs-per-side"),
				MinPositive: c.Float64("min-positive"), Seed: c.Uint64("seed")})
			if err != nil {
				return err
			}
			return recordStage(c, rep)
		},
	}
}

func synthAllCommand() *cli.Command {
	return &cli.Command{
		Name:      "all",
		Usage:     "run the stages in order from a YAML config (endpoints and models per stage, sampling, thresholds; see synth/examples)",
		UsageText: "autoif synth all --config synth.yaml --out DIR",
		Flags: append([]cli.Flag{
			&cli.StringFlag{Name: "config", Usage: "pipeline config (YAML)", Required: true},
			&cli.StringFlag{Name: "out", Usage: "run directory: one file per stage, export/, funnel.json, cache/", Required: true},
		}, rewardPoolFlags()...),
		Action: func(c *cli.Context) error {
			cfg, err := synth.LoadConfig(c.String("config"))
			if err != nil {
				return fmt.Errorf("--config: %w", err)
			}
			pool, err := synthPool(c)
			if err != nil {
				return err
			}
			defer pool.Close()
			ctx, cancel := context.WithCancel(c.Context)
			defer cancel()
			f, err := synth.Run(ctx, cfg, c.String("out"), synth.RunOptions{Sandbox: pool, Progress: c.App.ErrWriter})
			if err != nil {
				return err
			}
			f.Table(c.App.ErrWriter)
			return nil
		},
	}
}
