// Package langdetect is a Go port of langdetect 1.0.9's detect() (Mimino666's Python port of
// Nakatani Shuyo's language-detection) on its own 55 language profiles, which the official
// IFEval checker calls for language:response_language and the change_case:english_*
// instructions.
//
// langdetect samples n-grams at random. The checker leaves DetectorFactory.seed unset, so
// every call draws a fresh seed and a few borderline texts get different answers between
// runs. Detect behaves as langdetect with DetectorFactory.seed = 0: it ports CPython's
// Mersenne Twister (random.seed(0), random(), gauss(), choice()) so that the same n-grams are
// drawn in the same order, and on the goldens in testdata it returns Python's answer for
// every text. The one numeric difference left is that Go's math.Log, Sin and Cos may differ
// from glibc's in the last bit, which moves the smoothing constant alpha by about 1e-17;
// that can only matter where two languages tie to the last bits.
//
// The profiles are loaded in name order; Python loads them in os.listdir order, which
// changes only the order of a floating-point sum (on the goldens, never the answer).
package langdetect

import (
	"bufio"
	"bytes"
	"compress/gzip"
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"sync"

	"github.com/autoif/autoif/internal/pystr"
)

//go:embed profiles.json.gz
var profilesGz []byte

//go:embed messages.properties
var messagesProperties []byte

// ErrNoFeatures is langdetect's LangDetectException(ErrorCode.CantDetectError, "No features
// in text."): after normalisation the text has no n-gram any profile knows (empty text,
// digits and punctuation only, ...). The official checker counts such a response as
// following the instruction.
var ErrNoFeatures = errors.New("langdetect: no features in text")

// Detector parameters, as in langdetect's Detector.
const (
	alphaDefault   = 0.5
	alphaWidth     = 0.05
	iterationLimit = 1000
	probThreshold  = 0.1
	convThreshold  = 0.99999
	baseFreq       = 10000
	nTrial         = 7
	maxTextLength  = 10000
	seed           = 0
	unknownLang    = "unknown"
)

// langProb is one language's probability for an n-gram (the profiles are sparse: most
// n-grams occur in a few languages).
type langProb struct {
	lang int
	p    float64
}

// model is DetectorFactory after load_profile: the languages and, for each n-gram any
// profile has, its probability in each language.
type model struct {
	langs []string
	index map[ngram]int32 // n-gram → row of probs
	probs [][]langProb
	norm  normalizer
}

// ngram is an n-gram of up to three characters, unused places zero: a map key that needs no
// allocation, unlike a string built from the sliding window.
type ngram [3]rune

func ngramOf(rs []rune) ngram {
	var g ngram
	copy(g[:], rs)
	return g
}

type profile struct {
	Name   string         `json:"name"`
	NWords []int64        `json:"n_words"`
	Freq   map[string]int `json:"freq"`
}

func loadModel() (*model, error) {
	z, err := gzip.NewReader(bytes.NewReader(profilesGz))
	if err != nil {
		return nil, err
	}
	raw, err := io.ReadAll(z)
	if err != nil {
		return nil, err
	}
	var ps []profile
	if err := json.Unmarshal(raw, &ps); err != nil {
		return nil, err
	}
	m := &model{index: make(map[ngram]int32, 90000)}
	for i, p := range ps {
		if len(p.NWords) != 3 {
			return nil, fmt.Errorf("profile %q: %d n_words, want 3", p.Name, len(p.NWords))
		}
		m.langs = append(m.langs, p.Name)
		// add_profile: prob = freq / n_words[len(word)-1]. Every profile word has 1 to 3
		// characters, the only lengths extraction produces; others could never be looked up,
		// nor could a word holding NUL (normalisation turns NUL into a space), which would
		// also collide with the zero padding of a shorter key.
		// Map order does not matter: each word's entries are appended in language order.
		for w, f := range p.Freq {
			rs := []rune(w)
			if len(rs) < 1 || len(rs) > 3 || slices.Contains(rs, 0) {
				continue
			}
			row, ok := m.index[ngramOf(rs)]
			if !ok {
				row = int32(len(m.probs))
				m.index[ngramOf(rs)] = row
				m.probs = append(m.probs, nil)
			}
			if nw := p.NWords[len(rs)-1]; nw != 0 {
				m.probs[row] = append(m.probs[row], langProb{i, float64(f) / float64(nw)})
			}
		}
	}
	if len(m.langs) != 55 {
		return nil, fmt.Errorf("%d profiles, want 55", len(m.langs))
	}
	m.norm, err = parseNormalizer(messagesProperties)
	if err != nil {
		return nil, err
	}
	return m, nil
}

var defaultModel = sync.OnceValue(func() *model {
	m, err := loadModel()
	if err != nil {
		panic("langdetect: embedded profiles: " + err.Error()) // a build defect, not bad input
	}
	return m
})

