package main

import (
	"bytes"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/autoif/autoif/model"
)

// `autoif model merge` writes a whole checkpoint whose greedy decode equals `autoif generate
// --adapter` on the base: merging and running the adapter are the same model.
func TestModelMergeEqualsGenerateWithAdapter(t *testing.T) {
	tmp := t.TempDir()
	base, adapter, merged := filepath.Join(tmp, "base"), filepath.Join(tmp, "adapter"), filepath.Join(tmp, "merged")
	app := newApp()
	app.Writer = io.Discard
	if err := app.Run([]string{"autoif", "model", "init", "--layers", "2", "--hidden", "64", "--heads", "4", "--kv-heads", "2",
		"--intermediate", "128", "--max-positions", "512", "--seed", "3", "--dtype", "bf16", "--out", base}); err != nil {
		t.Fatal(err)
	}
	w, err := model.Load(base)
	if err != nil {
		t.Fatal(err)
	}
	a, err := model.NewAdapter(w.Config, model.LoRAConfig{Rank: 4, Alpha: 16, Targets: model.LoRATargets}, 7)
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range a.Layers {
		for _, p := range l {
			for j := range p.B.Data {
				p.B.Data[j] = p.A.Data[j%len(p.A.Data)] * 4
			}
		}
	}
	if err := a.Save(adapter); err != nil {
		t.Fatal(err)
	}
	run := func(args ...string) string {
		t.Helper()
		app := newApp()
		var out bytes.Buffer
		app.Writer, app.ErrWriter = &out, &out
		if err := app.Run(append([]string{"autoif"}, args...)); err != nil {
			t.Fatalf("%v: %v\n%s", args, err, out.String())
		}
		return out.String()
	}
	run("model", "merge", "--base", base, "--adapter", adapter, "--out", merged, "--dtype", "f32")
	gen := func(args ...string) []int {
		out := run(append([]string{"generate", "--prompt", "Answer in lowercase.", "--temperature", "0", "--max-new-tokens", "12", "--json"}, args...)...)
		var got struct {
			Tokens []int `json:"tokens"`
		}
		if err := json.Unmarshal([]byte(strings.TrimSpace(out)), &got); err != nil {
			t.Fatalf("output %q: %v", out, err)
		}
		return got.Tokens
	}
	withAdapter, fromMerged, plain := gen("--model", base, "--adapter", adapter), gen("--model", merged), gen("--model", base)
	if !slices.Equal(withAdapter, fromMerged) {
		t.Errorf("generate --adapter %v, merged checkpoint %v", withAdapter, fromMerged)
	}
	if slices.Equal(withAdapter, plain) {
		t.Errorf("the adapter did not change the greedy tokens %v: the test would not see a wrong merge", plain)
	}
	if _, err := os.Stat(filepath.Join(merged, "tokenizer.json")); err != nil {
		t.Errorf("the merged checkpoint has no tokenizer: %v", err)
	}

	// Bad input: one line, nothing written.
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"model", "merge", "--base", base, "--adapter", base, "--out", filepath.Join(tmp, "x1")}, "adapter_config.json"},
		{[]string{"model", "merge", "--base", adapter, "--adapter", adapter, "--out", filepath.Join(tmp, "x2")}, "config.json"},
		{[]string{"model", "merge", "--base", base, "--adapter", adapter, "--out", base}, "is the base checkpoint"},
		{[]string{"model", "merge", "--base", base, "--adapter", adapter, "--out", filepath.Join(tmp, "x3"), "--dtype", "f16"}, "--dtype"},
		{[]string{"model", "merge", "--base", base, "--out", filepath.Join(tmp, "x4")}, "--adapter is required"},
	} {
		app := newApp()
		app.Writer, app.ErrWriter = io.Discard, io.Discard
		err := app.Run(append([]string{"autoif"}, tc.args...))
		if err == nil || !strings.Contains(err.Error(), tc.want) || strings.Contains(err.Error(), "\n") {
			t.Errorf("%v: err %v, want one line naming %q", tc.args, err, tc.want)
		}
	}
	for _, x := range []string{"x1", "x2", "x3", "x4"} {
		if _, err := os.Stat(filepath.Join(tmp, x)); err == nil {
			t.Errorf("a failed merge left %s behind", x)
		}
	}
}
