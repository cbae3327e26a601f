package tokenizer

import (
	"fmt"
	"unicode/utf8"
)

// Decode returns the exact bytes the ids stand for, special tokens included,
// so Decode(Encode(s)) == s (after normalisation, for tokenizers with one).
// Bytes are joined before anything is interpreted as UTF-8, so characters
// split across tokens come back whole; ids that end mid-character leave the
// partial bytes in the string (see StreamDecoder for incremental output).
func (t *Tokenizer) Decode(ids []int) (string, error) {
	var out []byte
	for _, id := range ids {
		p, err := t.piece(id)
		if err != nil {
			return "", err
		}
		out = append(out, p...)
	}
	return string(out), nil
}

func (t *Tokenizer) piece(id int) ([]byte, error) {
	if id < 0 || id >= len(t.pieces) || t.pieces[id] == nil {
		return nil, fmt.Errorf("decode: token id %d is not in the vocabulary (size %d)", id, len(t.pieces))
	}
	return t.pieces[id], nil
}

// StreamDecoder turns generated ids into text as soon as it is complete
// UTF-8: bytes of a character still being spelt out are held back until the
// token that finishes it arrives. The concatenation of everything Add and
// Flush return equals Decode of all ids.
type StreamDecoder struct {
	t       *Tokenizer
	pending []byte
}

// NewStreamDecoder starts decoding a new sequence.
func (t *Tokenizer) NewStreamDecoder() *StreamDecoder { return &StreamDecoder{t: t} }

// Add appends one id and returns the text that became complete ("" while a
// multi-byte character is unfinished).
func (d *StreamDecoder) Add(id int) (string, error) {
	p, err := d.t.piece(id)
	if err != nil {
		return "", err
	}
	d.pending = append(d.pending, p...)
	cut := completePrefix(d.pending)
	out := string(d.pending[:cut])
	d.pending = append(d.pending[:0], d.pending[cut:]...)
	return out, nil
}

// Flush returns whatever is held back (an unfinished character's bytes) and
// resets the decoder.
func (d *StreamDecoder) Flush() string {
	out := string(d.pending)
	d.pending = d.pending[:0]
	return out
}

// completePrefix is the length of b without a trailing, possibly-completable
// UTF-8 prefix. Bytes that can never become valid UTF-8 are not held back.
func completePrefix(b []byte) int {
	for back := 1; back <= utf8.UTFMax-1 && back <= len(b); back++ {
		i := len(b) - back
		if utf8.RuneStart(b[i]) {
			if !utf8.FullRune(b[i:]) {
				return i
			}
			return len(b)
		}
	}
	return len(b)
}
