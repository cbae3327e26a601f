package synth

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"sort"
	"strings"

	"github.com/autoif/autoif/atomicfile"
	"github.com/autoif/autoif/endpoint"
)

// Reason names why an item was dropped.
type Reason string

const (
	ReasonRequestFailed   Reason = "request: failed after retries"
	ReasonDuplicate       Reason = "duplicate"
	ReasonSeed            Reason = "repeats a seed instruction"
	ReasonNoJSON          Reason = "completion: no JSON object"
	ReasonNoFunc          Reason = "completion: no func string"
	ReasonNoUsable        Reason = "no usable completion"
	ReasonNoBackList      Reason = "back-translation: completion is not a list of strings"
	ReasonNLIFailed       Reason = "nli: no verdict"
	ReasonContradicts     Reason = "back-translation contradicts the instruction"
	ReasonQueryLength     Reason = "query: length out of bounds"
	ReasonQueryNotEnough  Reason = "instruction: fewer queries than asked for"
	ReasonNoFunctions     Reason = "no verification function"
	ReasonSandbox         Reason = "sandbox: no function gave a verdict"
	ReasonLowPassRate     Reason = "response: pass rate at or under threshold"
	ReasonEmptyResponse   Reason = "response: empty"
	ReasonNoScore         Reason = "judge: no score in completion"
	ReasonLowScore        Reason = "judge: score under threshold"
	ReasonNoPair          Reason = "dpo: no passing and failing response to pair"
	ReasonNoVerifiedQuery Reason = "query: no response above the pass-rate threshold"
)

// StageReport is one stage's line of the funnel: how many items (Unit) came in, were kept,
// and were dropped for each reason; In = Kept + the sum of Dropped.
type StageReport struct {
	Stage   string         `json:"stage"`
	Unit    string         `json:"unit"`
	In      int            `json:"in"`
	Kept    int            `json:"kept"`
	Dropped map[Reason]int `json:"dropped,omitempty"`
	// Details counts finer-grained drops (completions, functions, cases) that do not by
	// themselves drop an item.
	Details map[Reason]int `json:"details,omitempty"`
	// Outputs counts the rows written, by file.
	Outputs map[string]int `json:"outputs,omitempty"`
	// Errors counts the failed requests by error (at most maxErrors distinct messages, the
	// rest under "other errors"), so a funnel says why requests failed, not only how many.
	Errors map[string]int `json:"errors,omitempty"`
	// Client is the LLM client's work: requests, cache hits, failures, tokens.
	Client  *endpoint.Stats `json:"client,omitempty"`
	Seconds float64         `json:"seconds"`
}

func newReport(stage, unit string) *StageReport {
	return &StageReport{Stage: stage, Unit: unit, Dropped: map[Reason]int{}, Details: map[Reason]int{}, Outputs: map[string]int{}}
}

func (r *StageReport) drop(reason Reason, n int) {
	if n > 0 {
		r.Dropped[reason] += n
	}
}

// maxErrors bounds the distinct request errors a report keeps.
const maxErrors = 5

// requestFailed drops n items whose request failed with err, and records why.
func (r *StageReport) requestFailed(err error, n int) {
	r.drop(ReasonRequestFailed, n)
	r.noteError(err)
}

// noteError records why a request (or a judgement made of one) failed.
func (r *StageReport) noteError(err error) {
	if r.Errors == nil {
		r.Errors = map[string]int{}
	}
	msg := err.Error()
	if _, ok := r.Errors[msg]; !ok && len(r.Errors) >= maxErrors {
		msg = "other errors"
	}
	r.Errors[msg]++
}

func (r *StageReport) detail(reason Reason, n int) {
	if n > 0 {
		r.Details[reason] += n
	}
}

// DroppedTotal sums the drops.
func (r *StageReport) DroppedTotal() int {
	n := 0
	for _, v := range r.Dropped {
		n += v
	}
	return n
}

// Funnel is the report of a pipeline: one line per stage, in pipeline order.
type Funnel struct {
	Stages []StageReport `json:"stages"`
}

