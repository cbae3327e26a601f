package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/urfave/cli/v2"
)

// probeApp is the real app wiring around a command that reports the values it sees.
func probeApp(seen map[string]string) *cli.App {
	record := func(c *cli.Context) error {
		seen["run"] = c.String(flagRun)
		seen["nats"] = c.String(flagNATS)
		seen["pairs"] = c.String("pairs")
		seen["beta"] = c.String("beta")
		seen["tags"] = strings.Join(c.StringSlice("tag"), ",")
		return nil
	}
	return newAppWith([]*cli.Command{{
		Name: "train",
		Subcommands: []*cli.Command{{
			Name: "dpo",
			Flags: []cli.Flag{
				&cli.StringFlag{Name: "pairs", Value: "default.jsonl"},
				&cli.Float64Flag{Name: "beta", Value: 0.1},
				&cli.StringSliceFlag{Name: "tag"},
			},
			Action: record,
		}},
	}})
}

func writeConfig(t *testing.T, body string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "run.yaml")
	if err := os.WriteFile(path, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestFlagValuesComeFromFlagThenEnvThenConfigThenDefault(t *testing.T) {
	cfg := writeConfig(t, `
run-id: from-config
nats: nats://config:4222
train:
  dpo:
    pairs: config.jsonl
    beta: 0.3
    tag: [a, b]
`)
	cases := []struct {
		name string
		args []string
		env  map[string]string
		want map[string]string
	}{
		{"defaults without a config", []string{"train", "dpo"}, nil,
			map[string]string{"run": "default", "nats": "", "pairs": "default.jsonl", "beta": "0.1", "tags": ""}},
		{"config file fills unset flags", []string{"--config", cfg, "train", "dpo"}, nil,
			map[string]string{"run": "from-config", "nats": "nats://config:4222", "pairs": "config.jsonl", "beta": "0.3", "tags": "a,b"}},
		{"environment beats the config file", []string{"--config", cfg, "train", "dpo"},
			map[string]string{"AUTOIF_RUN": "from-env", "AUTOIF_TRAIN_DPO_BETA": "0.5"},
			map[string]string{"run": "from-env", "nats": "nats://config:4222", "pairs": "config.jsonl", "beta": "0.5", "tags": "a,b"}},
		{"command line beats everything", []string{"--config", cfg, "--run", "from-flag", "train", "dpo", "--beta", "0.7"},
			map[string]string{"AUTOIF_RUN": "from-env", "AUTOIF_TRAIN_DPO_BETA": "0.5"},
			map[string]string{"run": "from-flag", "nats": "nats://config:4222", "pairs": "config.jsonl", "beta": "0.7", "tags": "a,b"}},
		{"config file named by the environment", []string{"train", "dpo"}, map[string]string{"AUTOIF_CONFIG": cfg},
			map[string]string{"run": "from-config", "nats": "nats://config:4222", "pairs": "config.jsonl", "beta": "0.3", "tags": "a,b"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			for k, v := range tc.env {
				t.Setenv(k, v)
			}
			seen := map[string]string{}
			if err := probeApp(seen).RunContext(context.Background(), append([]string{"autoif"}, tc.args...)); err != nil {
				t.Fatal(err)
			}
			for k, want := range tc.want {
				if seen[k] != want {
					t.Errorf("%s = %q, want %q", k, seen[k], want)
				}
			}
		})
	}
}

func TestBadConfigFilesFailNamingTheProblem(t *testing.T) {
	cases := []struct {
		name, body, want string
	}{
		{"unknown global key", "betaa: 1\n", `unknown key "betaa"`},
		{"unknown command flag", "train:\n  dpo:\n    betta: 0.2\n", `unknown key "train.dpo.betta"`},
		{"unknown command", "trian:\n  dpo:\n    beta: 0.2\n", `unknown key "trian"`},
		{"section where a flag belongs", "nats:\n  url: x\n", `unknown key "nats"`},
		{"value of the wrong type", "train:\n  dpo:\n    beta: high\n", `key "train.dpo.beta"`},
		{"not YAML", "train: [unclosed\n", "config "},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cfg := writeConfig(t, tc.body)
			err := probeApp(map[string]string{}).RunContext(context.Background(), []string{"autoif", "--config", cfg, "train", "dpo"})
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want an error containing %q", err, tc.want)
			}
		})
	}
}

func TestMissingConfigFileIsAnError(t *testing.T) {
	err := probeApp(map[string]string{}).RunContext(context.Background(), []string{"autoif", "--config", "/nonexistent/run.yaml", "train", "dpo"})
	if err == nil || !strings.Contains(err.Error(), "/nonexistent/run.yaml") {
		t.Fatalf("got %v, want an error naming the file", err)
	}
}

func TestEveryFlagHasAnEnvironmentVariable(t *testing.T) {
	app := newApp()
	var walk func(path string, cmds []*cli.Command)
	check := func(path string, flags []cli.Flag) {
		for _, f := range flags {
			if _, isHelp := f.(*cli.BoolFlag); isHelp && f.Names()[0] == "help" {
				continue
			}
			ef, ok := f.(interface{ GetEnvVars() []string })
			if !ok || len(ef.GetEnvVars()) == 0 || !strings.HasPrefix(ef.GetEnvVars()[0], "AUTOIF_") {
				t.Errorf("%s --%s has no AUTOIF_* environment variable", path, f.Names()[0])
			}
		}
	}
	walk = func(path string, cmds []*cli.Command) {
		for _, c := range cmds {
			check(path+" "+c.Name, c.Flags)
			walk(path+" "+c.Name, c.Subcommands)
		}
	}
	check("autoif", app.Flags)
	walk("autoif", app.Commands)
}

func TestCLIReferenceIsUpToDate(t *testing.T) {
	md, err := cliReference()
	if err != nil {
		t.Fatal(err)
	}
	committed, err := os.ReadFile("../../docs/CLI.md")
	if err != nil {
		t.Fatalf("docs/CLI.md: %v (run make docs)", err)
	}
	if !bytes.Equal(committed, []byte(md)) {
		t.Fatal("docs/CLI.md is out of date: run make docs")
	}
}