// Languages lists the 55 language codes Detect can return, in the order Detect uses.
func Languages() []string { return append([]string(nil), defaultModel().langs...) }

// Detect is langdetect.detect(text) with DetectorFactory.seed = 0: the code of the most
// probable language ("en", "zh-cn", ...), "unknown" when no language reaches a probability
// of 0.1, or ErrNoFeatures.
func Detect(text string) (string, error) {
	m := defaultModel()
	probs, err := m.probabilities(text)
	if err != nil {
		return "", err
	}
	best, bestP := unknownLang, 0.0
	// _sort_probability keeps languages above 0.1 and sorts them stably by descending
	// probability: the first in language order wins a tie.
	for i, p := range probs {
		if p > probThreshold && p > bestP {
			best, bestP = m.langs[i], p
		}
	}
	return best, nil
}

// probabilities is Detector._detect_block: each language's probability averaged over the
// trials, in m.langs order.
func (m *model) probabilities(text string) ([]float64, error) {
	ngrams := m.extractNgrams(m.cleanText(m.appendText(text)))
	if len(ngrams) == 0 {
		return nil, ErrNoFeatures
	}
	return m.detectBlock(ngrams), nil
}

// appendText is Detector.append: URLs and e-mail addresses become spaces, Vietnamese
// decomposed diacritics are composed, the first 10,000 characters are kept and runs of
// spaces collapse to one.
func (m *model) appendText(text string) []rune {
	text = removeURLs(text)
	text = removeMails(text)
	rs := m.norm.normalizeVI([]rune(text))
	if len(rs) > maxTextLength {
		rs = rs[:maxTextLength]
	}
	out := make([]rune, 0, len(rs))
	pre := rune(-1)
	for _, ch := range rs {
		if ch != ' ' || pre != ' ' {
			out = append(out, ch)
		}
		pre = ch
	}
	return out
}

// cleanText is Detector.cleaning_text: a text written mostly outside the Latin alphabet
// loses its Latin letters. (Python compares unicode_block(ch), an int, with the string
// 'Latin Extended Additional', which is never equal, so every character from U+0300 up
// counts as non-Latin.)
func (m *model) cleanText(text []rune) []rune {
	latin, nonLatin := 0, 0
	for _, ch := range text {
		if ch >= 'A' && ch <= 'z' {
			latin++
		} else if ch >= 0x300 {
			nonLatin++
		}
	}
	if latin*2 >= nonLatin {
		return text
	}
	out := text[:0:0]
	for _, ch := range text {
		if ch < 'A' || ch > 'z' {
			out = append(out, ch)
		}
	}
	return out
}

// extractNgrams is Detector._extract_ngrams: the 1-, 2- and 3-grams (of normalised
// characters, words padded by spaces) that some profile has, skipping words in capitals.
func (m *model) extractNgrams(text []rune) []int32 {
	var out []int32
	grams := make([]rune, 1, 4)
	grams[0] = ' '
	capitalWord := false
	for _, ch := range text {
		// NGram.add_char
		ch = m.norm.normalize(ch)
		last := grams[len(grams)-1]
		if last == ' ' {
			grams = grams[:1]
			grams[0] = ' '
			capitalWord = false
			if ch == ' ' {
				continue
			}
		} else if len(grams) >= 3 {
			copy(grams, grams[1:])
			grams = grams[:len(grams)-1]
		}
		grams = append(grams, ch)
		if pystr.IsUpper(ch) {
			if pystr.IsUpper(last) {
				capitalWord = true
			}
		} else {
			capitalWord = false
		}
		if capitalWord {
			continue
		}
		for n := 1; n <= 3 && n <= len(grams); n++ {
			w := grams[len(grams)-n:]
			if n == 1 && w[0] == ' ' {
				continue
			}
			if row, ok := m.index[ngramOf(w)]; ok {
				out = append(out, row)
			}
		}
	}
	return out
}

// detectBlock is Detector._detect_block after the n-grams are extracted: seven trials, each
// with its own smoothing alpha, update the language probabilities with randomly chosen
// n-grams until one language passes 0.99999 (checked every fifth step) or 1,000 steps.
func (m *model) detectBlock(ngrams []int32) []float64 {
	nl := len(m.langs)
	langProb := make([]float64, nl)
	prob := make([]float64, nl)
	factor := make([]float64, nl)
	rnd := newPyRandom(seed)
	for t := 0; t < nTrial; t++ {
		for i := range prob {
			prob[i] = 1.0 / float64(nl)
		}
		alpha := alphaDefault + float64(rnd.gauss(0.0, 1.0)*alphaWidth)
		weight := alpha / baseFreq
		for i := 0; ; i++ {
			w := ngrams[rnd.below(len(ngrams))]
			// _update_lang_prob: prob[i] *= weight + p(w | language i).
			for j := range factor {
				factor[j] = weight
			}
			for _, lp := range m.probs[w] {
				factor[lp.lang] = weight + lp.p
			}
			for j := range prob {
				prob[j] *= factor[j]
			}
			if i%5 == 0 {
				if normalizeProb(prob) > convThreshold || i >= iterationLimit {
					break
				}
			}
		}
		for j := range langProb {
			langProb[j] += prob[j] / nTrial
		}
	}
	return langProb
}

