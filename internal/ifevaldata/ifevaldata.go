// Package ifevaldata reads the official IFEval verdicts in the project's reference data
// (../shared/data/ifeval): the GPT-4 strict results of google-research's
// instruction_following_eval and the 17 models' strict_results, with the kwargs of each
// instruction from the matching input data. Tests of the ports the checker depends on
// (punkt, langdetect) compare their answers with these verdicts.
package ifevaldata

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

// Verdict is the official checker's strict-mode verdict on one instruction of one response.
type Verdict struct {
	Source   string // results file name
	Key      int    // the prompt's key in the input data
	Response string
	Kwargs   map[string]any
	Followed bool
}

// Dir returns the reference data directory: $AUTOIF_SHARED_DATA, or shared/data next to the
// repository or inside the checkout, seen from a package directory. It returns "" when none
// holds ifeval/.
func Dir() string {
	for _, root := range []string{os.Getenv("AUTOIF_SHARED_DATA"), "../../shared/data", "../shared/data"} {
		if root == "" {
			continue
		}
		if _, err := os.Stat(filepath.Join(root, "ifeval", "input_data.jsonl")); err == nil {
			return root
		}
	}
	return ""
}

type inputRow struct {
	Key               int              `json:"key"`
	Prompt            string           `json:"prompt"`
	InstructionIDList []string         `json:"instruction_id_list"`
	Kwargs            []map[string]any `json:"kwargs"`
}

type resultRow struct {
	Prompt                string   `json:"prompt"`
	Response              string   `json:"response"`
	InstructionIDList     []string `json:"instruction_id_list"`
	FollowInstructionList []bool   `json:"follow_instruction_list"`
}

// StrictVerdicts returns every strict-mode verdict on the instruction id (such as
// "language:response_language"; the strict_results' "en:" prefix is dropped) from the GPT-4
// results and each strict_results file, in file order.
func StrictVerdicts(dir, id string) ([]Verdict, error) {
	ifeval := filepath.Join(dir, "ifeval")
	results, err := filepath.Glob(filepath.Join(ifeval, "strict_results", "*.eval_results_strict.jsonl"))
	if err != nil {
		return nil, err
	}
	sort.Strings(results)
	sets := [][2]string{{filepath.Join(ifeval, "official_gpt4", "eval_results_strict_gpt4.jsonl"), filepath.Join(ifeval, "input_data.jsonl")}}
	for _, r := range results {
		sets = append(sets, [2]string{r, filepath.Join(ifeval, "strict_results", "en_input_data_MIFEVAL_old2785.jsonl")})
	}
	var out []Verdict
	for _, s := range sets {
		inputs := map[string]inputRow{}
		if err := readJSONL(s[1], func(r inputRow) { inputs[r.Prompt] = r }); err != nil {
			return nil, err
		}
		var rerr error
		err := readJSONL(s[0], func(r resultRow) {
			in, ok := inputs[r.Prompt]
			if !ok || len(in.Kwargs) != len(r.InstructionIDList) || len(r.FollowInstructionList) != len(r.InstructionIDList) {
				rerr = fmt.Errorf("%s: a result without matching input data (prompt %.60q)", s[0], r.Prompt)
				return
			}
			for i, got := range r.InstructionIDList {
				if strings.TrimPrefix(got, "en:") == id {
					out = append(out, Verdict{
						Source: filepath.Base(s[0]), Key: in.Key, Response: r.Response,
						Kwargs: in.Kwargs[i], Followed: r.FollowInstructionList[i],
					})
				}
			}
		})
		if err == nil {
			err = rerr
		}
		if err != nil {
			return nil, err
		}
	}
	return out, nil
}

func readJSONL[T any](path string, each func(T)) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<26)
	for n := 1; sc.Scan(); n++ {
		if strings.TrimSpace(sc.Text()) == "" {
			continue
		}
		var v T
		if err := json.Unmarshal(sc.Bytes(), &v); err != nil {
			return fmt.Errorf("%s:%d: %w", path, n, err)
		}
		each(v)
	}
	return sc.Err()
}