// Set records a stage's report, replacing an earlier one of the same stage.
func (f *Funnel) Set(r StageReport) {
	for i := range f.Stages {
		if f.Stages[i].Stage == r.Stage {
			f.Stages[i] = r
			return
		}
	}
	f.Stages = append(f.Stages, r)
	order := map[string]int{}
	for i, s := range Stages {
		order[s] = i
	}
	sort.SliceStable(f.Stages, func(i, j int) bool { return order[f.Stages[i].Stage] < order[f.Stages[j].Stage] })
}

// Stage returns a stage's report, or nil.
func (f *Funnel) Stage(name string) *StageReport {
	for i := range f.Stages {
		if f.Stages[i].Stage == name {
			return &f.Stages[i]
		}
	}
	return nil
}

// LoadFunnel reads funnel.json; a missing file is an empty funnel.
func LoadFunnel(path string) (*Funnel, error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return &Funnel{}, nil
	}
	if err != nil {
		return nil, err
	}
	var f Funnel
	if err := json.Unmarshal(data, &f); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return &f, nil
}

// Save writes the funnel atomically.
func (f *Funnel) Save(path string) error {
	data, err := json.MarshalIndent(f, "", "  ")
	if err != nil {
		return err
	}
	return atomicfile.WriteFile(path, append(data, '\n'), 0o644)
}

// Table prints the funnel like the paper's Table 5: per stage, items in and kept, the keep
// rate, then each drop reason.
func (f *Funnel) Table(w io.Writer) {
	fmt.Fprintf(w, "%-14s %-22s %8s %8s %7s %9s %12s\n", "stage", "unit", "in", "kept", "kept%", "requests", "tokens")
	for _, s := range f.Stages {
		rate := "-"
		if s.In > 0 {
			rate = fmt.Sprintf("%.1f", 100*float64(s.Kept)/float64(s.In))
		}
		req, tok := "-", "-"
		if s.Client != nil {
			req = fmt.Sprintf("%d", s.Client.Requests+s.Client.Failures)
			tok = fmt.Sprintf("%d", s.Client.PromptTokens+s.Client.CompletionTokens)
		}
		fmt.Fprintf(w, "%-14s %-22s %8d %8d %7s %9s %12s\n", s.Stage, s.Unit, s.In, s.Kept, rate, req, tok)
		for _, r := range sortedReasons(s.Dropped) {
			fmt.Fprintf(w, "%14s   dropped %6d  %s\n", "", s.Dropped[r], r)
		}
		for _, r := range sortedReasons(s.Details) {
			fmt.Fprintf(w, "%14s   (%6d  %s)\n", "", s.Details[r], r)
		}
		var errs []string
		for e := range s.Errors {
			errs = append(errs, e)
		}
		sort.Slice(errs, func(i, j int) bool {
			return s.Errors[errs[i]] > s.Errors[errs[j]] || s.Errors[errs[i]] == s.Errors[errs[j]] && errs[i] < errs[j]
		})
		for _, e := range errs {
			fmt.Fprintf(w, "%14s   failed  %6d  %s\n", "", s.Errors[e], e)
		}
		if len(s.Outputs) > 0 {
			var names []string
			for n := range s.Outputs {
				names = append(names, n)
			}
			sort.Strings(names)
			var parts []string
			for _, n := range names {
				parts = append(parts, fmt.Sprintf("%s %d", n, s.Outputs[n]))
			}
			fmt.Fprintf(w, "%14s   wrote %s\n", "", strings.Join(parts, ", "))
		}
	}
}

func sortedReasons(m map[Reason]int) []Reason {
	var rs []Reason
	for r, n := range m {
		if n > 0 {
			rs = append(rs, r)
		}
	}
	sort.Slice(rs, func(i, j int) bool {
		if m[rs[i]] != m[rs[j]] {
			return m[rs[i]] > m[rs[j]]
		}
		return rs[i] < rs[j]
	})
	return rs
}
