#!/usr/bin/python3
"""Golden outputs of NLTK 3.8 Punkt / word_tokenize and langdetect 1.0.9 for the Go ports.

Run with Debian's interpreter (python3-nltk 3.8, python3-langdetect 1.0.9), from a directory
without an nltk/ subfolder:

    cd /tmp && /usr/bin/python3 /work/wt-nlp/scripts/nlp_goldens.py \
        --data ../shared/data --punkt-out punkt/testdata/goldens.jsonl.gz \
        --langdetect-out langdetect/testdata/goldens.jsonl.gz

The corpus is hand-written edge cases, IFEval responses (GPT-4 and the 17 strict_results
models) sampled with a fixed seed, single paragraphs cut from them, and random strings of the
characters and tokens the ported regular expressions treat specially. --full writes
the outputs for every response instead (`make fullgoldens` writes them and compares; not for
testdata).

Punkt is the model the official checker loads (nltk:tokenizers/punkt/english.pickle); the
pickle is copied into a temporary NLTK_DATA so the machine's own nltk_data plays no part.
langdetect runs with DetectorFactory.seed = 0 (the official checker leaves it unset, which
makes it random); each line also records whether loading the profiles in sorted order (what
the Go port does) changes the answer.
"""
import argparse
import glob
import gzip
import json
import os
import random
import shutil
import sys
import tempfile

EDGE_CASES = [
    "",
    " ",
    "\n\n",
    "Hello.",
    "Hello",
    "Mr. Smith went to Washington. He arrived at 5 p.m. and left.",
    "Punkt knows that the periods in Mr. Smith and Johann S. Bach\ndo not mark sentence boundaries.  And sometimes sentences\ncan start with non-capitalized words.  i is a good variable\nname.",
    "(How does it deal with this parenthesis?)  \"It should be part of the\nprevious sentence.\" \"(And the same with this one.)\" ('And this one!')\n\"('(And (this)) '?)\" [(and this. )]",
    "Very bad acting!!! I promise.",
    "Wait... what? Really?! Yes. . . it is.",
    "The U.S.A. is big. The U.K. is not. e.g. this one. i.e. that one.",
    "It costs $3.88 (roughly 3,36 euros). Buy 2.5 kg. Call 555-1234. Done.",
    "He said, \"I can't do it.\" She replied: 'You won't?' They're gonna go, wanna come?",
    "I cannot believe it's 'tis the season. Gimme a break, lemme see, gotta go. D'ye know?",
    "``Quoted'' text and “smart quotes” and ‘single’ and «guillemets» and „low”.",
    "1. First item.\n2. Second item.\n3. Third item.",
    "* bullet one\n* bullet two\n\n- dash one\n- dash two",
    "# Title\n\n## Section 1\nSome text here. More text.\n\n**Bold** and *italic*.",
    "Dr. Jones, Ph.D., met Prof. Lee at 10 a.m. on Jan. 5. They talked.",
    "SECTION 1\nThis is it.\nSECTION 2\nThis is that.",
    "Is this a question? Yes! It is. No... maybe.",
    "Emoji 😀 here. And 🎉 there! Done 👍.",
    "Ellipsis at end...",
    "Mixed: one--two---three----four. -- dash -- .",
    "P.S. I love you.\nP.P.S. Me too.",
    "The number 3. The number 4.5. The year 1999. Then 2000.",
    "J. R. R. Tolkien wrote. C. S. Lewis too.",
    "end with quote.\" Next one.' And (paren.) Then [bracket.] Then {brace.}",
    "tab\tseparated.\tsentences.\ttoo.",
    "Non\u00a0breaking\u00a0space. Next\u2003sentence.\u2028Line sep.",
    "Ünïcödé wörds. Ärger ist groß. Ça va? Oui.",
    "Το κείμενο. Άλλη πρόταση. ΟΔΟΣ.",
    "Это текст. Ещё одно предложение! Да?",
    "これは日本語です。次の文です。",
    "这是中文。第二句。",
    "Đây là tiếng Việt. Xin chào các bạn.",
    "hello@example.com wrote http://example.com/x?y=1. And https://a.b/c#d too.",
    "A sentence with 'single quotes' and 'a 'b 'c 'd 'm 'T words.",
    "I'm sure you're right, we'll see, they've gone, he'd go, she's here, it's ok.",
    "I'M SURE YOU'RE RIGHT, WE'LL SEE, THEY'VE GONE, HE'D GO, SHE'S HERE, IT'S OK, DON'T.",
    "x'' y'' z''. a''b.",
    "Wanna go? wanna\tgo. Wanna",
    "semi;colon @at #hash $dollar %percent &amp; ok.",
    "a,b, c,1,2 :x :1 end:",
    "end,",
    "<html> tags </html> and (parens) and [brackets] and {braces}.",
    "\"Starting quote. \"Another.\"",
    "'Tis the season. 'twas the night.",
    "Cannot, CANNOT, cAnNoT, cannot's.",
    "more'n enough. Gonna gotta.",
    "The end. \n\n\n New paragraph.   \n  Indented line.",
    "St. Louis is in Mo. It's big. Gen. Grant was there. Col. Mustard too.",
    "We saw 3 p.m. Meetings. And a.m. too.",
    "...",
    ". . .",
    "Hmm. . . ok.",
    "?!",
    "The item costs 5.\nAnother line 6.\nFinal 7.",
    "He paid U.S. $5 and left. She got $10.",
    "Q: what? A: that.",
    "The_underscore_word. Next.",
    "Ⅳ. Roman numeral. ⅳ. lower.",
    "ſtrange ſ. The İstanbul. ı dotless.",
    "Numbers: ²³ ½. Done.",
    "a.\u0301b. c.",
    "x" * 50 + ". " + "y" * 50 + ".",
    "Ending with whitespace.   \n",
    "One.\rTwo.\r\nThree.",
    "Unit sep\x1fhere. Next.",
]

