package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/autoif/autoif/endpoint"
	"github.com/autoif/autoif/experiment"
	"github.com/autoif/autoif/ifeval"
)

func evalCommand() *cli.Command {
	return &cli.Command{
		Name:  "eval",
		Usage: "evaluate responses or a checkpoint on public benchmarks",
		Subcommands: []*cli.Command{
			evalIFEvalCommand(),
		},
	}
}

func evalIFEvalCommand() *cli.Command {
	return &cli.Command{
		Name:  "ifeval",
		Usage: "IFEval (Zhou et al. 2023) with the official checker's verdicts, strict and loose",
		Description: "Checks each prompt's response against its verifiable instructions exactly as google-research's\n" +
			"instruction_following_eval does, writes eval_results_strict.jsonl and eval_results_loose.jsonl\n" +
			"in the official format into --output-dir, prints the official report (prompt- and\n" +
			"instruction-level accuracy, per category and per instruction type) for each, and ends with\n" +
			"one JSON line: prompt_strict, instruction_strict, prompt_loose, instruction_loose. With --model\n" +
			"(a checkpoint) or --endpoint (an OpenAI-compatible server) it samples the responses first and\n" +
			"writes them as the official responses file.",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "input-data", Usage: "IFEval input_data.jsonl (key, prompt, instruction_id_list, kwargs); default: the bundled official 541 prompts"},
			&cli.StringFlag{Name: "responses", Usage: "JSONL of {\"prompt\", \"response\"} lines, matched to the inputs by prompt (required without --model); with --model, the new file the sampled responses are written to (default OUTPUT_DIR/" + ifevalResponsesFile + ")"},
			&cli.StringFlag{Name: "output-dir", Usage: "directory for eval_results_strict.jsonl and eval_results_loose.jsonl (created if missing; default: write no files)"},
			&cli.StringFlag{Name: "model", Usage: "checkpoint directory: sample one response per prompt from it first (needs --output-dir or --responses)"},
			&cli.StringFlag{Name: "endpoint", Usage: "instead of --model: an OpenAI-compatible server's base URL (http://host:8000/v1), one chat completion per prompt"},
			&cli.StringFlag{Name: "endpoint-model", Usage: "with --endpoint: the served model's name"},
			&cli.StringFlag{Name: "endpoint-api-key", Usage: "with --endpoint: bearer token, if the server wants one (or AUTOIF_EVAL_IFEVAL_ENDPOINT_API_KEY)"},
			&cli.IntFlag{Name: "concurrency", Value: 4, Usage: "with --endpoint: requests in flight at once"},
			&cli.BoolFlag{Name: "chat", Value: true, Usage: "with --model: render each prompt as a user message in the tokenizer's chat template"},
			&cli.Float64Flag{Name: "temperature", Usage: "with --model or --endpoint: sampling temperature; 0 is greedy"},
			&cli.IntFlag{Name: "max-new-tokens", Value: 1024, Usage: "with --model or --endpoint: tokens to generate at most per response"},
			&cli.IntFlag{Name: "batch", Value: 16, Usage: "with --model: prompts decoded together"},
			&cli.Uint64Flag{Name: "seed", Usage: "with --model: sampling seed (when --temperature > 0)"},
		},
		Action: func(c *cli.Context) error {
			if c.NArg() > 0 {
				return fmt.Errorf("eval ifeval: unexpected arguments %q", c.Args().Slice())
			}
			inputs := ifeval.OfficialInputs()
			if path := c.String("input-data"); path != "" {
				var err error
				if inputs, err = ifeval.ReadInputFile(path); err != nil {
					return fmt.Errorf("--input-data: %w", err)
				}
			}
			if c.String("model") != "" || c.String("endpoint") != "" {
				if err := sampleIFEvalResponses(c, inputs); err != nil {
					return err
				}
			}
			if c.String("responses") == "" {
				return errors.New("--responses is required (or --model or --endpoint to sample them)")
			}
			responses, err := ifeval.ReadResponseFile(c.String("responses"))
			if err != nil {
				return fmt.Errorf("--responses: %w", err)
			}
			res, err := ifeval.EvaluateAll(inputs, responses)
			if err != nil {
				return fmt.Errorf("--responses %s: %w", c.String("responses"), err)
			}
			if err := ifeval.WriteResults(res, c.String("output-dir"), c.App.Writer); err != nil {
				return err
			}
			return printModelJSON(c.App.Writer, res.Headline())
		},
	}
}

// ifevalResponsesFile is where --model writes its responses in --output-dir.
const ifevalResponsesFile = "input_response_data.jsonl"

// sampleIFEvalResponses samples one response per input prompt from --model or --endpoint and
// writes them to --responses (a new file; default OUTPUT_DIR/input_response_data.jsonl), which
// the command then evaluates.
func sampleIFEvalResponses(c *cli.Context, inputs []ifeval.Input) error {
	source := c.String("model")
	if c.String("endpoint") != "" {
		if source != "" {
			return errors.New("--model and --endpoint exclude each other")
		}
		if c.String("endpoint-model") == "" {
			return errors.New("--endpoint needs --endpoint-model: the served model's name")
		}
		source = c.String("endpoint")
	}
	path := c.String("responses")
	if path == "" {
		if c.String("output-dir") == "" {
			return errors.New("--model and --endpoint need --output-dir or --responses: where to write the sampled responses")
		}
		path = filepath.Join(c.String("output-dir"), ifevalResponsesFile)
		if err := c.Set("responses", path); err != nil {
			return err
		}
	}
	if n := c.Int("max-new-tokens"); n < 1 {
		return fmt.Errorf("--max-new-tokens %d: want at least 1", n)
	}
	if _, err := os.Stat(path); err == nil {
		return fmt.Errorf("--responses %s already exists: --model writes a new file (remove it, or evaluate it without --model)", path)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	prompts := make([]string, len(inputs))
	for i, in := range inputs {
		prompts[i] = in.Prompt
	}
	start := time.Now()
	var responses []string
	var err error
	if c.String("endpoint") != "" {
		responses, err = endpoint.Complete(c.Context, prompts, endpoint.Options{
			URL: c.String("endpoint"), Model: c.String("endpoint-model"), APIKey: c.String("endpoint-api-key"),
			Temperature: c.Float64("temperature"), MaxTokens: c.Int("max-new-tokens"), Concurrency: c.Int("concurrency"),
		})
	} else {
		responses, err = experiment.SampleResponses(c.Context, c.String("model"), prompts, experiment.SampleOptions{
			Temperature: c.Float64("temperature"), MaxNewTokens: c.Int("max-new-tokens"), Seed: c.Uint64("seed"),
			ChatTemplate: c.Bool("chat"), Batch: c.Int("batch"),
		})
	}
	if err != nil {
		return err
	}
	if err := ifeval.WriteResponses(path, prompts, responses); err != nil {
		return err
	}
	fmt.Fprintf(c.App.ErrWriter, "sampled %d responses from %s in %s: %s\n", len(responses), source, time.Since(start).Round(time.Second), path)
	return nil
}