// normalizeProb is Detector._normalize_prob: divide by the sum (added left to right, as
// Python 3.11's sum() does for floats) and return the largest probability.
func normalizeProb(prob []float64) float64 {
	sum := 0.0
	for _, p := range prob {
		sum += p
	}
	maxp := 0.0
	for i, p := range prob {
		p /= sum
		if maxp < p {
			maxp = p
		}
		prob[i] = p
	}
	return maxp
}

// normalizer holds NGram's character normalisation tables, read from langdetect's
// messages.properties.
type normalizer struct {
	latin1Excluded string
	cjk            map[rune]rune
	viBase         map[rune]int // TO_NORMALIZE_VI_CHARS index
	viMark         map[rune]int // DMARK_CLASS index
	viComposed     [][]rune     // NORMALIZED_VI_CHARS_*[mark][base]
}

func parseNormalizer(data []byte) (normalizer, error) {
	props := map[string]string{}
	var kanji []string
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 64*1024), 1<<20)
	for sc.Scan() {
		key, val, ok := strings.Cut(strings.TrimSpace(sc.Text()), "=")
		if !ok {
			continue
		}
		v, err := unescapeUnicode(val)
		if err != nil {
			return normalizer{}, fmt.Errorf("messages.properties %s: %w", key, err)
		}
		props[key] = v
		if strings.HasPrefix(key, "NGram.KANJI_") {
			kanji = append(kanji, key)
		}
	}
	n := normalizer{
		latin1Excluded: props["NGram.LATIN1_EXCLUDE"],
		cjk:            map[rune]rune{},
		viBase:         map[rune]int{},
		viMark:         map[rune]int{},
	}
	// CJK_MAP: every ideograph of a class maps to the class's first one.
	for _, k := range kanji {
		cls := []rune(props[k])
		for _, ch := range cls {
			n.cjk[ch] = cls[0]
		}
	}
	for i, ch := range []rune(props["TO_NORMALIZE_VI_CHARS"]) {
		if _, dup := n.viBase[ch]; !dup {
			n.viBase[ch] = i
		}
	}
	for i, ch := range []rune(props["DMARK_CLASS"]) {
		if _, dup := n.viMark[ch]; !dup {
			n.viMark[ch] = i
		}
	}
	for _, k := range []string{"0300", "0301", "0303", "0309", "0323"} {
		n.viComposed = append(n.viComposed, []rune(props["NORMALIZED_VI_CHARS_"+k]))
	}
	if len(n.cjk) == 0 || len(n.viBase) == 0 || len(n.viMark) != len(n.viComposed) || n.latin1Excluded == "" {
		return normalizer{}, errors.New("messages.properties: normalisation tables missing")
	}
	for _, row := range n.viComposed {
		if len(row) != len([]rune(props["TO_NORMALIZE_VI_CHARS"])) {
			return normalizer{}, errors.New("messages.properties: NORMALIZED_VI_CHARS rows of the wrong length")
		}
	}
	return n, nil
}

