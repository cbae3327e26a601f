// Package synth is AutoIF's data pipeline (QwenLM/AutoIF code/ stages 1-9) against any
// OpenAI-compatible model: instructions, verification functions, cross-validation,
// back-translation, queries, verified responses, judging and export to SFT data, DPO pairs
// and the prompt set of the online loop. Each stage reads and writes the reference pipeline's
// file formats and reports a line of the funnel.
package synth

import (
	"context"
	"fmt"
	"hash/fnv"
	"math/rand/v2"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/autoif/autoif/endpoint"
	"github.com/autoif/autoif/reward"
	"github.com/autoif/autoif/reward/crossval"
)

// Stages are the pipeline's stages in order.
var Stages = []string{"instructions", "functions", "crossval", "backtranslate", "queries", "responses", "judge", "export"}

// LLM is what the stages need of a model server; *endpoint.Client is one.
type LLM interface {
	ChatAll(ctx context.Context, reqs []endpoint.Request) []endpoint.Result
}

// Scorer scores responses with verification functions; *reward.Pool is one.
type Scorer interface {
	Score(ctx context.Context, funcs []string, responses []string) (*reward.Result, error)
}

// Sampling is how a stage samples: N completions per prompt, and the usual knobs (0 leaves
// the server's default, except Temperature, where 0 is greedy).
type Sampling struct {
	N           int     `yaml:"n"`
	Temperature float64 `yaml:"temperature"`
	TopP        float64 `yaml:"top_p"`
	MaxTokens   int     `yaml:"max_tokens"`
}

func (s Sampling) request(prompt string) endpoint.Request {
	return endpoint.UserRequest(prompt, s.N, s.Temperature, s.TopP, s.MaxTokens)
}

// askAll sends one request per prompt.
func askAll(ctx context.Context, llm LLM, s Sampling, prompts []string) []endpoint.Result {
	reqs := make([]endpoint.Request, len(prompts))
	for i, p := range prompts {
		reqs[i] = s.request(p)
	}
	return llm.ChatAll(ctx, reqs)
}

// StatsDelta is the work a client did between two snapshots.
func StatsDelta(before, after endpoint.Stats) endpoint.Stats {
	return endpoint.Stats{Requests: after.Requests - before.Requests, Cached: after.Cached - before.Cached,
		Failures: after.Failures - before.Failures, Retries: after.Retries - before.Retries,
		PromptTokens: after.PromptTokens - before.PromptTokens, CompletionTokens: after.CompletionTokens - before.CompletionTokens}
}

// normKey is how instructions are compared for duplicates: case, spacing and a final period
// do not make a new instruction.
func normKey(s string) string {
	return strings.TrimRight(strings.ToLower(strings.Join(strings.Fields(s), " ")), ".")
}

// InstructionsOptions configure stage 1.
type InstructionsOptions struct {
	Sampling Sampling
	Prompts  Prompts
}

// Instructions is stage 1 (self-instruct): the model writes new instructions from the seeds,
// N completions of the augmentation prompt; the output is the seeds and the new instructions,
// each once.
func Instructions(ctx context.Context, llm LLM, seeds []string, o InstructionsOptions) ([]InstructionRow, *StageReport) {
	start := time.Now()
	rep := newReport("instructions", "instructions")
	p := o.Prompts.withDefaults()
	prompt := fill(p.Instructions, "seeds", strings.Join(seeds, "\n"))
	var out []InstructionRow
	seen := map[string]bool{}
	for _, s := range seeds {
		if k := normKey(s); !seen[k] {
			seen[k] = true
			out = append(out, InstructionRow{s})
		}
	}
	seedKeys := len(seen)
	rep.In = len(out)
	for _, res := range askAll(ctx, llm, o.Sampling, []string{prompt}) {
		if res.Err != nil {
			rep.In += max(o.Sampling.N, 1)
			rep.requestFailed(res.Err, max(o.Sampling.N, 1))
			continue
		}
		for _, c := range res.Choices {
			for _, line := range ParseInstructionLines(c) {
				rep.In++
				k := normKey(line)
				switch {
				case seen[k] && isSeed(seeds, k):
					rep.drop(ReasonSeed, 1)
				case seen[k]:
					rep.drop(ReasonDuplicate, 1)
				default:
					seen[k] = true
					out = append(out, InstructionRow{line})
				}
			}
		}
	}
	rep.Kept = len(out)
	rep.Outputs["new instructions"] = len(out) - seedKeys
	rep.Seconds = time.Since(start).Seconds()
	return out, rep
}

func isSeed(seeds []string, key string) bool {
	for _, s := range seeds {
		if normKey(s) == key {
			return true
		}
	}
	return false
}

