package ifeval

import "github.com/autoif/autoif/punkt"

func init() {
	sentences = punkt.English().Sentences
	wordTokenize = punkt.WordTokenize
}
