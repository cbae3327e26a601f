package tokenizer

// GPT-2's byte-level alphabet maps every byte to a printable rune so that BPE
// vocabularies can be stored as JSON strings; Hugging Face's ByteLevel
// pre-tokenizer and decoder use the same table.
var (
	byteToRune [256]rune
	runeToByte = make(map[rune]byte, 256)
)

func init() {
	n := 0
	for b := 0; b < 256; b++ {
		printable := (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF)
		if printable {
			byteToRune[b] = rune(b)
		} else {
			byteToRune[b] = rune(256 + n)
			n++
		}
		runeToByte[byteToRune[b]] = byte(b)
	}
}

// byteLevelString is the vocabulary spelling of raw bytes.
func byteLevelString(raw []byte) string {
	rs := make([]rune, len(raw))
	for i, b := range raw {
		rs[i] = byteToRune[b]
	}
	return string(rs)
}

// byteLevelDecode turns a vocabulary spelling back into bytes the way the
// Hugging Face ByteLevel decoder does: if any rune is outside the alphabet the
// token's own UTF-8 is used unchanged (that is how added tokens such as
// "<|im_end|>" survive decoding).
func byteLevelDecode(tok string) []byte {
	out := make([]byte, 0, len(tok))
	for _, r := range tok {
		b, ok := runeToByte[r]
		if !ok {
			return []byte(tok)
		}
		out = append(out, b)
	}
	return out
}
