package synth

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/autoif/autoif/endpoint"
	"github.com/autoif/autoif/reward/crossval"
)

// Config is a whole pipeline run, read from YAML (see synth/examples).
type Config struct {
	// Endpoints are the model servers, by a name the stages refer to.
	Endpoints map[string]EndpointConfig `yaml:"endpoints"`
	// Start is the first stage (default instructions) and Input its input: seed
	// instructions for "instructions", instructions (text or JSONL) for "functions", and
	// for a later stage the previous stage's output file, in the formats StageFiles hold (the
	// reference pipeline's files of that stage load too).
	Start string `yaml:"start"`
	Input string `yaml:"input"`
	// Queries is the user queries file (ShareGPT JSON/JSONL, JSONL with query, or text).
	Queries string `yaml:"queries"`
	// Stop ends the run after this stage (default export).
	Stop string `yaml:"stop"`
	// Cache is the request cache directory (default OUT/cache).
	Cache string `yaml:"cache"`
	// NLI picks the back-translation consistency check: a text-classification server
	// (tei: URL) or an LLM endpoint by name (endpoint: NAME); default the backtranslate
	// stage's endpoint.
	NLI     NLIConfig    `yaml:"nli"`
	Prompts Prompts      `yaml:"prompts"`
	Stages  StagesConfig `yaml:"stages"`
}

// EndpointConfig is one OpenAI-compatible server.
type EndpointConfig struct {
	URL   string `yaml:"url"`
	Model string `yaml:"model"`
	// APIKeyEnv names the environment variable holding the key (default AUTOIF_API_KEY, then
	// OPENAI_API_KEY); keys never go in the config.
	APIKeyEnv   string        `yaml:"api_key_env"`
	Concurrency int           `yaml:"concurrency"`
	Timeout     time.Duration `yaml:"timeout"`
	Retries     *int          `yaml:"retries"`
}

// NLIConfig picks the NLI judge.
type NLIConfig struct {
	TEI      string   `yaml:"tei"`
	Endpoint string   `yaml:"endpoint"`
	Sampling Sampling `yaml:"sampling"`
}

// LLMStage is the part of a stage's config that talks to a model.
type LLMStage struct {
	Endpoint string   `yaml:"endpoint"`
	Sampling Sampling `yaml:"sampling"`
}

// StagesConfig holds each stage's settings.
type StagesConfig struct {
	Instructions LLMStage `yaml:"instructions"`
	Functions    LLMStage `yaml:"functions"`
	Crossval     struct {
		MinFunctions        int     `yaml:"min_functions"`
		MinCases            int     `yaml:"min_cases"`
		MinAccuracy         float64 `yaml:"min_accuracy"`
		ReferenceThresholds bool    `yaml:"reference_thresholds"`
	} `yaml:"crossval"`
	Backtranslate struct {
		LLMStage  `yaml:",inline"`
		Functions int `yaml:"functions"`
		Checks    int `yaml:"checks"`
	} `yaml:"backtranslate"`
	Queries struct {
		PerInstruction int    `yaml:"per_instruction"`
		MinChars       int    `yaml:"min_chars"`
		MaxChars       int    `yaml:"max_chars"`
		Seed           uint64 `yaml:"seed"`
	} `yaml:"queries"`
	Responses struct {
		LLMStage    `yaml:",inline"`
		MinPassRate float64 `yaml:"min_pass_rate"`
	} `yaml:"responses"`
	Judge struct {
		LLMStage `yaml:",inline"`
		MinScore float64 `yaml:"min_score"`
	} `yaml:"judge"`
	Export struct {
		PairsPerSide int     `yaml:"pairs_per_side"`
		MinPositive  float64 `yaml:"min_positive"`
		Seed         uint64  `yaml:"seed"`
	} `yaml:"export"`
}

// LoadConfig reads a YAML config; unknown keys are errors, and relative paths are taken
// from the config file's directory.
func LoadConfig(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var c Config
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(&c); err != nil && err != io.EOF {
		// yaml.v3 lists each problem on its own line; one line reads better on a terminal.
		return nil, fmt.Errorf("%s: %s", path, strings.Join(strings.Fields(err.Error()), " "))
	}
	dir := filepath.Dir(path)
	for _, p := range []*string{&c.Input, &c.Queries, &c.Cache} {
		if *p != "" && !filepath.IsAbs(*p) {
			*p = filepath.Join(dir, *p)
		}
	}
	if err := c.validate(); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return &c, nil
}

func (c *Config) stopIndex() int {
	if c.Stop == "" {
		return len(Stages) - 1
	}
	return slices.Index(Stages, c.Stop)
}

