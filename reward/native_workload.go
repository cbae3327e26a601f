package reward

import (
	"fmt"

	"github.com/autoif/autoif/ifeval"
)

// IFEvalWorkload is every official IFEval constraint that has a Python form, once natively
// (ifeval.ConstraintFunction) and once as a Python function (ifeval.PythonFunction), with
// responses to score: the first maxResponses (0: all) of an official-format responses file.
type IFEvalWorkload struct {
	Native, Python []string
	Responses      []string
	// Skipped counts constraints without a Python form (NLTK, langdetect, random letters).
	Skipped int
}

// LoadIFEvalWorkload builds the workload from the bundled official prompts.
func LoadIFEvalWorkload(responsesFile string, maxResponses int) (*IFEvalWorkload, error) {
	resp, err := ifeval.ReadResponseFile(responsesFile)
	if err != nil {
		return nil, err
	}
	w := &IFEvalWorkload{}
	for _, in := range ifeval.OfficialInputs() {
		if r, ok := resp[in.Prompt]; ok && (maxResponses <= 0 || len(w.Responses) < maxResponses) {
			w.Responses = append(w.Responses, r)
		}
		for i, id := range in.InstructionIDList {
			py, err := ifeval.PythonFunction(id, in.Kwargs[i])
			if err != nil {
				w.Skipped++
				continue
			}
			native, err := ifeval.ConstraintFunction(id, in.Kwargs[i])
			if err != nil {
				return nil, err
			}
			w.Native, w.Python = append(w.Native, native), append(w.Python, py)
		}
	}
	if len(w.Native) == 0 || len(w.Responses) == 0 {
		return nil, fmt.Errorf("IFEval workload: %d constraints, %d responses", len(w.Native), len(w.Responses))
	}
	return w, nil
}
