package main

import (
	"errors"
	"fmt"

	"github.com/urfave/cli/v2"

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
			"one JSON line: prompt_strict, instruction_strict, prompt_loose, instruction_loose.",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "input-data", Usage: "IFEval input_data.jsonl (key, prompt, instruction_id_list, kwargs); default: the bundled official 541 prompts"},
			&cli.StringFlag{Name: "responses", Usage: "JSONL of {\"prompt\", \"response\"} lines, matched to the inputs by prompt (required)"},
			&cli.StringFlag{Name: "output-dir", Usage: "directory for eval_results_strict.jsonl and eval_results_loose.jsonl (created if missing; default: write no files)"},
		},
		Action: func(c *cli.Context) error {
			if c.NArg() > 0 {
				return fmt.Errorf("eval ifeval: unexpected arguments %q", c.Args().Slice())
			}
			if c.String("responses") == "" {
				return errors.New("--responses is required")
			}
			inputs := ifeval.OfficialInputs()
			if path := c.String("input-data"); path != "" {
				var err error
				if inputs, err = ifeval.ReadInputFile(path); err != nil {
					return fmt.Errorf("--input-data: %w", err)
				}
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