// FunctionsOptions configure stage 2.
type FunctionsOptions struct {
	Sampling Sampling
	Prompts  Prompts
}

// Functions is stage 2: N completions per instruction of a verification function and test
// cases. Completions are parsed tolerantly and written back as the single ```json block the
// cross-validation reads; an instruction with no usable completion is dropped.
func Functions(ctx context.Context, llm LLM, instructions []string, o FunctionsOptions) ([]FunctionsRow, *StageReport) {
	start := time.Now()
	rep := newReport("functions", "instructions")
	p := o.Prompts.withDefaults()
	prompts := make([]string, len(instructions))
	for i, in := range instructions {
		prompts[i] = fill(p.Functions, "instruction", in)
	}
	rep.In = len(instructions)
	var out []FunctionsRow
	completions := 0
	for i, res := range askAll(ctx, llm, o.Sampling, prompts) {
		if res.Err != nil {
			rep.requestFailed(res.Err, 1)
			continue
		}
		row := FunctionsRow{Prompt: prompts[i], Instruction: instructions[i]}
		for _, c := range res.Choices {
			fc, why := ParseFunctionCompletion(c)
			if why != "" {
				rep.detail(why, 1)
				continue
			}
			row.Completions = append(row.Completions, fc.Canonical())
		}
		if len(row.Completions) == 0 {
			rep.drop(ReasonNoUsable, 1)
			continue
		}
		completions += len(row.Completions)
		out = append(out, row)
	}
	rep.Kept = len(out)
	rep.Outputs["completions"] = completions
	rep.Seconds = time.Since(start).Seconds()
	return out, rep
}

// CrossValidate is stage 3, reward/crossval on the functions' completions.
func CrossValidate(ctx context.Context, sb crossval.Sandbox, rows []FunctionsRow, o crossval.Options) ([]BackTransRow, *StageReport, error) {
	start := time.Now()
	rep := newReport("crossval", "instructions")
	ins := make([]crossval.Input, len(rows))
	for i, r := range rows {
		ins[i] = crossval.Input{Instruction: r.Instruction, Completions: r.Completions}
	}
	outs, cr, err := crossval.Run(ctx, sb, ins, o)
	if err != nil {
		return nil, nil, err
	}
	rep.In = cr.Instructions
	for _, ir := range cr.PerInstr {
		if !ir.Kept {
			rep.drop(Reason(ir.Reason), 1)
		}
		for r, n := range ir.Dropped {
			rep.detail(Reason(r), n)
		}
	}
	out := make([]BackTransRow, len(outs))
	for i, o := range outs {
		out[i] = BackTransRow{Instruction: o.Instruction, Functions: o.Functions, Cases: o.Cases}
	}
	rep.Kept = len(out)
	rep.Seconds = time.Since(start).Seconds()
	return out, rep, nil
}

// BackTranslateOptions configure stage 4.
type BackTranslateOptions struct {
	Sampling Sampling
	Prompts  Prompts
	// Functions is how many of an instruction's functions the prompt shows (default 3, the
	// reference's; negative: all).
	Functions int
	// Checks is how many back-translations are checked against the instruction (default 3,
	// the reference's; negative: all).
	Checks int
}

// BackTranslate is stage 4 and its filter (reference stage 5): the model turns the functions
// back into instructions, and an instruction any of whose checked back-translations
// contradicts it (by the NLI judgement) is dropped.
func BackTranslate(ctx context.Context, llm LLM, nli NLI, rows []BackTransRow, o BackTranslateOptions) ([]BackTransRow, *StageReport) {
	start := time.Now()
	rep := newReport("backtranslate", "instructions")
	p := o.Prompts.withDefaults()
	if o.Functions == 0 {
		o.Functions = 3
	}
	if o.Checks == 0 {
		o.Checks = 3
	}
	prompts := make([]string, len(rows))
	for i, r := range rows {
		var funcs []any
		for j, f := range r.Functions {
			if o.Functions > 0 && j >= o.Functions {
				break
			}
			funcs = append(funcs, []any{f.Source, f.Accuracy})
		}
		prompts[i] = fill(p.BackTranslate, "funcs", pyRepr(funcs))
	}
	rep.In = len(rows)
	type pending struct {
		row   int
		pairs int
	}
	var (
		cands []BackTransRow
		pairs [][2]string
		idx   []pending
	)
	for i, res := range askAll(ctx, llm, o.Sampling, prompts) {
		if res.Err != nil {
			rep.requestFailed(res.Err, 1)
			continue
		}
		list, ok := ParseStringList(res.Choices[0])
		if !ok {
			rep.drop(ReasonNoBackList, 1)
			continue
		}
		r := rows[i]
		r.BackInstruction = list
		checks := list
		if o.Checks > 0 && len(checks) > o.Checks {
			checks = checks[:o.Checks]
		}
		idx = append(idx, pending{row: len(cands), pairs: len(checks)})
		cands = append(cands, r)
		for _, b := range checks {
			pairs = append(pairs, [2]string{r.Instruction, b})
		}
	}
	labels, errs := nli.Classify(ctx, pairs)
	var out []BackTransRow
	k := 0
	for _, pd := range idx {
		r := cands[pd.row]
		failed, contradicts := false, false
		for j := 0; j < pd.pairs; j++ {
			if errs[k+j] != nil {
				failed = true
				rep.noteError(errs[k+j])
				continue
			}
			r.NLIScores = append(r.NLIScores, labels[k+j])
			contradicts = contradicts || labels[k+j] == "contradiction"
		}
		k += pd.pairs
		switch {
		case contradicts:
			rep.drop(ReasonContradicts, 1)
		case failed:
			rep.drop(ReasonNLIFailed, 1)
		default:
			out = append(out, r)
		}
	}
	rep.Kept = len(out)
	rep.Seconds = time.Since(start).Seconds()
	return out, rep
}