func (c *Config) startIndex() int {
	if c.Start == "" {
		return 0
	}
	return slices.Index(Stages, c.Start)
}

func (c *Config) validate() error {
	if c.Input == "" {
		return fmt.Errorf("input: required (the start stage's input file)")
	}
	if i := c.startIndex(); i < 0 || Stages[i] == "export" {
		return fmt.Errorf("start: %q is not a stage to start at (%v)", c.Start, Stages[:len(Stages)-1])
	}
	if c.stopIndex() < 0 {
		return fmt.Errorf("stop: %q is not a stage (%v)", c.Stop, Stages)
	}
	if c.stopIndex() < c.startIndex() {
		return fmt.Errorf("stop: %q comes before start %q", c.Stop, Stages[c.startIndex()])
	}
	if c.startIndex() <= slices.Index(Stages, "queries") && c.stopIndex() >= slices.Index(Stages, "queries") && c.Queries == "" {
		return fmt.Errorf("queries: a user queries file is required to run past backtranslate")
	}
	for name, e := range c.Endpoints {
		if e.URL == "" || e.Model == "" {
			return fmt.Errorf("endpoints.%s: url and model are required", name)
		}
	}
	check := func(stage, name string) error {
		if slices.Index(Stages, stage) < c.startIndex() || slices.Index(Stages, stage) > c.stopIndex() {
			return nil
		}
		if name == "" {
			return fmt.Errorf("stages.%s.endpoint: required", stage)
		}
		if _, ok := c.Endpoints[name]; !ok {
			return fmt.Errorf("stages.%s.endpoint: %q is not in endpoints", stage, name)
		}
		return nil
	}
	for _, s := range []struct{ stage, ep string }{{"instructions", c.Stages.Instructions.Endpoint}, {"functions", c.Stages.Functions.Endpoint},
		{"backtranslate", c.Stages.Backtranslate.Endpoint}, {"responses", c.Stages.Responses.Endpoint}, {"judge", c.Stages.Judge.Endpoint}} {
		if err := check(s.stage, s.ep); err != nil {
			return err
		}
	}
	if c.NLI.Endpoint != "" {
		if _, ok := c.Endpoints[c.NLI.Endpoint]; !ok {
			return fmt.Errorf("nli.endpoint: %q is not in endpoints", c.NLI.Endpoint)
		}
	}
	for _, v := range []struct {
		name string
		bad  bool
	}{
		{"stages.responses.min_pass_rate must be in [0, 1)", c.Stages.Responses.MinPassRate < 0 || c.Stages.Responses.MinPassRate >= 1},
		{"stages.judge.min_score must be in [0, 10]", c.Stages.Judge.MinScore < 0 || c.Stages.Judge.MinScore > 10},
		{"stages.crossval.min_accuracy must be in [0, 1]", c.Stages.Crossval.MinAccuracy < 0 || c.Stages.Crossval.MinAccuracy > 1},
		{"stages.export.min_positive must be in [0, 1]", c.Stages.Export.MinPositive < 0 || c.Stages.Export.MinPositive > 1},
	} {
		if v.bad {
			return fmt.Errorf("%s", v.name)
		}
	}
	return c.Prompts.withDefaults().check()
}

// Files of a run directory, by stage.
var StageFiles = map[string]string{
	"instructions":  "1_instructions.jsonl",
	"functions":     "2_functions.jsonl",
	"crossval":      "3_cross_validation.jsonl",
	"backtranslate": "4_back_translation.jsonl",
	"queries":       "5_queries.jsonl",
	"responses":     "6_responses.jsonl",
	"judge":         "7_judged.jsonl",
	"export":        "export",
}

// JudgeScoresFile holds every judged response with its score, kept or not.
const JudgeScoresFile = "7_judge_scores.jsonl"

// Sandbox runs verification functions for cross-validation and response scoring;
// *reward.Pool is one.
type Sandbox interface {
	crossval.Sandbox
	Scorer
}

// RunOptions are what a run needs besides its config.
type RunOptions struct {
	Sandbox Sandbox
	// Progress gets the clients' progress lines and the funnel table.
	Progress io.Writer
	// HTTP is the HTTP client of every endpoint (default: a fresh one).
	Client *http.Client
}

