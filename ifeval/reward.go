package ifeval

import (
	"encoding/json"
	"fmt"
	"strings"
	"sync"
)

// An IFEval constraint travels through the online loop as a verification "function": one
// line, ConstraintPrefix and then {"id", "kwargs"} as JSON, in a prompt unit's Functions next
// to (or instead of) LLM-written Python sources. A response's score is then AutoIF's mean pass
// rate over the unit's functions, which for IFEval rows is the fraction of constraints
// followed (open-instruct's rule). The prefix starts a Python comment: a constraint that
// reached the Python sandbox by mistake would define no evaluate and fail loudly.
const ConstraintPrefix = "#ifeval "

type constraintSpec struct {
	ID     string         `json:"id"`
	Kwargs map[string]any `json:"kwargs"`
}

// ConstraintFunction encodes instruction id with its kwargs as a verification function, after
// checking that it builds.
func ConstraintFunction(id string, kwargs map[string]any) (string, error) {
	if _, err := Build(id, kwargs, nil); err != nil {
		return "", err
	}
	if kwargs == nil {
		kwargs = map[string]any{}
	}
	b, err := json.Marshal(constraintSpec{ID: id, Kwargs: kwargs})
	if err != nil {
		return "", err
	}
	return ConstraintPrefix + string(b), nil
}

// IsConstraintFunction reports whether a verification function is an IFEval constraint.
func IsConstraintFunction(fn string) bool { return strings.HasPrefix(fn, ConstraintPrefix) }

// constraintCache keeps built constraints: a unit's functions are scored for every rollout.
var constraintCache sync.Map // source -> builtConstraint

type builtConstraint struct {
	id string
	in Instruction
}

// ParseConstraintFunction builds the instruction a constraint function encodes. Absent
// arguments the official code would draw at random are drawn from a seed fixed per function,
// so a constraint scores every response the same way.
func ParseConstraintFunction(fn string) (Instruction, error) {
	if c, ok := constraintCache.Load(fn); ok {
		return c.(builtConstraint).in, nil
	}
	if !IsConstraintFunction(fn) {
		return nil, fmt.Errorf("not an IFEval constraint (want %q and JSON)", ConstraintPrefix)
	}
	var spec constraintSpec
	if err := json.Unmarshal([]byte(fn[len(ConstraintPrefix):]), &spec); err != nil {
		return nil, fmt.Errorf("IFEval constraint: %w", err)
	}
	in, err := Build(spec.ID, spec.Kwargs, nil)
	if err != nil {
		return nil, err
	}
	constraintCache.Store(fn, builtConstraint{id: spec.ID, in: in})
	return in, nil
}

// ConstraintID is the instruction id of a constraint function, "" for any other function
// (or one that does not build).
func ConstraintID(fn string) string {
	if !IsConstraintFunction(fn) {
		return ""
	}
	if _, err := ParseConstraintFunction(fn); err != nil {
		return ""
	}
	c, _ := constraintCache.Load(fn)
	return c.(builtConstraint).id
}

// Follows is the native verdict of a constraint function on a response: as the strict
// evaluation, a blank response follows nothing. Checking every constraint on the same Text
// shares the work the response costs.
func Follows(in Instruction, response *Text) bool {
	return !response.Blank() && in.Follows(response)
}
