package main

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/urfave/cli/v2"
)

// listFlags are the repeatable flags that also take a comma-separated list in one value; their
// help says so. Every other repeatable flag carries text and takes each occurrence verbatim.
var listFlags = map[string]bool{"run --prompts": true}

// Every repeatable flag of every command keeps a value with commas whole, through the app's
// own parsing settings; the list flags say in their help that a comma separates items.
func TestRepeatableFlagsKeepTextVerbatim(t *testing.T) {
	app := newApp()
	var seen []string
	var walk func(path string, cmds []*cli.Command)
	check := func(key string, f *cli.StringSliceFlag) {
		seen = append(seen, key)
		var got []string
		probe := &cli.App{Name: "probe", DisableSliceFlagSeparator: app.DisableSliceFlagSeparator,
			Flags:  []cli.Flag{&cli.StringSliceFlag{Name: f.Name, KeepSpace: f.KeepSpace}},
			Action: func(c *cli.Context) error { got = c.StringSlice(f.Name); return nil }}
		if err := probe.Run([]string{"probe", "--" + f.Name, "a, b", "--" + f.Name, " c,d "}); err != nil {
			t.Fatalf("%s: %v", key, err)
		}
		want := []string{"a, b", " c,d "}
		if listFlags[key] {
			// A list's items are trimmed when split; the flag's help must say how it splits.
			want = []string{"a, b", "c,d"}
			if !strings.Contains(f.Usage, "comma-separated") {
				t.Errorf("%s takes a list but its help does not say so: %q", key, f.Usage)
			}
		}
		if !slices.Equal(got, want) {
			t.Errorf("%s: %q parsed as %q, want %q", key, []string{"a, b", " c,d "}, got, want)
		}
	}
	walk = func(path string, cmds []*cli.Command) {
		for _, c := range cmds {
			p := strings.TrimSpace(path + " " + c.Name)
			for _, f := range c.Flags {
				if sf, ok := f.(*cli.StringSliceFlag); ok {
					check(p+" --"+sf.Name, sf)
				}
			}
			walk(p, c.Subcommands)
		}
	}
	for _, f := range app.Flags {
		if sf, ok := f.(*cli.StringSliceFlag); ok {
			check("--"+sf.Name, sf)
		}
	}
	walk("", app.Commands)
	for _, want := range []string{"generate --stop", "reward exec --response", "run --prompts"} {
		if !slices.Contains(seen, want) {
			t.Errorf("walked %v, missing %s", seen, want)
		}
	}
	if got := listFlag([]string{"a.jsonl,b.jsonl", "c.jsonl", " d.jsonl , "}); !slices.Equal(got, []string{"a.jsonl", "b.jsonl", "c.jsonl", "d.jsonl"}) {
		t.Errorf("listFlag gave %q", got)
	}
}

// The case end to end: one response with a comma is scored as one response.
func TestRewardExecScoresAResponseWithACommaAsOne(t *testing.T) {
	dir := t.TempDir()
	fn := filepath.Join(dir, "f.py")
	if err := os.WriteFile(fn, []byte("def evaluate(response):\n    return response == 'a, b'\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(os.Args[0], "--log-level", "error", "reward", "exec", "--func", fn, "--response", "a, b", "--json")
	cmd.Env = append(os.Environ(), envBeAutoif+"=1")
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("reward exec: %v", err)
	}
	var res struct {
		Results []struct{ Response, Outcome string } `json:"results"`
	}
	if err := json.Unmarshal(out, &res); err != nil {
		t.Fatalf("%s: %v", out, err)
	}
	if len(res.Results) != 1 || res.Results[0].Response != "a, b" || res.Results[0].Outcome != "pass" {
		t.Errorf("results %+v, want one response %q that passes", res.Results, "a, b")
	}
}