// QueriesOptions configure stage 6.
type QueriesOptions struct {
	Prompts Prompts
	// PerInstruction queries are drawn for each instruction (default 16).
	PerInstruction int
	// A query is used when MinChars < its length < MaxChars, in characters (defaults 20
	// and 300, the reference's bounds).
	MinChars, MaxChars int
	// Seed fixes the draw.
	Seed uint64
}

// Queries is stage 6: each instruction is paired with queries drawn without replacement
// from the user queries within the length bounds.
func Queries(rows []BackTransRow, queries []string, o QueriesOptions) ([]QueryRow, *StageReport, error) {
	start := time.Now()
	rep := newReport("queries", "instructions")
	p := o.Prompts.withDefaults()
	if o.PerInstruction <= 0 {
		o.PerInstruction = 16
	}
	if o.MinChars <= 0 {
		o.MinChars = 20
	}
	if o.MaxChars <= 0 {
		o.MaxChars = 300
	}
	var pool []string
	seen := map[string]bool{}
	for _, q := range queries {
		q = strings.TrimSpace(q)
		n := utf8.RuneCountInString(q)
		if n <= o.MinChars || n >= o.MaxChars {
			rep.detail(ReasonQueryLength, 1)
			continue
		}
		if seen[q] {
			rep.detail(ReasonDuplicate, 1)
			continue
		}
		seen[q] = true
		pool = append(pool, q)
	}
	if len(pool) == 0 && len(rows) > 0 {
		return nil, nil, fmt.Errorf("queries: none of the %d queries is between %d and %d characters", len(queries), o.MinChars, o.MaxChars)
	}
	rep.In = len(rows)
	var out []QueryRow
	for _, r := range rows {
		h := fnv.New64a()
		h.Write([]byte(r.Instruction))
		rng := rand.New(rand.NewPCG(o.Seed, h.Sum64()))
		perm := rng.Perm(len(pool))
		n := min(o.PerInstruction, len(pool))
		if n < o.PerInstruction {
			rep.detail(ReasonQueryNotEnough, 1)
		}
		for _, j := range perm[:n] {
			out = append(out, QueryRow{Instruction: r.Instruction, Query: pool[j], Functions: r.Functions, Cases: r.Cases,
				Prompt: fill(p.Response, "instruction", r.Instruction, "query", pool[j])})
		}
	}
	rep.Kept = len(rows)
	rep.Outputs["queries"] = len(out)
	rep.Seconds = time.Since(start).Seconds()
	return out, rep, nil
}

// ResponsesOptions configure stage 7's sampling and verification.
type ResponsesOptions struct {
	Sampling Sampling
	// MinPassRate: a response is kept when its pass rate over the functions is above this
	// (default 0: the reference keeps any response one function accepts).
	MinPassRate float64
	// Parallel bounds the queries scored at once (default 4).
	Parallel int
}

