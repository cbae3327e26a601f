package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"path/filepath"
	"strconv"

	"github.com/urfave/cli/v2"

	"github.com/autoif/autoif/model"
	"github.com/autoif/autoif/rollout"
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
			"answered in the X-Autoif-Policy-Version header and in system_fingerprint.\n\n" +
			"With the global --run ID (and --nats URL) it serves that run's current policy and swaps to each\n" +
			"version the trainer publishes, as the rollout workers do; requests in flight finish on the\n" +
			"version they started with. --model is then the initial policy (served until a version is\n" +
			"published) and the base of LoRA adapter versions.",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "model", Usage: "checkpoint directory (required without --run; with it, the initial policy and LoRA base)"},
			&cli.StringFlag{Name: "adapter", Usage: "PEFT LoRA adapter directory to run over --model's weights"},
			&cli.StringFlag{Name: "host", Value: "127.0.0.1", Usage: "address to listen on"},
			&cli.IntFlag{Name: "port", Value: 8000, Usage: "port to listen on (0 picks a free one)"},
			&cli.StringFlag{Name: "served-model-name", Usage: "model id clients send (default: the checkpoint directory's name)"},
			&cli.IntFlag{Name: "max-batch", Value: 8, Usage: "sequences decoding together at most (a request's n choices take one each)"},
			&cli.IntFlag{Name: "max-queue", Value: 64, Usage: "requests waiting for a batch slot at most; past it, 503"},
			&cli.IntFlag{Name: "max-model-len", Usage: "context length, prompt plus completion (default: the model's, at most 4096)"},
			&cli.StringFlag{Name: "api-key", Usage: "require this key as a Bearer token on /v1/ endpoints"},
			&cli.IntFlag{Name: "threads", Usage: "decode threads (default: number of CPUs)"},
			&cli.StringFlag{Name: "cache-dir", Usage: "with --run: where downloaded policy versions go (default <run dir>/serve-cache)"},
			&cli.BoolFlag{Name: "memory", Usage: "with --run: the run keeps its streams in memory (as `autoif run --memory`)"},
			float32Flag(),
		},
		Action: serveAction,
	}
}

func serveAction(c *cli.Context) error {
	follow := c.IsSet(flagRun)
	if !follow {
		if err := requireModelFlags(c, "model"); err != nil {
			return fmt.Errorf("%w (or --run ID to serve a run's policy)", err)
		}
	} else if c.String(flagNATS) == "" {
		return fmt.Errorf("--run %s needs --nats URL: the run's NATS server", c.String(flagRun))
	}
	for _, f := range []string{"max-batch", "max-queue"} {
		if c.Int(f) < 1 {
			return fmt.Errorf("--%s %d: want at least 1", f, c.Int(f))
		}
	}
	if c.Int("max-model-len") < 0 {
		return fmt.Errorf("--max-model-len %d: want a positive length", c.Int("max-model-len"))
	}
	port := c.Int("port")
	if port < 0 || port > 65535 {
		return fmt.Errorf("--port %d: want 0 to 65535", port)
	}
	var base *rollout.Policy
	if dir := c.String("model"); dir != "" {
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
		base = &rollout.Policy{Model: m, Tok: tok, Dir: dir}
	}
	policy := base
	var follower *rollout.Follower
	if follow {
		bus, res, err := joinRun(c, "serve")
		if err != nil {
			return err
		}
		defer bus.Close()
		cacheDir := c.String("cache-dir")
		if cacheDir == "" {
			cacheDir = filepath.Join(runDir(c), "serve-cache")
		}
		if follower, err = rollout.NewFollower(res, rollout.FollowOptions{CacheDir: cacheDir, Base: base, Threads: c.Int("threads")}); err != nil {
			return err
		}
		if policy, err = follower.Current(c.Context); err != nil {
			return fmt.Errorf("serve: %w", err)
		}
	}
	name := c.String("served-model-name")
	if name == "" {
		name = filepath.Base(filepath.Clean(policy.Dir))
		if follow {
			name = c.String(flagRun)
		}
	}
	s, err := serve.New(&serve.Policy{Model: policy.Model, Version: policy.Version}, policy.Tok, serve.Options{
		ModelName: name, MaxBatch: c.Int("max-batch"), MaxQueue: c.Int("max-queue"),
		MaxLen: c.Int("max-model-len"), APIKey: c.String("api-key"), Logger: slog.Default(),
	})
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", net.JoinHostPort(c.String("host"), strconv.Itoa(port)))
	if err != nil {
		return fmt.Errorf("serve: %w", err)
	}
	ctx, cancel := context.WithCancel(c.Context)
	defer cancel()
	if follower != nil {
		go func() {
			err := follower.Follow(ctx, policy.Version, func(p *rollout.Policy) {
				if err := s.SetPolicy(&serve.Policy{Model: p.Model, Version: p.Version}); err != nil {
					slog.Error("not serving the new policy", "version", p.Version, "err", err)
				}
			})
			if err != nil {
				slog.Error("serve: no hot-swap", "err", err)
			}
		}()
	}
	return s.Serve(ctx, ln)
}

