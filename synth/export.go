package synth

import (
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/autoif/autoif/atomicfile"
	"github.com/autoif/autoif/reward/crossval"
)

// Export file names, in the export directory.
const (
	SFTMessagesFile = "sft.jsonl"       // messages (and prompt/response) per line
	SFTAlpacaFile   = "sft_alpaca.json" // LLaMA-Factory's alpaca format, as the reference writes
	DPOAutoIFFile   = "dpo_pairs.jsonl" // instruction/positive/negative, as the reference writes
	DPOTRLFile      = "dpo_trl.jsonl"   // prompt/chosen/rejected
	PromptsFile     = "prompts.jsonl"   // prompt, instruction, query, eval_func: autoif run --prompts
)

// ExportOptions configure stage 9.
type ExportOptions struct {
	// PairsPerSide is how many passing and failing responses of a query are paired, every
	// passing one with every failing one (default 2, the reference's).
	PairsPerSide int
	// MinPositive is the pass rate at which a response is a DPO positive (default 0.5, the
	// reference's); negatives pass no function.
	MinPositive float64
	Seed        uint64
}

// UserPrompt is how an instruction and a query become one user turn, as the reference's SFT
// export (code/9) writes it: the query, then the instruction, each capitalised. Unlike the
// reference it does not add a second period to an instruction that ends with one.
func UserPrompt(instruction, query string) string {
	q, in := capitalise(strings.TrimSpace(query)), capitalise(strings.TrimSpace(instruction))
	if !strings.HasSuffix(in, ".") && !strings.HasSuffix(in, "?") && !strings.HasSuffix(in, "!") {
		in += "."
	}
	if strings.ContainsAny(q, "?.") {
		return q + " " + in
	}
	return q + ". " + in
}

func capitalise(s string) string {
	r, n := utf8.DecodeRuneInString(s)
	if n == 0 {
		return s
	}
	return string(unicode.ToUpper(r)) + s[n:]
}

type message struct {
	Role    string `json:"role"`
	Content string `json:"content"`
}

type sftMessages struct {
	Messages []message `json:"messages"`
	// Prompt and Response repeat the turns for loaders that read those (autoif train sft).
	Prompt   string `json:"prompt"`
	Response string `json:"response"`
}

type alpaca struct {
	Instruction string     `json:"instruction"`
	Input       string     `json:"input"`
	Output      string     `json:"output"`
	History     [][]string `json:"history"`
}

type promptRow struct {
	Prompt      string          `json:"prompt"`
	Instruction string          `json:"instruction"`
	Query       string          `json:"query"`
	Functions   []crossval.Func `json:"eval_func"`
}

// Export is stage 9: the judged responses become SFT data; the scored responses of every
// query become DPO pairs (a passing response chosen over a failing one) and, with their
// functions, the prompt set of the online loop. It writes the files into dir.
func Export(judged []JudgedRow, responses []ResponsesRow, dir string, o ExportOptions) (*StageReport, error) {
	start := time.Now()
	rep := newReport("export", "judged responses")
	if o.PairsPerSide <= 0 {
		o.PairsPerSide = 2
	}
	if o.MinPositive <= 0 {
		o.MinPositive = 0.5
	}
	rep.In = len(judged)
	var sft []sftMessages
	var alp []alpaca
	seen := map[[2]string]bool{}
	for _, j := range judged {
		p := UserPrompt(j.Instruction, j.Query)
		if seen[[2]string{p, j.Response}] {
			rep.drop(ReasonDuplicate, 1)
			continue
		}
		seen[[2]string{p, j.Response}] = true
		sft = append(sft, sftMessages{Messages: []message{{"user", p}, {"assistant", j.Response}}, Prompt: p, Response: j.Response})
		alp = append(alp, alpaca{Instruction: p, Output: j.Response, History: [][]string{}})
	}
	rep.Kept = len(sft)

	rng := rand.New(rand.NewPCG(o.Seed, 0x5eed))
	type pair struct{ prompt, chosen, rejected string }
	var pairs []pair
	var prompts []promptRow
	seenPrompt := map[string]bool{}
	for _, r := range responses {
		p := UserPrompt(r.Instruction, r.Query)
		if !seenPrompt[p] && len(r.Functions) > 0 {
			seenPrompt[p] = true
			prompts = append(prompts, promptRow{Prompt: p, Instruction: r.Instruction, Query: r.Query, Functions: r.Functions})
		}
		var pos, neg []string
		for _, s := range r.Responses {
			switch {
			case s.Score >= o.MinPositive:
				pos = append(pos, s.Response)
			case s.Score == 0:
				neg = append(neg, s.Response)
			}
		}
		if len(pos) == 0 || len(neg) == 0 {
			rep.detail(ReasonNoPair, 1)
			continue
		}
		pos, neg = sample(rng, pos, o.PairsPerSide), sample(rng, neg, o.PairsPerSide)
		for _, c := range pos {
			for _, rj := range neg {
				pairs = append(pairs, pair{p, c, rj})
			}
		}
	}

	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	write := func(name string, n int, f func(w io.Writer) error) error {
		rep.Outputs[name] = n
		if err := atomicfile.Write(filepath.Join(dir, name), 0o644, f); err != nil {
			return fmt.Errorf("export %s: %w", name, err)
		}
		return nil
	}
	lines := func(n int, row func(i int) any) func(w io.Writer) error {
		return func(w io.Writer) error {
			enc := json.NewEncoder(w)
			enc.SetEscapeHTML(false)
			for i := range n {
				if err := enc.Encode(row(i)); err != nil {
					return err
				}
			}
			return nil
		}
	}
	if err := write(SFTMessagesFile, len(sft), lines(len(sft), func(i int) any { return sft[i] })); err != nil {
		return nil, err
	}
	if err := write(SFTAlpacaFile, len(alp), func(w io.Writer) error {
		if alp == nil {
			alp = []alpaca{}
		}
		enc := json.NewEncoder(w)
		enc.SetEscapeHTML(false)
		enc.SetIndent("", "  ")
		return enc.Encode(alp)
	}); err != nil {
		return nil, err
	}
	if err := write(DPOAutoIFFile, len(pairs), lines(len(pairs), func(i int) any {
		return map[string]string{"instruction": pairs[i].prompt, "positive": pairs[i].chosen, "negative": pairs[i].rejected}
	})); err != nil {
		return nil, err
	}
	if err := write(DPOTRLFile, len(pairs), lines(len(pairs), func(i int) any {
		return map[string]string{"prompt": pairs[i].prompt, "chosen": pairs[i].chosen, "rejected": pairs[i].rejected}
	})); err != nil {
		return nil, err
	}
	if err := write(PromptsFile, len(prompts), lines(len(prompts), func(i int) any { return prompts[i] })); err != nil {
		return nil, err
	}
	rep.Seconds = time.Since(start).Seconds()
	return rep, nil
}

// sample draws up to n items without replacement, keeping their order.
func sample(rng *rand.Rand, xs []string, n int) []string {
	if len(xs) <= n {
		return xs
	}
	idx := rng.Perm(len(xs))[:n]
	keep := make([]bool, len(xs))
	for _, i := range idx {
		keep[i] = true
	}
	var out []string
	for i, x := range xs {
		if keep[i] {
			out = append(out, x)
		}
	}
	return out
}