// Responses is stage 7: N responses per query, each scored by the query's verification
// functions in the sandbox (the fraction of the functions that gave a verdict that pass).
func Responses(ctx context.Context, llm LLM, sc Scorer, rows []QueryRow, o ResponsesOptions) ([]ResponsesRow, *StageReport, error) {
	start := time.Now()
	rep := newReport("responses", "responses")
	n := max(o.Sampling.N, 1)
	if o.Parallel <= 0 {
		o.Parallel = 4
	}
	prompts := make([]string, len(rows))
	for i, r := range rows {
		prompts[i] = r.Prompt
	}
	results := askAll(ctx, llm, o.Sampling, prompts)
	texts := make([][]string, len(rows))
	scores := make([][]reward.ResponseScore, len(rows))
	errs := make([]error, len(rows))
	sem := make(chan struct{}, o.Parallel)
	var wg sync.WaitGroup
	for i, res := range results {
		rep.In += n
		if res.Err != nil {
			rep.requestFailed(res.Err, n)
			continue
		}
		rep.In += len(res.Choices) - n // a server may return fewer or more than asked
		seen := map[string]bool{}
		for _, c := range res.Choices {
			switch {
			case strings.TrimSpace(c) == "":
				rep.drop(ReasonEmptyResponse, 1)
			case seen[c]:
				rep.drop(ReasonDuplicate, 1)
			default:
				seen[c] = true
				texts[i] = append(texts[i], c)
			}
		}
		if len(texts[i]) == 0 {
			continue
		}
		if len(rows[i].Functions) == 0 {
			rep.drop(ReasonNoFunctions, len(texts[i]))
			texts[i] = nil
			continue
		}
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			funcs := make([]string, len(rows[i].Functions))
			for j, f := range rows[i].Functions {
				funcs[j] = f.Source
			}
			scored, err := sc.Score(ctx, funcs, texts[i])
			if err != nil {
				errs[i] = fmt.Errorf("score responses to %q: %w", clip(rows[i].Query, 60), err)
				return
			}
			scores[i] = scored.Scores
		}()
	}
	wg.Wait()
	var rows2 []ResponsesRow
	for i := range rows {
		if errs[i] != nil {
			return nil, nil, errs[i]
		}
		if len(texts[i]) == 0 {
			continue
		}
		row := ResponsesRow{QueryRow: rows[i]}
		for j, t := range texts[i] {
			s := scores[i][j]
			if s.Ran == 0 {
				rep.detail(ReasonSandbox, 1)
			}
			row.Responses = append(row.Responses, Scored{t, s.Score})
			if s.Score > o.MinPassRate {
				row.Kept = append(row.Kept, t)
				rep.Kept++
			} else {
				rep.drop(ReasonLowPassRate, 1)
			}
		}
		if len(row.Kept) == 0 {
			rep.detail(ReasonNoVerifiedQuery, 1)
		}
		rows2 = append(rows2, row)
	}
	rep.Outputs["queries"] = len(rows2)
	rep.Seconds = time.Since(start).Seconds()
	return rows2, rep, nil
}

// JudgeOptions configure stage 8.
type JudgeOptions struct {
	Sampling Sampling
	Prompts  Prompts
	// MinScore keeps a response whose mean judge score is at least this (default 9: the
	// reference keeps a mean above 8 of integer scores).
	MinScore float64
}

// Judge is stage 8: the model scores each kept response against its instruction and query,
// and responses scored under MinScore are dropped. It returns the kept rows and every
// scored row.
func Judge(ctx context.Context, llm LLM, rows []ResponsesRow, o JudgeOptions) (kept, all []JudgedRow, rep *StageReport) {
	start := time.Now()
	rep = newReport("judge", "responses")
	p := o.Prompts.withDefaults()
	if o.MinScore == 0 {
		o.MinScore = 9
	}
	var cands []JudgedRow
	seen := map[[3]string]bool{}
	for _, r := range rows {
		for _, resp := range r.Kept {
			k := [3]string{r.Instruction, r.Query, resp}
			rep.In++
			if seen[k] {
				rep.drop(ReasonDuplicate, 1)
				continue
			}
			seen[k] = true
			cands = append(cands, JudgedRow{Instruction: r.Instruction, Query: r.Query, Response: resp, Functions: r.Functions,
				Prompt: fill(p.Judge, "instruction", r.Instruction, "query", r.Query, "response", resp)})
		}
	}
	prompts := make([]string, len(cands))
	for i, c := range cands {
		prompts[i] = c.Prompt
	}
	for i, res := range askAll(ctx, llm, o.Sampling, prompts) {
		if res.Err != nil {
			rep.requestFailed(res.Err, 1)
			continue
		}
		c := cands[i]
		c.Gen = res.Choices
		var sum float64
		n := 0
		for _, g := range res.Choices {
			if s, ok := ParseScore(g); ok {
				sum += s
				n++
			}
		}
		if n == 0 {
			rep.drop(ReasonNoScore, 1)
			all = append(all, c)
			continue
		}
		c.Score = sum / float64(n)
		all = append(all, c)
		if c.Score >= o.MinScore {
			kept = append(kept, c)
		} else {
			rep.drop(ReasonLowScore, 1)
		}
	}
	rep.Kept = len(kept)
	rep.Seconds = time.Since(start).Seconds()
	return kept, all, rep
}

func clip(s string, n int) string {
	if r := []rune(s); len(r) > n {
		return string(r[:n-1]) + "…"
	}
	return s
}
