// Package ifeval is the IFEval checker (Zhou et al. 2023, google-research
// instruction_following_eval) in Go: the 25 instruction types of instructions_registry.py,
// strict and loose evaluation as evaluation_main.py, its output rows and its report.
//
// Verdicts match the official Python checker's, edge cases included: where Python's str and re
// semantics differ from Go's (Unicode \s, \w, \d and \b, str.strip, full-case str.lower,
// str.isupper, json.loads accepting NaN), this package follows Python (python.go, pyjson.go).
// It follows the 2023 code that produced the published outputs, so a letter_frequency letter
// that is not an ASCII letter is replaced by a random one, as the official data's keys 1122
// ('#') and 1129 ('!') are: their verdicts are random in the official checker too.
//
// The official build_description draws absent arguments at random. This package does too for
// numbers, relations, markers and letters (seeded by the prompt, so a row always gets the same
// draw) but refuses a row without its keywords, forbidden words or first word rather than draw
// them from the official word list: no official row lacks them.
//
// The sentence count, word_tokenize and language detection come from the punkt and
// langdetect packages (ports of NLTK 3.8 and of langdetect 1.0.9 with seed 0; the official
// checker runs langdetect unseeded, so a few borderline responses get a verdict that changes
// from run to run there).
//
// Instructions check a Text rather than a string: what a check derives from the response (its
// lowercase and case-folded forms, word, sentence, bullet and paragraph counts, the detected
// language) is computed on first use and shared by every instruction checked against the same
// Text, so scoring many constraints on one response costs little more than scoring one.
// Keywords, the costliest part with (?i) regexps, are plain substring searches of the
// case-folded text (text.go), fuzzed against the regexps they replace.
package ifeval