LANG_CASES = [
    "",
    "   ",
    "12345 !!! ???",
    "Hello world",
    "This is an English sentence.",
    "Ceci est une phrase en français.",
    "Dies ist ein deutscher Satz.",
    "Esta es una oración en español.",
    "Questa è una frase in italiano.",
    "Esta é uma frase em português.",
    "Это предложение на русском языке.",
    "Це речення українською мовою.",
    "これは日本語の文です。",
    "这是一个中文句子。",
    "這是一個中文句子。",
    "이것은 한국어 문장입니다.",
    "هذه جملة باللغة العربية.",
    "این یک جمله فارسی است.",
    "यह एक हिंदी वाक्य है।",
    "এটি একটি বাংলা বাক্য।",
    "இது ஒரு தமிழ் வாக்கியம்.",
    "ఇది ఒక తెలుగు వాక్యం.",
    "ಇದು ಕನ್ನಡ ವಾಕ್ಯ.",
    "ഇത് ഒരു മലയാളം വാക്യമാണ്.",
    "આ એક ગુજરાતી વાક્ય છે.",
    "ਇਹ ਇੱਕ ਪੰਜਾਬੀ ਵਾਕ ਹੈ।",
    "हे एक मराठी वाक्य आहे.",
    "यो नेपाली वाक्य हो।",
    "یہ ایک اردو جملہ ہے۔",
    "זה משפט בעברית.",
    "นี่คือประโยคภาษาไทย",
    "Đây là một câu tiếng Việt.",
    "Đây là một câu tiếng Việt.",  # decomposed diacritics (normalize_vi)
    "Hii ni sentensi ya Kiswahili.",
    "Tämä on suomenkielinen lause.",
    "To jest polskie zdanie.",
    "Това е изречение на български език.",
    "Bu bir Türkçe cümledir.",
    "Dit is een Nederlandse zin.",
    "Detta är en svensk mening.",
    "THIS IS ALL CAPS ENGLISH TEXT",
    "this is all lowercase english text",
    "Mail me at someone@example.com or visit https://example.com/page?x=1",
    "http://only.a.url/path",
    "a@b.c",
    "Ĕ ĕ Ș ș Ț ț ی ۃ",
    "ぁあぃいカタカナㄅㄆ",
    "한국어 한글",
    "“Quoted” — dash… ellipsis",
    "ok",
    "a",
    "Ja",
    "Die",
    "Sí",
    "\u00ab\u00bb\u00b0\u00a0",
    "x" * 12000,
    "word " * 3000,
]


# Pieces that random_texts strings together: every character class and token the ported
# regular expressions treat specially, so that random mixes reach the rare branches.
PIECES = [
    ".", ".", "..", "...", ". ", "?", "!", ",", ":", ";", '"', "'", "''", "``", "`", "(", ")", "[", "]", "{", "}",
    "<", ">", "-", "--", "*", "@", "#", "$", "%", "&", " ", " ", " ", "  ", "\n", "\n\n", "\t", "\u00a0", "\u2028",
    "\x1f", "a", "I", "Mr", "mr", "Dr", "U.S", "e.g", "p.m", "J", "the", "The", "He", "he", "cannot", "Gonna", "wanna",
    "'tis", "'T", "n't", "'ll", "'s", "'re", "'m", "'d", "d", "ye", "3", "4.5", "1999", "-2", ",5", "İnc", "ſ", "K",
    "é", "Ünï", "«", "»", "“", "”", "‘", "’", "„", "ς", "Σ", "日本", "²", "_x", "A", "B", "Smith", "however", "But",
    "inc", "co", "st", "http://x.y/z", "a@b.cd", "Đ", "ây", "\u0300", "\u0301", "мир", "ي", "ی", "한국", "カタ", "ㄅ",
]


def random_texts(rng, n):
    return ["".join(rng.choice(PIECES) for _ in range(rng.randint(0, 30))) for _ in range(n)]