// Run runs the configured stages in order into dir, each stage's output a file named by
// StageFiles, and the funnel in dir/funnel.json (rewritten after every stage). Requests go
// through the on-disk cache, so a run killed at any point and started again sends only the
// requests that were not answered, and a finished run repeated sends nothing.
func Run(ctx context.Context, c *Config, dir string, o RunOptions) (*Funnel, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	cache := c.Cache
	if cache == "" {
		cache = filepath.Join(dir, "cache")
	}
	prompts := c.Prompts.withDefaults()
	clients := map[string]*endpoint.Client{}
	for name, e := range c.Endpoints {
		key := endpoint.APIKeyFromEnv()
		if e.APIKeyEnv != "" {
			key = os.Getenv(e.APIKeyEnv)
		}
		retries := 6
		if e.Retries != nil {
			retries = *e.Retries
		}
		cl, err := endpoint.NewClient(endpoint.ClientOptions{URL: e.URL, Model: e.Model, APIKey: key, Concurrency: e.Concurrency,
			Timeout: e.Timeout, Retries: retries, CacheDir: cache, Client: o.Client, Progress: o.Progress, Label: name})
		if err != nil {
			return nil, fmt.Errorf("endpoints.%s: %w", name, err)
		}
		clients[name] = cl
	}
	funnelPath := filepath.Join(dir, "funnel.json")
	funnel := &Funnel{}
	path := func(stage string) string { return filepath.Join(dir, StageFiles[stage]) }
	// record adds a stage's report, with the work of every client during it, and saves.
	record := func(rep *StageReport, before map[string]endpoint.Stats) error {
		var total endpoint.Stats
		used := false
		for name, cl := range clients {
			d := StatsDelta(before[name], cl.Stats())
			if d != (endpoint.Stats{}) {
				used = true
			}
			total = addStats(total, d)
		}
		if used {
			rep.Client = &total
		}
		funnel.Set(*rep)
		return funnel.Save(funnelPath)
	}
	snapshot := func() map[string]endpoint.Stats {
		m := map[string]endpoint.Stats{}
		for name, cl := range clients {
			m[name] = cl.Stats()
		}
		return m
	}
	// live writes a stage's output only when the run was not cancelled: a cancelled stage
	// has requests left unanswered and must not look complete.
	live := func(stage string, write func() error) error {
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("%s: %w", stage, err)
		}
		return write()
	}
	var (
		instructions []string
		frows        []FunctionsRow
		cvRows       []BackTransRow
		btRows       []BackTransRow
		qRows        []QueryRow
		rRows        []ResponsesRow
		kept         []JudgedRow
		err          error
	)
	first, last := c.startIndex(), c.stopIndex()
	switch Stages[first] {
	case "instructions", "functions":
		instructions, err = ReadInstructions(c.Input)
	case "crossval":
		frows, err = ReadJSONL[FunctionsRow](c.Input)
	case "backtranslate":
		cvRows, err = ReadJSONL[BackTransRow](c.Input)
	case "queries":
		btRows, err = ReadJSONL[BackTransRow](c.Input)
	case "responses":
		qRows, err = ReadQueryRows(c.Input, prompts)
	case "judge":
		rRows, err = ReadJudgeInput(c.Input)
	}
	if err != nil {
		return nil, fmt.Errorf("input: %w", err)
	}
	for _, stage := range Stages[first : last+1] {
		before := snapshot()
		var rep *StageReport
		var werr error
		switch stage {
		case "instructions":
			st := c.Stages.Instructions
			var rows []InstructionRow
			rows, rep = Instructions(ctx, clients[st.Endpoint], instructions, InstructionsOptions{Sampling: st.Sampling, Prompts: prompts})
			instructions = nil
			for _, r := range rows {
				instructions = append(instructions, r.Instruction)
			}
			werr = live(stage, func() error { return WriteJSONL(path(stage), rows) })
		case "functions":
			st := c.Stages.Functions
			frows, rep = Functions(ctx, clients[st.Endpoint], instructions, FunctionsOptions{Sampling: st.Sampling, Prompts: prompts})
			werr = live(stage, func() error { return WriteJSONL(path(stage), frows) })
		case "crossval":
			if o.Sandbox == nil {
				return nil, fmt.Errorf("crossval: no sandbox")
			}
			cv := c.Stages.Crossval
			cvRows, rep, err = CrossValidate(ctx, o.Sandbox, frows, crossval.Options{MinFunctions: cv.MinFunctions, MinCases: cv.MinCases,
				MinAccuracy: cv.MinAccuracy, ReferenceThresholds: cv.ReferenceThresholds})
			if err != nil {
				return nil, fmt.Errorf("crossval: %w", err)
			}
			werr = live(stage, func() error { return WriteJSONL(path(stage), cvRows) })
		case "backtranslate":
			bt := c.Stages.Backtranslate
			nli := c.nli(clients, bt.Endpoint, prompts, o.Client)
			btRows, rep = BackTranslate(ctx, clients[bt.Endpoint], nli, cvRows, BackTranslateOptions{Sampling: bt.Sampling, Prompts: prompts,
				Functions: bt.Functions, Checks: bt.Checks})
			werr = live(stage, func() error { return WriteJSONL(path(stage), btRows) })
		case "queries":
			queries, err := ReadQueries(c.Queries)
			if err != nil {
				return nil, fmt.Errorf("queries: %w", err)
			}
			q := c.Stages.Queries
			qRows, rep, err = Queries(btRows, queries, QueriesOptions{Prompts: prompts, PerInstruction: q.PerInstruction, MinChars: q.MinChars, MaxChars: q.MaxChars, Seed: q.Seed})
			if err != nil {
				return nil, err
			}
			werr = live(stage, func() error { return WriteJSONL(path(stage), qRows) })
		case "responses":
			if o.Sandbox == nil {
				return nil, fmt.Errorf("responses: no sandbox")
			}
			rs := c.Stages.Responses
			rRows, rep, err = Responses(ctx, clients[rs.Endpoint], o.Sandbox, qRows, ResponsesOptions{Sampling: rs.Sampling, MinPassRate: rs.MinPassRate})
			if err != nil {
				return nil, fmt.Errorf("responses: %w", err)
			}
			werr = live(stage, func() error { return WriteJSONL(path(stage), rRows) })
		case "judge":
			j := c.Stages.Judge
			var all []JudgedRow
			kept, all, rep = Judge(ctx, clients[j.Endpoint], rRows, JudgeOptions{Sampling: j.Sampling, Prompts: prompts, MinScore: j.MinScore})
			werr = live(stage, func() error {
				if err := WriteJSONL(filepath.Join(dir, JudgeScoresFile), all); err != nil {
					return err
				}
				return WriteJSONL(path(stage), kept)
			})
		case "export":
			e := c.Stages.Export
			rep, err = Export(kept, rRows, path(stage), ExportOptions{PairsPerSide: e.PairsPerSide, MinPositive: e.MinPositive, Seed: e.Seed})
			if err != nil {
				return nil, err
			}
		}
		if werr != nil {
			return nil, werr
		}
		if err := record(rep, before); err != nil {
			return nil, err
		}
	}
	return funnel, nil
}

