package langdetect

import (
	"fmt"
	"testing"

	"github.com/autoif/autoif/internal/ifevaldata"
	"github.com/autoif/autoif/internal/pystr"
)

// officialRandomVerdicts are the official verdicts this port cannot reproduce, because the
// official run left langdetect unseeded: with seed 0 langdetect (Python and this port alike)
// answers otherwise. Python langdetect's answers over seeds 0..99 are given for each.
var officialRandomVerdicts = map[string]string{
	"language:response_language CohereForAI__aya-23-8B.eval_results_strict.jsonl 2596":                 "Bulgarian text: bg on 86 of 100 seeds, mk on seed 0",
	"change_case:english_capital Qwen__Qwen2.5-3B-Instruct-GPTQ-Int4.eval_results_strict.jsonl 3424":   "capitals: en on 21 of 100 seeds, de on seed 0",
	"change_case:english_capital Qwen__Qwen2.5-7B-Instruct-GPTQ-Int4.eval_results_strict.jsonl 3456":   "a list of names in capitals: en on 46 of 100 seeds (seed 0 among them), de on 53",
	"change_case:english_capital claude-3-haiku-20240307.eval_results_strict.jsonl 1645":               "55 characters in capitals: en on 29 of 100 seeds, so on seed 0",
	"change_case:english_capital claude-3-haiku-20240307.eval_results_strict.jsonl 3456":               "a list of names in capitals: en on 15 of 100 seeds (seed 0 among them), so on 85",
	"change_case:english_capital claude-3-opus-20240229.eval_results_strict.jsonl 3456":                "a list of names in capitals: en on 44 of 100 seeds, so on seed 0",
	"change_case:english_lowercase Qwen__Qwen2.5-3B-Instruct-GPTQ-Int4.eval_results_strict.jsonl 3150": "\"cycleenginecycles\": en on 92 of 100 seeds (seed 0 among them), cy on 8",
}

// The official checker's verdicts that rest on langdetect, as instruction_following_eval
// computes them: an empty response (after str.strip) follows nothing, and a failed detection
// counts as followed. All but the listed randomised ones must come out the same.
func TestOfficialLanguageVerdicts(t *testing.T) {
	dir, err := ifevaldata.Dir()
	if err != nil {
		t.Fatal(err)
	}
	detectIs := func(text, lang string) bool {
		got, err := Detect(text)
		return err != nil || got == lang
	}
	checks := map[string]func(ifevaldata.Verdict) bool{
		"language:response_language": func(v ifevaldata.Verdict) bool {
			lang, _ := v.Kwargs["language"].(string)
			return detectIs(v.Response, lang)
		},
		"change_case:english_capital": func(v ifevaldata.Verdict) bool {
			return pystr.IsUpperString(v.Response) && detectIs(v.Response, "en")
		},
		"change_case:english_lowercase": func(v ifevaldata.Verdict) bool {
			return pystr.IsLowerString(v.Response) && detectIs(v.Response, "en")
		},
	}
	seen := map[string]bool{}
	for id, check := range checks {
		vs, err := ifevaldata.StrictVerdicts(dir, id)
		if err != nil {
			t.Fatal(err)
		}
		agree := 0
		for _, v := range vs {
			ours := pystr.Strip(v.Response) != "" && check(v)
			if ours == v.Followed {
				agree++
				continue
			}
			name := fmt.Sprintf("%s %s %d", id, v.Source, v.Key)
			if reason, ok := officialRandomVerdicts[name]; ok {
				seen[name] = true
				t.Logf("%s: official %v, ours %v (%s)", name, v.Followed, ours, reason)
				continue
			}
			t.Errorf("%s: official %v, ours %v", name, v.Followed, ours)
		}
		t.Logf("%s: %d of %d official verdicts reproduced", id, agree, len(vs))
	}
	for name := range officialRandomVerdicts {
		if !seen[name] {
			t.Errorf("%s is listed as differing but now agrees: drop it from the list", name)
		}
	}
}