def load_responses(data):
    """All IFEval responses: GPT-4's, then each strict_results model's, in file order."""
    out = []
    files = [os.path.join(data, "ifeval/official_gpt4/input_response_data_gpt4_20231107_145030.jsonl")]
    files += sorted(glob.glob(os.path.join(data, "ifeval/strict_results/*.eval_results_strict.jsonl")))
    for path in files:
        with open(path, encoding="utf-8") as f:
            for line in f:
                line = line.strip()
                if line:
                    r = json.loads(line).get("response")
                    if isinstance(r, str):
                        out.append(r)
    return out


def fragments(texts, rng, n):
    """Paragraphs and lines cut from responses: short inputs stress langdetect's sampling."""
    out = []
    for t in rng.sample(texts, min(n, len(texts))):
        parts = [p for p in t.split("\n") if p.strip()]
        if parts:
            out.append(rng.choice(parts))
    return out


def punkt_tokenizer(data):
    tmp = tempfile.mkdtemp(prefix="nltk_data_")
    src = os.path.join(data, "nltk/punkt/english.pickle")
    for sub in ("tokenizers/punkt", "tokenizers/punkt/PY3"):
        os.makedirs(os.path.join(tmp, sub), exist_ok=True)
        shutil.copy(src, os.path.join(tmp, sub, "english.pickle"))
    os.environ["NLTK_DATA"] = tmp
    import nltk

    nltk.data.path[:] = [tmp]
    assert nltk.__version__ == "3.8", nltk.__version__
    tok = nltk.data.load("nltk:tokenizers/punkt/english.pickle")
    return tok, nltk


def check_params(tok, data):
    """The JSON the Go port embeds must hold exactly the pickle's parameters."""
    with open(os.path.join(data, "nltk/punkt/english.json"), encoding="utf-8") as f:
        j = json.load(f)
    p = tok._params
    assert set(j["abbrev_types"]) == p.abbrev_types
    assert {tuple(c) for c in j["collocations"]} == p.collocations
    assert set(j["sent_starters"]) == p.sent_starters
    assert j["ortho_context"] == dict(p.ortho_context)


def write_gz(path, rows):
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with gzip.GzipFile(path, "wb", mtime=0) as f:
        for r in rows:
            f.write((json.dumps(r, ensure_ascii=False) + "\n").encode("utf-8"))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", required=True)
    ap.add_argument("--punkt-out", required=True)
    ap.add_argument("--langdetect-out", required=True)
    ap.add_argument("--sample", type=int, default=260, help="responses sampled for Punkt")
    ap.add_argument("--full", action="store_true", help="every response, no sampling")
    a = ap.parse_args()

    rng = random.Random(0)
    responses = load_responses(a.data)
    uniq = list(dict.fromkeys(responses))
    if a.full:
        p_texts = uniq
        l_texts = uniq
    else:
        nonascii = [t for t in uniq if any(ord(c) > 127 for c in t)]
        p_texts = EDGE_CASES + rng.sample(uniq, a.sample) + rng.sample(nonascii, 60) + fragments(uniq, rng, 200)
        l_texts = LANG_CASES + rng.sample(uniq, 500) + rng.sample(nonascii, 300) + fragments(uniq, rng, 700)
        p_texts += random_texts(rng, 2000)
        l_texts += random_texts(rng, 500)

    tok, nltk = punkt_tokenizer(a.data)
    check_params(tok, a.data)
    rows = []
    for t in p_texts:
        rows.append({"text": t, "sentences": tok.tokenize(t), "words": nltk.word_tokenize(t)})
    write_gz(a.punkt_out, rows)

    import langdetect
    from langdetect import DetectorFactory, LangDetectException
    from langdetect.detector_factory import PROFILES_DIRECTORY

    DetectorFactory.seed = 0
    sorted_factory = DetectorFactory()
    sorted_factory.load_json_profile(
        [open(os.path.join(PROFILES_DIRECTORY, n), encoding="utf-8").read() for n in sorted(os.listdir(PROFILES_DIRECTORY))]
    )

    def run(fn):
        try:
            return fn()
        except LangDetectException as e:
            return "error: " + str(e)

    def sorted_detect(t):
        d = sorted_factory.create()
        d.append(t)
        return d.detect()

    from langdetect import detector_factory

    detector_factory.init_factory()

    def probabilities(t):
        """Every language's averaged probability above 1e-4: the sampled n-grams decide
        these to many digits, so they check the ported random stream, not just the winner."""
        d = detector_factory._factory.create()
        d.append(t)
        try:
            d.detect()
        except LangDetectException:
            return {}
        return {lang: p for lang, p in zip(d.langlist, d.langprob) if p > 1e-4}

    rows = []
    order_diffs = 0
    for t in l_texts:
        want = run(lambda: langdetect.detect(t))
        alt = run(lambda: sorted_detect(t))
        order_diffs += want != alt
        rows.append({"text": t, "lang": want, "sorted_order_lang": alt, "probs": probabilities(t)})
    write_gz(a.langdetect_out, rows)
    print(
        f"punkt: {len(p_texts)} texts -> {a.punkt_out}; langdetect: {len(l_texts)} texts -> {a.langdetect_out}; "
        f"sorted-profile-order changes {order_diffs}",
        file=sys.stderr,
    )


if __name__ == "__main__":
    main()