func (c *Config) nli(clients map[string]*endpoint.Client, btEndpoint string, prompts Prompts, hc *http.Client) NLI {
	if c.NLI.TEI != "" {
		return TEINLI{URL: c.NLI.TEI, Client: hc}
	}
	name := c.NLI.Endpoint
	if name == "" {
		name = btEndpoint
	}
	return LLMNLI{LLM: clients[name], Sampling: c.NLI.Sampling, Prompts: prompts}
}

func addStats(a, b endpoint.Stats) endpoint.Stats {
	return endpoint.Stats{Requests: a.Requests + b.Requests, Cached: a.Cached + b.Cached, Failures: a.Failures + b.Failures,
		Retries: a.Retries + b.Retries, PromptTokens: a.PromptTokens + b.PromptTokens, CompletionTokens: a.CompletionTokens + b.CompletionTokens}
}

var queryInPrompt = regexp.MustCompile(`(?s)\[Query\](.*)$`)

// ReadQueryRows reads the responses stage's input: this package's query rows, or the
// reference's rows holding the response prompt but no query field (the query is taken from
// the prompt, as the reference's code/7 does).
func ReadQueryRows(path string, p Prompts) ([]QueryRow, error) {
	rows, err := ReadJSONL[QueryRow](path)
	if err != nil {
		return nil, err
	}
	for i := range rows {
		r := &rows[i]
		if r.Query == "" {
			if m := queryInPrompt.FindStringSubmatch(r.Prompt); m != nil {
				r.Query = strings.TrimSpace(m[1])
			}
		}
		if r.Query == "" || r.Instruction == "" {
			return nil, fmt.Errorf("%s: row %d: want instruction and query (or a prompt ending in [Query] ...)", path, i+1)
		}
		if r.Prompt == "" {
			r.Prompt = fill(p.Response, "instruction", r.Instruction, "query", r.Query)
		}
	}
	return rows, nil
}

// ReadJudgeInput reads the judge's input: the responses stage's rows, or one response per
// row (instruction, query, response: the reference's query_wo_score.jsonl).
func ReadJudgeInput(path string) ([]ResponsesRow, error) {
	type row struct {
		ResponsesRow
		Response *string `json:"response"`
	}
	rows, err := ReadJSONL[row](path)
	if err != nil {
		return nil, err
	}
	out := make([]ResponsesRow, len(rows))
	for i, r := range rows {
		if r.Response != nil {
			r.Kept = append(r.Kept, *r.Response)
		}
		out[i] = r.ResponsesRow
	}
	return out, nil
}
