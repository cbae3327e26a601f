package main

import (
	"fmt"
	"log/slog"
	"net"
	"path/filepath"
	"strconv"

	"github.com/urfave/cli/v2"

	"github.com/autoif/autoif/model"
	"github.com/autoif/autoif/serve"
)

func serveCommand() *cli.Command {
	return &cli.Command{
		Name:  "serve",
		Usage: "serve a checkpoint over the OpenAI HTTP API (chat completions, completions, models)",
		Description: "Answers POST /v1/chat/completions, POST /v1/completions and GET /v1/models as vLLM does,\n" +
			"plus GET /health and GET /metrics (Prometheus). Concurrent requests share decode steps over one\n" +
			"KV cache (continuous batching): --max-batch sequences decode together, --max-queue requests wait\n" +
			"for a slot, and past that a request gets 503. Each response names the policy version that\n" +
			"answered in the X-Autoif-Policy-Version header and in system_fingerprint.",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "model", Usage: "checkpoint directory (required)"},
			&cli.StringFlag{Name: "adapter", Usage: "PEFT LoRA adapter directory to run over --model's weights"},
			&cli.StringFlag{Name: "host", Value: "127.0.0.1", Usage: "address to listen on"},
			&cli.IntFlag{Name: "port", Value: 8000, Usage: "port to listen on (0 picks a free one)"},
			&cli.StringFlag{Name: "served-model-name", Usage: "model id clients send (default: the checkpoint directory's name)"},
			&cli.IntFlag{Name: "max-batch", Value: 8, Usage: "sequences decoding together at most (a request's n choices take one each)"},
			&cli.IntFlag{Name: "max-queue", Value: 64, Usage: "requests waiting for a batch slot at most; past it, 503"},
			&cli.IntFlag{Name: "max-model-len", Usage: "context length, prompt plus completion (default: the model's, at most 4096)"},
			&cli.StringFlag{Name: "api-key", Usage: "require this key as a Bearer token on /v1/ endpoints"},
			&cli.IntFlag{Name: "threads", Usage: "decode threads (default: number of CPUs)"},
			float32Flag(),
		},
		Action: serveAction,
	}
}

func serveAction(c *cli.Context) error {
	if err := requireModelFlags(c, "model"); err != nil {
		return err
	}
	dir := c.String("model")
	m, err := model.LoadModel(dir, model.LoadOptions{Float32: c.Bool("float32")})
	if err != nil {
		return err
	}
	m.Threads = c.Int("threads")
	if ad := c.String("adapter"); ad != "" {
		a, err := model.LoadAdapter(ad)
		if err != nil {
			return err
		}
		if m, err = m.WithAdapter(a); err != nil {
			return fmt.Errorf("--adapter %s does not fit --model %s: %w", ad, dir, err)
		}
	}
	tok, err := loadModelTokenizer(dir)
	if err != nil {
		return err
	}
	name := c.String("served-model-name")
	if name == "" {
		name = filepath.Base(filepath.Clean(dir))
	}
	for _, f := range []string{"max-batch", "max-queue"} {
		if c.Int(f) < 1 {
			return fmt.Errorf("--%s %d: want at least 1", f, c.Int(f))
		}
	}
	if c.Int("max-model-len") < 0 {
		return fmt.Errorf("--max-model-len %d: want a positive length", c.Int("max-model-len"))
	}
	s, err := serve.New(&serve.Policy{Model: m}, tok, serve.Options{
		ModelName: name, MaxBatch: c.Int("max-batch"), MaxQueue: c.Int("max-queue"),
		MaxLen: c.Int("max-model-len"), APIKey: c.String("api-key"), Logger: slog.Default(),
	})
	if err != nil {
		return err
	}
	port := c.Int("port")
	if port < 0 || port > 65535 {
		return fmt.Errorf("--port %d: want 0 to 65535", port)
	}
	ln, err := net.Listen("tcp", net.JoinHostPort(c.String("host"), strconv.Itoa(port)))
	if err != nil {
		return fmt.Errorf("serve: %w", err)
	}
	return s.Serve(c.Context, ln)
}
