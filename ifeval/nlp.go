package ifeval

import "errors"

// Three instruction types depend on NLTK and langdetect in the official checker: Punkt's
// English sentence splitter (length_constraints:number_sentences), nltk.word_tokenize
// (change_case:capital_word_frequency) and langdetect.detect (language:response_language,
// change_case:english_capital, change_case:english_lowercase). Their Go ports live in their
// own packages; these hooks are the only place this package reaches them.
var (
	// sentences is punkt.English().Sentences: NLTK 3.8 Punkt, English model.
	sentences func(text string) []string
	// wordTokenize is punkt.WordTokenize: nltk.word_tokenize.
	wordTokenize func(text string) []string
	// detectLanguage is langdetect.Detect: langdetect 1.0.9 detect(), fixed seed. An error
	// stands for LangDetectException, which the official checker counts as followed.
	detectLanguage func(text string) (string, error)
)

// ErrNeedsNLP is returned when an instruction needs a tokeniser or language detector this
// build does not have.
var ErrNeedsNLP = errors.New("needs the punkt/langdetect ports, which this build lacks")
