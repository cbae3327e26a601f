package ifeval

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"
)

// open-instruct's RLVR rows (allenai/RLVR-IFeval and the datasets built like it) carry a
// prompt as chat messages and its constraint as a JSON "ground_truth":
//
//	{"messages": [{"role": "user", "content": "..."}], "dataset": "ifeval",
//	 "ground_truth": "{\"func_name\": \"validate_lowercase\", \"N\": null, ...}"}
//
// func_name names one of the 25 functions of open-instruct's if_functions.py, one per IFEval
// instruction type, with its arguments beside it (null where unused). The later IFEvalG form,
// {"instruction_id": [...], "kwargs": [...]} (alone or as the first element of a list), names
// IFEval instructions directly. Either way the row becomes an IFEval input: its constraints
// are checked by this package as the official checker does, not by if_functions.py's own
// simplified checks, and the score is the fraction followed, open-instruct's rule.

// rlvrFunc is one if_functions.py function as an IFEval instruction: the instruction id,
// each argument's kwarg name, and the kwargs the instruction needs that the function fixes.
type rlvrFunc struct {
	id    string
	args  map[string]string
	fixed map[string]any
	// quantifier: the function takes N and a quantifier, which becomes the instruction's
	// count and relation (these two kwarg names).
	count, relation string
}

var rlvrFuncs = map[string]rlvrFunc{
	"verify_keywords":            {id: "keywords:existence", args: map[string]string{"keyword_list": "keywords"}},
	"verify_keyword_frequency":   {id: "keywords:frequency", args: map[string]string{"word": "keyword", "N": "frequency"}, fixed: map[string]any{"relation": "at least"}},
	"validate_forbidden_words":   {id: "keywords:forbidden_words", args: map[string]string{"forbidden_words": "forbidden_words"}},
	"verify_letter_frequency":    {id: "keywords:letter_frequency", args: map[string]string{"letter": "letter", "N": "let_frequency"}, fixed: map[string]any{"let_relation": "at least"}},
	"validate_response_language": {id: "language:response_language", args: map[string]string{"language": "language"}},
	"verify_paragraph_count":     {id: "length_constraints:number_paragraphs", args: map[string]string{"N": "num_paragraphs"}},
	"validate_word_constraint":   {id: "length_constraints:number_words", count: "num_words", relation: "relation"},
	"verify_sentence_constraint": {id: "length_constraints:number_sentences", count: "num_sentences", relation: "relation"},
	"validate_paragraphs": {id: "length_constraints:nth_paragraph_first_word",
		args: map[string]string{"N": "num_paragraphs", "first_word": "first_word", "i": "nth_paragraph"}},
	"verify_postscript":             {id: "detectable_content:postscript", args: map[string]string{"postscript_marker": "postscript_marker"}},
	"validate_placeholders":         {id: "detectable_content:number_placeholders", args: map[string]string{"N": "num_placeholders"}},
	"verify_bullet_points":          {id: "detectable_format:number_bullet_lists", args: map[string]string{"N": "num_bullets"}},
	"validate_title":                {id: "detectable_format:title"},
	"validate_choice":               {id: "detectable_format:constrained_response", args: map[string]string{"options": ""}},
	"validate_highlighted_sections": {id: "detectable_format:number_highlighted_sections", args: map[string]string{"N": "num_highlights"}},
	"validate_sections": {id: "detectable_format:multiple_sections",
		args: map[string]string{"N": "num_sections", "section_splitter": "section_spliter"}},
	"validate_json_format":             {id: "detectable_format:json_format"},
	"validate_repeat_prompt":           {id: "combination:repeat_prompt", args: map[string]string{"original_prompt": "prompt_to_repeat"}},
	"validate_two_responses":           {id: "combination:two_responses"},
	"validate_uppercase":               {id: "change_case:english_capital"},
	"validate_lowercase":               {id: "change_case:english_lowercase"},
	"validate_frequency_capital_words": {id: "change_case:capital_word_frequency", count: "capital_frequency", relation: "capital_relation"},
	"validate_end":                     {id: "startend:end_checker", args: map[string]string{"end_phrase": "end_phrase"}},
	"validate_quotation":               {id: "startend:quotation"},
	"validate_no_commas":               {id: "punctuation:no_comma"},
}

// rlvrRow is the part of an RLVR row this package reads.
type rlvrRow struct {
	Messages []struct {
		Role    string `json:"role"`
		Content string `json:"content"`
	} `json:"messages"`
	GroundTruth json.RawMessage `json:"ground_truth"`
	Dataset     *string         `json:"dataset"`
}

