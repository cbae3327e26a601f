// Package ifevaldata reads the official IFEval verdicts bundled in ifeval/testdata: the
// GPT-4 strict results of google-research's instruction_following_eval and the 17 models'
// strict_results (gzipped), with the kwargs of each instruction from the matching input data.
// Tests of the ports the checker depends on (punkt, langdetect, ifeval) compare their answers
// with these verdicts.
package ifevaldata

import (
	"bufio"
	"compress/gzip"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

// Verdict is the official checker's strict-mode verdict on one instruction of one response.
type Verdict struct {
	Source   string // results file name, without .gz
	Key      int    // the prompt's key in the input data
	Response string
	Kwargs   map[string]any
	Followed bool
}

// Dir returns ifeval/testdata of the module that holds the working directory (a package
// directory, under go test): the official data lives in the package that re-implements the
// checker, and the ports' tests read it from there.
func Dir() (string, error) {
	wd, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for d := wd; ; d = filepath.Dir(d) {
		if _, err := os.Stat(filepath.Join(d, "go.mod")); err == nil {
			dir := filepath.Join(d, "ifeval", "testdata")
			if _, err := os.Stat(filepath.Join(dir, "input_data.jsonl")); err != nil {
				return "", fmt.Errorf("the bundled IFEval data: %w", err)
			}
			return dir, nil
		}
		if filepath.Dir(d) == d {
			return "", fmt.Errorf("no go.mod in %s or above it", wd)
		}
	}
}

// Open opens a data file, decompressing it when its name ends in .gz (the large files are
// stored gzipped).
func Open(path string) (io.ReadCloser, error) {
	f, err := os.Open(path)
	if err != nil || !strings.HasSuffix(path, ".gz") {
		return f, err
	}
	z, err := gzip.NewReader(f)
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return gzipFile{z, f}, nil
}

type gzipFile struct {
	*gzip.Reader
	f *os.File
}

func (g gzipFile) Close() error { return errors.Join(g.Reader.Close(), g.f.Close()) }

// StrictResultFiles returns the 17 models' strict_results files under dir, sorted.
func StrictResultFiles(dir string) ([]string, error) {
	files, err := filepath.Glob(filepath.Join(dir, "strict_results", "*.eval_results_strict.jsonl.gz"))
	sort.Strings(files)
	return files, err
}

// StrictInputFile is the input data the strict_results were checked against: the older
// wording of key 2785's prompt.
func StrictInputFile(dir string) string {
	return filepath.Join(dir, "strict_results", "en_input_data_MIFEVAL_old2785.jsonl.gz")
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
// results and each strict_results file under dir (Dir), in file order.
func StrictVerdicts(dir, id string) ([]Verdict, error) {
	results, err := StrictResultFiles(dir)
	if err != nil {
		return nil, err
	}
	sets := [][2]string{{filepath.Join(dir, "official_gpt4", "eval_results_strict_gpt4.jsonl"), filepath.Join(dir, "input_data.jsonl")}}
	for _, r := range results {
		sets = append(sets, [2]string{r, StrictInputFile(dir)})
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
						Source: strings.TrimSuffix(filepath.Base(s[0]), ".gz"), Key: in.Key, Response: r.Response,
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
	f, err := Open(path)
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
