#!/usr/bin/env python3
"""Independent reference encoder for the tokenizer tests.

It re-implements byte-level BPE the way OpenAI's GPT-2 encoder.py does it
(bytes_to_unicode, get_pairs, lowest-rank bigram merged everywhere per step),
reads vocab.json/merges.txt (not tokenizer.json), pre-tokenizes with the
`regex` module and the pattern strings published with each model, applies NFC
for Qwen2 with unicodedata, and splits special tokens out of the text before
BPE. None of this shares code with the Go package. Output: vectors.json.

Run from the repository root:
    python3 tokenizer/testdata/gen_vectors.py /work/shared/data/tokenizers > tokenizer/testdata/vectors.json
It also checks itself against llamacpp_vectors.json (ids written by Hugging
Face AutoTokenizer) and exits non-zero on any disagreement.
"""
import json
import os
import sys
import unicodedata

import regex as re

GPT2_PAT = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
LLAMA3_PAT = r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""
QWEN2_PAT = r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""


def bytes_to_unicode():
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(2**8):
        if b not in bs:
            bs.append(b)
            cs.append(2**8 + n)
            n += 1
    return dict(zip(bs, [chr(c) for c in cs]))


def get_pairs(word):
    return set(zip(word, word[1:]))


class Encoder:
    def __init__(self, d, pattern, nfc, specials, from_tokenizer_json=False):
        if from_tokenizer_json:
            # Only the vocab and merge list are taken from tokenizer.json.
            model = json.load(open(os.path.join(d, "tokenizer.json"), encoding="utf-8"))["model"]
            self.encoder = model["vocab"]
            merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in model["merges"]]
        else:
            self.encoder = json.load(open(os.path.join(d, "vocab.json"), encoding="utf-8"))
            merges = []
            for line in open(os.path.join(d, "merges.txt"), encoding="utf-8").read().split("\n"):
                if line.startswith("#version") or not line:
                    continue
                merges.append(tuple(line.split(" ")))
        self.bpe_ranks = dict(zip(merges, range(len(merges))))
        self.byte_encoder = bytes_to_unicode()
        self.pat = re.compile(pattern)
        self.nfc = nfc
        self.specials = specials  # content -> id
        self.cache = {}

    def bpe(self, token):
        if token in self.cache:
            return self.cache[token]
        word = tuple(token)
        pairs = get_pairs(word)
        if not pairs:
            return [token]
        while True:
            bigram = min(pairs, key=lambda pair: self.bpe_ranks.get(pair, float("inf")))
            if bigram not in self.bpe_ranks:
                break
            first, second = bigram
            new_word = []
            i = 0
            while i < len(word):
                try:
                    j = word.index(first, i)
                    new_word.extend(word[i:j])
                    i = j
                except ValueError:
                    new_word.extend(word[i:])
                    break
                if word[i] == first and i < len(word) - 1 and word[i + 1] == second:
                    new_word.append(first + second)
                    i += 2
                else:
                    new_word.append(word[i])
                    i += 1
            word = tuple(new_word)
            if len(word) == 1:
                break
            pairs = get_pairs(word)
        self.cache[token] = list(word)
        return list(word)

    def encode_ordinary(self, text):
        if self.nfc:
            text = unicodedata.normalize("NFC", text)
        ids = []
        for tok in re.findall(self.pat, text):
            mapped = "".join(self.byte_encoder[b] for b in tok.encode("utf-8"))
            ids.extend(self.encoder[t] for t in self.bpe(mapped))
        return ids

    def encode(self, text):
        # Leftmost-longest match of special tokens, as HF's added vocabulary does.
        ids = []
        i = start = 0
        while i < len(text):
            best = None
            for s in self.specials:
                if text.startswith(s, i) and (best is None or len(s) > len(best)):
                    best = s
            if best is None:
                i += 1
                continue
            ids.extend(self.encode_ordinary(text[start:i]))
            ids.append(self.specials[best])
            i += len(best)
            start = i
        ids.extend(self.encode_ordinary(text[start:]))
        return ids


