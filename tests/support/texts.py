# SPDX-License-Identifier: Apache-2.0
"""A deterministic corpus of varied texts for the exactness tests (no external data), and the texts whose
token ids legitimately differ from Hugging Face's."""

from __future__ import annotations

import random

# llama.cpp's WordPiece pre-tokenizer drops spacing combining marks (Unicode category
# Mc, e.g. the Devanagari vowel signs), which Hugging Face's BERT tokenizer keeps.
# That is inside llama.cpp; the tests compare these texts separately.
LLAMA_CPP_WPM_DIVERGES = {"हिन्दी में एक वाक्य।"}
# Hugging Face parses "[CLS]", "[MASK]", ... in user text as special tokens; embellama
# does not unless asked (parse_special=True).
HAS_SPECIAL_MARKUP = {
    "[CLS] and [SEP] written in the text are not special tokens here.",
    "<s> </s> <unk> <pad> [MASK] [UNK]",
}

HANDWRITTEN = [
    "Hello world!",
    "A girl is styling her hair.",
    "The quick brown fox jumps over the lazy dog.",
    "I love machine learning.",
    "It's 3:45 pm on 2026-11-23, and the temperature is -4.5°C.",
    "Email me at someone@example.com or call +1 (555) 010-9999.",
    "def add(a, b):\n    return a + b",
    "SELECT name, COUNT(*) FROM users GROUP BY name HAVING COUNT(*) > 1;",
    "Café, naïve, résumé, façade, jalapeño, Ångström, Øresund, Straße.",
    "Ελληνικά γράμματα: αβγδε, and Кириллица: привет мир.",
    "日本語のテキストも埋め込みます。東京は日本の首都です。",
    "中文句子：我喜欢自然语言处理。",
    "한국어 문장도 있습니다.",
    "مرحبا بالعالم، هذه جملة عربية.",
    "שלום עולם",
    "हिन्दी में एक वाक्य।",
    "ภาษาไทยไม่มีช่องว่างระหว่างคำ",
    "Emoji: 😀 🎉 👍🏽 🇯🇵 👩‍👩‍👧‍👦 ❤️",
    "Combining marks: e\u0301 a\u0308 o\u0302 n\u0303 (decomposed).",
    "Zero-width joiner\u200dand non-joiner\u200cinside words.",
    "Tabs\tand\tnew\nlines\r\nand   multiple    spaces.",
    "    leading and trailing whitespace    ",
    "UPPERCASE TEXT SHOULD BE LOWERCASED BY THIS MODEL.",
    "MiXeD cAsE wItH nUmBeRs 12345 and 3.14159.",
    "Punctuation!!! ??? ... --- ;;; ::: ((())) [[[]]] {{{}}}",
    "a",
    "!",
    "9",
    "ok",
    "Supercalifragilisticexpialidocious antidisestablishmentarianism pneumonoultramicroscopicsilicovolcanoconiosis.",
    "URLs like https://example.org/path?query=1&x=y#frag are common in documents.",
    "Markdown: **bold**, _italic_, `code`, [link](http://a.b).",
    "<html><body><p>Some HTML &amp; entities &lt;tag&gt;</p></body></html>",
    '{"json": true, "list": [1, 2, 3], "nested": {"a": null}}',
    "Math: ∀x∈ℝ, x² ≥ 0; ∑_{i=1}^{n} i = n(n+1)/2; √2 ≈ 1.414.",
    "Currency: $100, €85, £70, ¥10000, ₹500, ₿0.01.",
    "The year 1999 was followed by 2000, then 2001.",
    "[CLS] and [SEP] written in the text are not special tokens here.",
    "<s> </s> <unk> <pad> [MASK] [UNK]",
    "Quotes: “curly”, ‘single’, «guillemets», „German“.",
    "Dashes: en–dash, em—dash, minus − sign, hyphen-minus.",
    "Ligatures and compatibility forms: ﬁne ﬂow Ⅻ ① ｆｕｌｌｗｉｄｔｈ",
    "Accents on capitals: ÉCOLE, ÀÉÎÕÜ, ÇA VA?",
    "Vietnamese: Tiếng Việt có nhiều dấu thanh.",
    "Turkish dotless i: ıstanbul, İstanbul, ISTANBUL.",
    "Repeated words words words words words words words words.",
    "A sentence with a very long number 123456789012345678901234567890.",
    "Mixed scripts: Tokyo 東京 Москва Paris パリ.",
    "Control characters: bell\x07, escape\x1b, delete\x7f inside.",
    "Null byte \x00 in the middle.",
    "Soft hyphen: co\u00adoperate and non\u2011breaking hyphen.",
    "No-break\u00a0space and thin\u2009space and ideographic\u3000space.",
    "Right-to-left mark\u200f and left-to-right mark\u200e.",
    "The cat sat on the mat. The dog sat on the log.",
    "Embeddings map text into vectors so that similar meanings are close together.",
]

_WORDS = (
    "the a an of to in on for with by from at as is was are were be been being have has had do does "
    "did will would can could should may might must shall cat dog bird fish horse cow sheep goat man woman "
    "child people city country river mountain ocean forest desert road car train plane ship music art "
    "science history language computer network data model vector search engine query document answer "
    "question problem solution idea theory experiment result quickly slowly carefully happily sadly "
    "big small red blue green old new good bad hot cold bright dark strong weak rich poor early late "
    "run walk jump swim fly read write sing dance cook eat drink sleep think learn teach build break"
).split()


def generated(n: int, seed: int = 1234) -> list[str]:
    """``n`` pseudo-sentences of 3 to 120 words (under 256 tokens each)."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        k = rng.choice([3, 5, 8, 12, 20, 35, 60, 90, 120])
        words = [rng.choice(_WORDS) for _ in range(k)]
        words[0] = words[0].capitalize()
        out.append(" ".join(words) + rng.choice([".", "!", "?", "", " ..."]))
    return out


def varied_texts() -> list[str]:
    """Hand-written edge cases plus generated sentences: about 300 texts."""
    return HANDWRITTEN + generated(300 - len(HANDWRITTEN))
