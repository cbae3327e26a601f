package reward

import (
	"fmt"
	"strings"
)

// Outcome is what one function did on one response.
type Outcome uint8

const (
	// Fail: evaluate returned False (or 0).
	Fail Outcome = iota
	// Pass: evaluate returned True (or 1).
	Pass
	// Error: the function did not produce a verdict; Kind says why.
	Error
	// Timeout: the evaluation ran past the per-call deadline and its worker was killed.
	Timeout
	// Skipped: evaluate returned something the return policy does not count (ReturnsAutoIF:
	// None, or a value int() refuses, such as "True"); Kind is KindBadReturn. Like an error it
	// is left out of the response's score, but it is the function's answer, not its failure.
	Skipped
)

func (o Outcome) String() string {
	switch o {
	case Pass:
		return "pass"
	case Fail:
		return "fail"
	case Error:
		return "error"
	case Timeout:
		return "timeout"
	case Skipped:
		return "skipped"
	}
	return fmt.Sprintf("outcome(%d)", uint8(o))
}

// MarshalText makes outcomes readable in JSON.
func (o Outcome) MarshalText() ([]byte, error) { return []byte(o.String()), nil }

// Kind classifies an Error outcome.
type Kind string

const (
	KindNone Kind = ""
	// KindException: evaluate (or the source's top level) raised.
	KindException Kind = "exception"
	// KindBadReturn: evaluate returned something the return policy does not take as a verdict
	// (an Error under ReturnsStrict and ReturnsLenient, Skipped under ReturnsAutoIF).
	KindBadReturn Kind = "bad_return_type"
	// KindImportDenied: the function imported a module the sandbox forbids (socket, ctypes, ...).
	KindImportDenied Kind = "import_denied"
	// KindModuleUnavailable: the module is not installed for the sandbox's interpreter.
	KindModuleUnavailable Kind = "module_unavailable"
	// KindDenied: the sandbox refused an operation (file write, process, signal, ...).
	KindDenied Kind = "denied"
	// KindOutputTooLarge: the function printed more than Options.MaxOutput.
	KindOutputTooLarge Kind = "output_too_large"
	// KindMemory: the function ran out of the sandbox's address space (MemoryError).
	KindMemory Kind = "memory"
	// KindCompile: the source does not compile, its top level fails to define evaluate.
	KindCompile Kind = "compile"
	// KindCrash: the worker process died while running the function (os._exit, segfault).
	KindCrash Kind = "crash"
)

// Eval is the result of one function on one response.
type Eval struct {
	Outcome Outcome `json:"outcome"`
	Kind    Kind    `json:"kind,omitempty"`
	Message string  `json:"message,omitempty"`
}

// Ran reports whether the function gave a verdict (pass or fail).
func (e Eval) Ran() bool { return e.Outcome == Pass || e.Outcome == Fail }

// ResponseScore is one response's AutoIF score.
type ResponseScore struct {
	// Score is the mean pass rate over the functions that ran without error; 0 when none ran.
	Score float64 `json:"score"`
	// Passed and Ran count functions that passed and that gave a verdict.
	Passed int `json:"passed"`
	Ran    int `json:"ran"`
	// Errors counts functions that gave no verdict, timeouts included; Timeouts counts those.
	Errors   int `json:"errors"`
	Timeouts int `json:"timeouts"`
	// Skipped counts functions whose result the return policy does not count (see Skipped).
	Skipped int `json:"skipped"`
}

// Result holds every outcome of a Score call.
type Result struct {
	// Evals[f][r] is function f on response r.
	Evals [][]Eval `json:"evals"`
	// Scores[r] is response r's score.
	Scores []ResponseScore `json:"scores"`
}

// ScoreResponses applies AutoIF's rule to a function × response matrix of outcomes: a
// response's score is passes / (functions that ran); errors, timeouts and skipped results are
// excluded from the denominator and never count as passes.
func ScoreResponses(evals [][]Eval, responses int) []ResponseScore {
	scores := make([]ResponseScore, responses)
	for _, row := range evals {
		for r := 0; r < responses && r < len(row); r++ {
			s := &scores[r]
			switch row[r].Outcome {
			case Pass:
				s.Passed++
				s.Ran++
			case Fail:
				s.Ran++
			case Timeout:
				s.Timeouts++
				s.Errors++
			case Skipped:
				s.Skipped++
			default:
				s.Errors++
			}
		}
	}
	for i := range scores {
		if scores[i].Ran > 0 {
			scores[i].Score = float64(scores[i].Passed) / float64(scores[i].Ran)
		}
	}
	return scores
}

// Returns is the policy for an evaluate result other than True or False.
type Returns string

const (
	// ReturnsStrict: only True, False and the ints 0 and 1 are verdicts; anything else is an
	// Error of KindBadReturn.
	ReturnsStrict Returns = "strict"
	// ReturnsAutoIF: AutoIF's reference rule (code/7_query_vertification.py: a result that is
	// None, or that int() refuses, is left out): such a result is Skipped, and int(result) is
	// the verdict otherwise, so "1" and 1.0 pass while "True" is skipped. An int() of neither 0
	// nor 1, which the reference would average as it is, is skipped too.
	ReturnsAutoIF Returns = "autoif"
	// ReturnsLenient: also the strings "True"/"False" (any case, spaces around ignored) and
	// "1"/"0", the numbers 0 and 1 and numpy's bools; anything else is an Error of
	// KindBadReturn.
	ReturnsLenient Returns = "lenient"
)

// ReturnPolicies lists the policies, default first.
var ReturnPolicies = []Returns{ReturnsAutoIF, ReturnsStrict, ReturnsLenient}

// ParseReturns reads a policy name; empty is the default, ReturnsAutoIF.
func ParseReturns(s string) (Returns, error) {
	if s == "" {
		return ReturnsAutoIF, nil
	}
	for _, r := range ReturnPolicies {
		if string(r) == s {
			return r, nil
		}
	}
	return "", fmt.Errorf("unknown return policy %q (want strict, autoif or lenient)", s)
}

// Label names what an evaluation that gave no verdict did, for counting by cause: the error
// kind, with the exception's type for an exception ("exception:ValueError"), "timeout", or
// "skipped"; "" for a pass or a fail.
func (e Eval) Label() string {
	switch e.Outcome {
	case Pass, Fail:
		return ""
	case Timeout:
		return "timeout"
	case Skipped:
		return "skipped"
	}
	if e.Kind == KindException {
		// worker.py writes "Type: message"; a bare type when the message is empty.
		name, _, _ := strings.Cut(e.Message, ":")
		if name != "" && !strings.ContainsAny(name, " \t\n") {
			return string(e.Kind) + ":" + name
		}
	}
	if e.Kind == KindNone {
		return "error"
	}
	return string(e.Kind)
}