CASES = [
    # (name, text); both tokenizers get every case.
    ("english", "The quick brown fox jumps over the lazy dog."),
    ("english paragraph", "Language models learn to follow instructions when they are rewarded for it. "
     "AutoIF writes verification functions, runs them, and keeps only the responses that pass."),
    ("digits", "In 2024 there were 1234567 tokens and 3.14159 pies."),
    ("digits glued to letters", "abc123def 42nd x86_64"),
    ("contractions lower", "I'm sure you've seen it, they'll say we'd've done it; it's John's."),
    ("contractions upper", "I'M SURE YOU'VE SEEN IT, THEY'LL SAY IT'S JOHN'S 'RE 'D 'LL"),
    ("contraction long s", "it'ſ odd"),
    ("apostrophes alone", "'' ' 'x 'hello"),
    ("whitespace runs", "a  b   c    d\t\te"),
    ("trailing spaces", "end with spaces   "),
    ("leading spaces", "   start"),
    ("newlines", "line one\nline two\n\nline four\r\nline five\n"),
    ("spaces before newline", "x   \n   y"),
    ("indented code", "def f(x):\n    return x * 2\n\n\nclass A:\n\tpass\n"),
    ("punctuation runs", "Wait... what?!? (really) [yes] {no} <tag/> --- === ***"),
    ("punctuation then newline", "a.\n\nb!\r\n"),
    ("cjk", "我想在apple工作1314151天。日本語のテキストです。한국어 텍스트"),
    ("emoji", "🦙 llamas 😁👍🏽 and 👨‍👩‍👧 family 🇫🇷"),
    ("accented nfc", "Café naïve résumé Ångström Việt Nam"),
    ("accented nfd", "Cafe\u0301 nai\u0308ve"),
    ("mixed scripts", "Привет мир! مرحبا بالعالم שלום עולם Γειά σου"),
    ("unicode spaces", "a\u00a0b\u2003c\u3000d"),
    ("unicode digits", "٣٤٥ ½ ² Ⅻ"),
    ("control chars", "a\x00b\x07c\x1fd\x7f"),
    ("special in middle", "Hello<|endoftext|>world"),
    ("special with spaces", "A <|endoftext|> B"),
    ("special twice", "<|endoftext|><|endoftext|>x"),
    ("chatml", "<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n4<|im_end|>\n"),
    ("long word", "Pneumonoultramicroscopicsilicovolcanoconiosis antidisestablishmentarianism"),
    ("url and code", "https://example.com/a?b=c&d=e#f x := map[string]int{\"a\": 1}"),
]


# Characters that exercise every branch of the split patterns: letters (incl. the
# long s that (?i) folds to s), apostrophes, digits of several scripts,
# ASCII and Unicode whitespace, \r\n, punctuation, emoji, CJK, combining marks.
SPLIT_ALPHABET = ["a", "Z", "é", "ſ", "'", "s", "S", "t", "R", "e", "l", "L", "1", "٣", "½", " ", " ", " ",
                  "\t", "\n", "\r", "\u00a0", "\u3000", "\x0b", "\x85", ".", "!", "_", "😀", "中", "\u0301"]


def split_cases():
    import random
    rng = random.Random(20240617)
    texts = [ "".join(rng.choice(SPLIT_ALPHABET) for _ in range(rng.randrange(0, 24))) for _ in range(400)]
    texts += [text for _, text in CASES]
    return texts


def main():
    root = sys.argv[1]
    gpt2 = Encoder(os.path.join(root, "gpt2"), GPT2_PAT, False, {"<|endoftext|>": 50256})
    qwen2 = Encoder(os.path.join(root, "qwen2"), QWEN2_PAT, True,
                    {"<|endoftext|>": 151643, "<|im_start|>": 151644, "<|im_end|>": 151645})

    here = os.path.dirname(os.path.abspath(__file__))
    published = json.load(open(os.path.join(here, "llamacpp_vectors.json"), encoding="utf-8"))
    bad = 0
    for name, enc in (("gpt2", gpt2), ("qwen2", qwen2)):
        for v in published[name]:
            got = enc.encode_ordinary(v["text"])
            if got != v["ids"]:
                bad += 1
                print(f"{name}: {v['text']!r}: reference {got} != published {v['ids']}", file=sys.stderr)
    if bad:
        sys.exit(f"{bad} disagreements with published vectors")

    out = {"generator": "tokenizer/testdata/gen_vectors.py (GPT-2 encoder.py BPE over vocab.json/merges.txt, "
                        "regex module " + re.__version__ + ", unicodedata " + unicodedata.unidata_version + ")",
           "gpt2": [], "qwen2": []}
    for name, text in CASES:
        out["gpt2"].append({"name": name, "text": text, "ids": gpt2.encode(text)})
        out["qwen2"].append({"name": name, "text": text, "ids": qwen2.encode(text)})
    # The tokenizer NewByteLevelJSON generated for bytelevel_corpus.txt
    # (testdata/bytelevel, Qwen2 pattern, no normalizer).
    small = Encoder(os.path.join(here, "bytelevel"), QWEN2_PAT, False,
                    {"<|endoftext|>": 397, "<|im_start|>": 398, "<|im_end|>": 399}, from_tokenizer_json=True)
    corpus = open(os.path.join(here, "bytelevel_corpus.txt"), encoding="utf-8").read()
    out["bytelevel"] = [{"name": "training corpus", "text": corpus, "ids": small.encode(corpus)}]
    for name, text in CASES:
        out["bytelevel"].append({"name": name, "text": text, "ids": small.encode(text)})

    # Pre-tokenizer pieces (what regex.findall returns; these patterns match
    # every character, so findall equals HF's Split with behavior Isolated).
    out["splits"] = []
    for text in split_cases():
        out["splits"].append({"text": text,
                              "gpt2": re.findall(GPT2_PAT, text),
                              "llama3": re.findall(LLAMA3_PAT, text),
                              "qwen2": re.findall(QWEN2_PAT, text)})
    json.dump(out, sys.stdout, ensure_ascii=False, indent=0)
    print()


if __name__ == "__main__":
    main()
