package ifeval

import (
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
)

// PythonFunction writes an IFEval constraint as an AutoIF verification function (Python source
// defining evaluate(response)) with the official check_following's behaviour and the strict
// evaluation's rule that a blank response follows nothing. It serves to measure native scoring
// against the sandbox on the same constraints, and to check the two agree. Types that need
// NLTK or langdetect, and kwargs the official code would draw at random, are not supported.
func PythonFunction(id string, kwargs map[string]any) (string, error) {
	if _, err := Build(id, kwargs, nil); err != nil {
		return "", err
	}
	lit := func(key string) (string, error) {
		v, ok := kwargs[key]
		if !ok || v == nil {
			return "", fmt.Errorf("%s: %s is required here (no random draws)", id, key)
		}
		if f, isNum := v.(float64); isNum {
			return fmt.Sprint(int(f)), nil
		}
		if l, isList := v.([]any); isList && (key == "keywords" || key == "forbidden_words") {
			var ss []string
			for _, e := range l {
				ss = append(ss, e.(string))
			}
			slices.Sort(ss)
			ss = slices.Compact(ss)
			v = ss
		}
		b, err := json.Marshal(v)
		return string(b), err
	}
	var body string
	var err error
	must := func(key string) string {
		s, e := lit(key)
		if e != nil && err == nil {
			err = e
		}
		return s
	}
	cmp := func(n, relKey, thresholdKey string) string {
		op := ">="
		if rel, _ := kwargs[relKey].(string); rel == relLessThan {
			op = "<"
		}
		must(relKey)
		return n + " " + op + " " + must(thresholdKey)
	}
	switch strings.TrimPrefix(id, "en:") {
	case "keywords:existence":
		body = "return all(re.search(k, r, flags=re.IGNORECASE) for k in " + must("keywords") + ")"
	case "keywords:frequency":
		body = "return " + cmp("len(re.findall("+must("keyword")+".strip(), r, flags=re.IGNORECASE))", "relation", "frequency")
	case "keywords:forbidden_words":
		body = `return not any(re.search(r"\b" + w + r"\b", r, flags=re.IGNORECASE) for w in ` + must("forbidden_words") + ")"
	case "keywords:letter_frequency":
		l, _ := kwargs["letter"].(string)
		if low := strings.ToLower(l); len(low) != 1 || low[0] < 'a' || low[0] > 'z' {
			return "", fmt.Errorf("%s: letter %q is drawn at random by the official checker", id, l)
		}
		body = "return " + cmp("r.lower().count("+must("letter")+".strip().lower())", "let_relation", "let_frequency")
	case "length_constraints:number_paragraphs":
		body = `ps = re.split(r"\s?\*\*\*\s?", r)
    n = len(ps)
    for i, p in enumerate(ps):
        if not p.strip():
            if i == 0 or i == len(ps) - 1:
                n -= 1
            else:
                return False
    return n == ` + must("num_paragraphs")
	case "length_constraints:number_words":
		body = "return " + cmp(`len(re.findall(r"\w+", r))`, "relation", "num_words")
	case "length_constraints:nth_paragraph_first_word":
		body = `ps = re.split(r"\n\n", r)
    n = len(ps) - sum(1 for p in ps if not p.strip())
    nth = ` + must("nth_paragraph") + `
    if nth > n or nth <= 0:
        return False
    p = ps[nth - 1].strip()
    if not p:
        return False
    w = p.split()[0].strip().lstrip("'").lstrip('"')
    first = ""
    for c in w:
        if c in {".", ",", "?", "!", "'", '"'}:
            break
        first += c.lower()
    return n == ` + must("num_paragraphs") + ` and first == ` + must("first_word") + `.lower()`
	case "detectable_content:number_placeholders":
		body = `return len(re.findall(r"\[.*?\]", r)) >= ` + must("num_placeholders")
	case "detectable_content:postscript":
		m, _ := kwargs["postscript_marker"].(string)
		var pat string
		switch strings.TrimSpace(m) {
		case "P.P.S":
			pat = `r"\s*p\.\s?p\.\s?s.*$"`
		case "P.S.":
			pat = `r"\s*p\.\s?s\..*$"`
		default:
			pat = `r"\s*" + ` + must("postscript_marker") + `.strip().lower() + r".*$"`
		}
		body = "return bool(re.findall(" + pat + ", r.lower(), flags=re.MULTILINE))"
	case "detectable_format:number_bullet_lists":
		body = `return len(re.findall(r"^\s*\*[^\*].*$", r, flags=re.MULTILINE)) + len(re.findall(r"^\s*-.*$", r, flags=re.MULTILINE)) == ` + must("num_bullets")
	case "detectable_format:constrained_response":
		body = `r = r.strip()
    return any(o in r for o in ("My answer is yes.", "My answer is no.", "My answer is maybe."))`
	case "detectable_format:number_highlighted_sections":
		body = `n = sum(1 for h in re.findall(r"\*[^\n\*]*\*", r) if h.strip("*").strip())
    n += sum(1 for h in re.findall(r"\*\*[^\n\*]*\*\*", r) if h.removeprefix("**").removesuffix("**").strip())
    return n >= ` + must("num_highlights")
	case "detectable_format:multiple_sections":
		body = `return len(re.split(r"\s?" + ` + must("section_spliter") + `.strip() + r"\s?\d+\s?", r)) - 1 >= ` + must("num_sections")
	case "detectable_format:json_format":
		body = `r = r.strip().removeprefix("` + "```json" + `").removeprefix("` + "```Json" + `").removeprefix("` + "```JSON" + `").removeprefix("` + "```" + `").removesuffix("` + "```" + `").strip()
    try:
        json.loads(r)
    except ValueError:
        return False
    return True`
	case "detectable_format:title":
		body = `return any(t.lstrip("<").rstrip(">").strip() for t in re.findall(r"<<[^\n]+>>", r))`
	case "combination:two_responses":
		body = `valid = []
    parts = r.split("******")
    for i, p in enumerate(parts):
        if not p.strip():
            if i != 0 and i != len(parts) - 1:
                return False
        else:
            valid.append(p)
    return len(valid) == 2 and valid[0].strip() != valid[1].strip()`
	case "combination:repeat_prompt":
		body = "return r.strip().lower().startswith(" + must("prompt_to_repeat") + ".strip().lower())"
	case "startend:end_checker":
		body = `return r.strip().strip('"').lower().endswith(` + must("end_phrase") + ".strip().lower())"
	case "punctuation:no_comma":
		body = `return not re.search(r"\,", r)`
	case "startend:quotation":
		body = `r = r.strip()
    return len(r) > 1 and r[0] == '"' and r[-1] == '"'`
	default:
		return "", fmt.Errorf("%s: %w", id, errNoPython)
	}
	if err != nil {
		return "", err
	}
	return "import json\nimport re\n\n\ndef evaluate(response):\n    r = response\n    if not r.strip():\n        return False\n    " + body + "\n", nil
}

// errNoPython: the type rests on NLTK or langdetect, which the sandbox's verification
// functions would have to load themselves.
var errNoPython = errors.New("no Python form (needs NLTK or langdetect)")
