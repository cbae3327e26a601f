package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/autoif/autoif/model"
)

var parityFixture = filepath.Join("..", "..", "trainer", "testdata", "dpo_parity")

// `train dpo --lora-rank` leaves a PEFT adapter of the flags' shape in --out (and its
// checkpoint), trained, naming the base it applies to.
func TestTrainDPOWithLoRAWritesAPEFTAdapter(t *testing.T) {
	out := filepath.Join(t.TempDir(), "out")
	app := newApp()
	var buf bytes.Buffer
	app.Writer, app.ErrWriter = &buf, &buf
	err := app.RunContext(context.Background(), []string{"autoif", "train", "dpo", "--model", filepath.Join(parityFixture, "policy"),
		"--pairs", filepath.Join(parityFixture, "pairs.jsonl"), "--out", out, "--steps", "2", "--batch-size", "2", "--lr", "1e-2",
		"--lora-rank", "3", "--lora-alpha", "6", "--lora-targets", "q_proj,down_proj"})
	if err != nil {
		t.Fatalf("%v: %s", err, buf.String())
	}
	a, err := model.LoadAdapter(out)
	if err != nil {
		t.Fatal(err)
	}
	if c := a.Config; c.Rank != 3 || c.Alpha != 6 || strings.Join(c.Targets, ",") != "q_proj,down_proj" {
		t.Errorf("adapter config %+v", c)
	}
	if base, _ := filepath.Abs(filepath.Join(parityFixture, "policy")); a.BaseModel != base {
		t.Errorf("base_model_name_or_path %q, want %q", a.BaseModel, base)
	}
	trained := false
	for _, l := range a.Layers {
		for _, p := range l {
			for _, v := range p.B.Data {
				trained = trained || v != 0
			}
		}
	}
	if !trained {
		t.Error("every lora_B is zero: nothing trained")
	}
	if !model.IsAdapter(filepath.Join(out, "checkpoint-00000002")) {
		t.Error("the checkpoint holds no adapter")
	}
}

// Bad LoRA flags fail with one line naming the problem, before anything is written.
func TestTrainRejectsBadLoRAFlags(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--lora-rank", "-2"}, "--lora-rank -2"},
		{[]string{"--lora-rank", "4", "--lora-alpha", "0"}, "--lora-alpha 0"},
		{[]string{"--lora-rank", "4", "--lora-dropout", "1"}, "--lora-dropout 1"},
		{[]string{"--lora-rank", "4", "--lora-targets", "q_proj,lm_head"}, `lora target "lm_head"`},
		{[]string{"--lora-rank", "4", "--lora-targets", ","}, "lora targets: none given"},
		{[]string{"--lora-dropout", "0.1"}, "--lora-dropout needs --lora-rank"},
	} {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			out := filepath.Join(t.TempDir(), "out")
			app := newApp()
			var buf bytes.Buffer
			app.Writer, app.ErrWriter = &buf, &buf
			args := append([]string{"autoif", "train", "dpo", "--model", filepath.Join(parityFixture, "policy"),
				"--pairs", filepath.Join(parityFixture, "pairs.jsonl"), "--out", out}, tc.args...)
			err := app.RunContext(context.Background(), args)
			if err == nil || !strings.Contains(err.Error(), tc.want) || strings.Contains(err.Error(), "\n") {
				t.Fatalf("got %v, want one line containing %q", err, tc.want)
			}
			if _, err := os.Stat(out); !os.IsNotExist(err) {
				t.Errorf("--out exists after bad flags (%v)", err)
			}
		})
	}
}