func benchServeCommand() *cli.Command {
	return &cli.Command{
		Name:  "serve",
		Usage: "tokens/s of concurrent clients against the same requests one after another, on one `autoif serve` server",
		Flags: []cli.Flag{
			&cli.IntFlag{Name: "clients", Value: 8, Usage: "concurrent clients"},
			&cli.IntFlag{Name: "requests", Usage: "requests per phase (default 2 × clients)"},
			&cli.IntFlag{Name: "prompt-len", Value: 16, Usage: "prompt tokens per request"},
			&cli.IntFlag{Name: "max-tokens", Value: 64, Usage: "completion tokens per request (ignore_eos: every request decodes all)"},
			&cli.IntFlag{Name: "threads", Usage: "decode threads (default: number of CPUs)"},
			&cli.StringFlag{Name: "model", Usage: "benchmark this checkpoint instead of a fresh ~28M-parameter one"},
			&cli.Uint64Flag{Name: "seed", Value: 1, Usage: "initialisation and prompt seed"},
		},
		Action: func(c *cli.Context) error {
			dir, cleanup, err := benchModelDir(c, "autoif-bench-serve-")
			if err != nil {
				return err
			}
			defer cleanup()
			m, err := model.LoadModel(dir, model.LoadOptions{})
			if err != nil {
				return err
			}
			m.Threads = c.Int("threads")
			// The fresh bench checkpoint has no tokenizer; the requests are token ids, and a
			// generated byte-level tokenizer (within the model's vocabulary) decodes the output.
			if !c.IsSet("model") {
				if err := writeByteLevelTokenizer(dir, "", 0); err != nil {
					return err
				}
			}
			tok, err := loadModelTokenizer(dir)
			if err != nil {
				return err
			}
			clients := c.Int("clients")
			s, err := serve.New(&serve.Policy{Model: m}, tok, serve.Options{
				ModelName: "bench", MaxBatch: max(clients, 1), MaxQueue: max(c.Int("requests"), 2*clients, 1),
				Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
			})
			if err != nil {
				return err
			}
			r, err := serve.Bench(c.Context, s, serve.BenchOptions{Clients: clients, Requests: c.Int("requests"),
				PromptLen: c.Int("prompt-len"), MaxTokens: c.Int("max-tokens"), Seed: c.Uint64("seed")})
			if err != nil {
				return err
			}
			out := c.App.Writer
			fmt.Fprintf(out, "model: %s, %.1fM parameters, %s weights\n", describeModel(m.Config), float64(m.Config.NumParams())/1e6, m.WeightDType())
			for _, p := range []serve.BenchPhase{r.Sequential, r.Concurrent} {
				fmt.Fprintf(out, "%d client(s): %d requests, %d tokens in %.2fs: %.1f tokens/s, TTFT p50 %.1f ms p99 %.1f ms\n",
					p.Clients, p.Requests, p.Tokens, p.Seconds, p.TokensPerSec, p.TTFTP50, p.TTFTP99)
			}
			fmt.Fprintf(out, "concurrent/sequential: %.2fx\n", r.Speedup)
			return printModelJSON(out, r)
		},
	}
}