// unescapeUnicode decodes the \uXXXX escapes of a properties value (Python reads them with
// the unicode_escape codec; the file has no other escapes).
func unescapeUnicode(s string) (string, error) {
	if !strings.Contains(s, `\`) {
		return s, nil
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] != '\\' {
			b.WriteByte(s[i])
			continue
		}
		if i+6 > len(s) || s[i+1] != 'u' {
			return "", fmt.Errorf("unsupported escape at %d", i)
		}
		v, err := strconv.ParseUint(s[i+2:i+6], 16, 32)
		if err != nil {
			return "", err
		}
		b.WriteRune(rune(v))
		i += 5
	}
	return b.String(), nil
}

// normalize is NGram.normalize for one character, by Unicode block.
func (n *normalizer) normalize(ch rune) rune {
	switch {
	case ch <= 0x7f: // Basic Latin: letters only
		if ch < 'A' || ('Z' < ch && ch < 'a') || 'z' < ch {
			return ' '
		}
	case ch <= 0xff: // Latin-1 Supplement
		if strings.ContainsRune(n.latin1Excluded, ch) {
			return ' '
		}
	case ch >= 0x180 && ch <= 0x24f: // Latin Extended-B: Romanian comma below to cedilla
		switch ch {
		case 'ș':
			return 'ş'
		case 'ț':
			return 'ţ'
		}
	case ch >= 0x2000 && ch <= 0x206f: // General Punctuation
		return ' '
	case ch >= 0x600 && ch <= 0x6ff: // Arabic: Farsi yeh to Arabic yeh
		if ch == 'ی' {
			return 'ي'
		}
	case ch >= 0x1e00 && ch <= 0x1eff: // Latin Extended Additional
		if ch >= 0x1ea0 {
			return 0x1ec3
		}
	case ch >= 0x3040 && ch <= 0x309f: // Hiragana
		return 0x3042
	case ch >= 0x30a0 && ch <= 0x30ff: // Katakana
		return 0x30a2
	case (ch >= 0x3100 && ch <= 0x312f) || (ch >= 0x31a0 && ch <= 0x31bf): // Bopomofo
		return 0x3105
	case ch >= 0x4e00 && ch <= 0x9fff: // CJK Unified Ideographs
		if r, ok := n.cjk[ch]; ok {
			return r
		}
	case ch >= 0xac00 && ch <= 0xd7af: // Hangul Syllables
		return 0xac00
	}
	return ch
}

// normalizeVI is NGram.normalize_vi: a vowel followed by a combining grave, acute, tilde,
// hook or dot below becomes the precomposed Vietnamese letter.
func (n *normalizer) normalizeVI(text []rune) []rune {
	out := text[:0:0]
	for i := 0; i < len(text); i++ {
		if i+1 < len(text) {
			if b, ok := n.viBase[text[i]]; ok {
				if mk, ok := n.viMark[text[i+1]]; ok {
					out = append(out, n.viComposed[mk][b])
					i++
					continue
				}
			}
		}
		out = append(out, text[i])
	}
	return out
}

// removeURLs is URL_RE.sub(' ', text) with URL_RE = https?://[-_.?&~;+=/#0-9A-Za-z]{1,2076}.
func removeURLs(s string) string {
	if !strings.Contains(s, "http") {
		return s
	}
	var b strings.Builder
	last := 0
	for i := 0; i < len(s); i++ {
		var j int
		switch {
		case strings.HasPrefix(s[i:], "http://"):
			j = i + 7
		case strings.HasPrefix(s[i:], "https://"):
			j = i + 8
		default:
			continue
		}
		k := j
		for k < len(s) && k-j < 2076 && isURLChar(s[k]) {
			k++
		}
		if k == j {
			continue
		}
		b.WriteString(s[last:i])
		b.WriteByte(' ')
		last = k
		i = k - 1
	}
	if last == 0 {
		return s
	}
	b.WriteString(s[last:])
	return b.String()
}

func isURLChar(c byte) bool {
	return isAlnum(c) || strings.IndexByte("-_.?&~;+=/#", c) >= 0
}

func isAlnum(c byte) bool {
	return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')
}

// mailLocal is [-_.0-9A-Za-z] (also the last part of the domain); mailDomain drops the '.'.
func mailLocal(c byte) bool  { return isAlnum(c) || c == '-' || c == '_' || c == '.' }
func mailDomain(c byte) bool { return isAlnum(c) || c == '-' || c == '_' }

// removeMails is MAIL_RE.sub(' ', text) with MAIL_RE =
// [-_.0-9A-Za-z]{1,64}@[-_0-9A-Za-z]{1,255}[-_.0-9A-Za-z]{1,255}. Every match holds exactly
// one '@'; the leftmost start is the furthest-back character of the local part within 64.
func removeMails(s string) string {
	if !strings.Contains(s, "@") {
		return s
	}
	var b strings.Builder
	last := 0
	for at := 0; at < len(s); at++ {
		if s[at] != '@' {
			continue
		}
		start := at
		for start > last && at-start < 64 && mailLocal(s[start-1]) {
			start--
		}
		if start == at {
			continue
		}
		end, ok := mailDomainEnd(s, at+1)
		if !ok {
			continue
		}
		b.WriteString(s[last:start])
		b.WriteByte(' ')
		last = end
		at = end - 1
	}
	if last == 0 {
		return s
	}
	b.WriteString(s[last:])
	return b.String()
}

// mailDomainEnd matches [-_0-9A-Za-z]{1,255}[-_.0-9A-Za-z]{1,255} at i with the regex's
// backtracking: the greedy first part gives back its last character when nothing follows it.
func mailDomainEnd(s string, i int) (int, bool) {
	d := i
	for d < len(s) && d-i < 255 && mailDomain(s[d]) {
		d++
	}
	if d == i {
		return 0, false
	}
	e := d
	for e < len(s) && e-d < 255 && mailLocal(s[e]) {
		e++
	}
	if e > d {
		return e, true
	}
	if d-i >= 2 {
		return d, true
	}
	return 0, false
}