// fromRLVR makes an IFEval input of an RLVR row: the prompt is the last user message.
func fromRLVR(row rlvrRow) (Input, error) {
	if row.Dataset != nil && *row.Dataset != "ifeval" {
		return Input{}, fmt.Errorf("dataset %q: only IFEval rows (\"ifeval\") are scored natively", *row.Dataset)
	}
	var in Input
	for _, m := range row.Messages {
		if m.Role == "user" {
			in.Prompt = m.Content
		}
	}
	if in.Prompt == "" {
		return Input{}, fmt.Errorf("messages hold no user message")
	}
	gt, err := groundTruthObject(row.GroundTruth)
	if err != nil {
		return Input{}, err
	}
	if ids, ok := gt["instruction_id"]; ok {
		b, _ := json.Marshal(map[string]any{"instruction_id_list": ids, "kwargs": gt["kwargs"]})
		if err := json.Unmarshal(b, &in); err != nil {
			return Input{}, fmt.Errorf("ground_truth: instruction_id and kwargs: %v", err)
		}
		for i, kw := range in.Kwargs { // open-instruct drops None arguments before building
			for k, v := range kw {
				if v == nil {
					delete(in.Kwargs[i], k)
				}
			}
		}
		return in, nil
	}
	id, kwargs, err := rlvrConstraint(gt)
	if err != nil {
		return Input{}, err
	}
	in.InstructionIDList, in.Kwargs = []string{id}, []map[string]any{kwargs}
	return in, nil
}

// groundTruthObject decodes ground_truth: a JSON string holding the object (or a list whose
// first element is it, itself perhaps a string), a list of such strings, or the object.
func groundTruthObject(raw json.RawMessage) (map[string]any, error) {
	if len(raw) == 0 || string(raw) == "null" {
		return nil, fmt.Errorf("no ground_truth")
	}
	var v any
	if err := json.Unmarshal(raw, &v); err != nil {
		return nil, fmt.Errorf("ground_truth: %v", err)
	}
	for range 4 {
		switch x := v.(type) {
		case map[string]any:
			return x, nil
		case string:
			if err := json.Unmarshal([]byte(x), &v); err != nil {
				return nil, fmt.Errorf("ground_truth is not JSON: %v", err)
			}
		case []any:
			if len(x) == 0 {
				return nil, fmt.Errorf("ground_truth is an empty list")
			}
			v = x[0]
		default:
			return nil, fmt.Errorf("ground_truth: want an object with func_name or instruction_id, got %T", v)
		}
	}
	return nil, fmt.Errorf("ground_truth: nested too deep")
}

// rlvrConstraint maps a func_name ground truth onto an IFEval instruction id and kwargs.
func rlvrConstraint(gt map[string]any) (string, map[string]any, error) {
	name, _ := gt["func_name"].(string)
	if name == "" {
		return "", nil, fmt.Errorf("ground_truth has neither func_name nor instruction_id")
	}
	f, ok := rlvrFuncs[name]
	if !ok {
		return "", nil, fmt.Errorf("func_name %q is not one of open-instruct's 25 IFEval functions", name)
	}
	kwargs := map[string]any{}
	for k, v := range f.fixed {
		kwargs[k] = v
	}
	var extra []string
	for arg, v := range gt {
		if arg == "func_name" || v == nil {
			continue
		}
		switch kw, takes := f.args[arg]; {
		case takes && kw != "":
			kwargs[kw] = v
		case takes: // validate_choice's options: IFEval's three answers are fixed
			s, _ := v.(string)
			for _, o := range constrainedOptions {
				if !strings.Contains(s, o) {
					return "", nil, fmt.Errorf("%s: options %v are not IFEval's %q", name, v, constrainedOptions)
				}
			}
		case f.count != "" && (arg == "N" || arg == "quantifier"):
		default:
			extra = append(extra, arg)
		}
	}
	if len(extra) > 0 {
		slices.Sort(extra)
		return "", nil, fmt.Errorf("%s takes no %s", name, strings.Join(extra, ", "))
	}
	if f.count != "" {
		n, isNum := gt["N"].(float64)
		q, _ := gt["quantifier"].(string)
		if !isNum {
			return "", nil, fmt.Errorf("%s: N must be a number, got %v", name, gt["N"])
		}
		// IFEval's relations are "at least" and "less than"; "at most N" is "less than N+1".
		switch q {
		case "at least":
			kwargs[f.count], kwargs[f.relation] = n, "at least"
		case "at most":
			kwargs[f.count], kwargs[f.relation] = n+1, "less than"
		default:
			return "", nil, fmt.Errorf("%s: quantifier %q has no IFEval relation (at least, at most)", name, q)
		}
	}
	if _, err := Build(f.id, kwargs, nil); err != nil {
		return "", nil, fmt.Errorf("func_name %s: %w", name, err)
	}
	return f.id, kwargs, nil
}
