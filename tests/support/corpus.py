# SPDX-License-Identifier: Apache-2.0
"""The sentence pairs every checkout can have: the stand-in for the STS Benchmark sentences.

The tests compare token ids, vectors and reranker scores over a corpus the size of the STS Benchmark's
test set (1,379 pairs, 2,758 sentences), and the architecture tests train a SentencePiece vocabulary on it
(:func:`training_texts`).
Those need no gold scores, so they need no file beside the checkout: :func:`sentence_pairs` makes the pairs
from what every Python installation carries and from sentences generated here:

- prose from the Python documentation that ``pydoc`` ships (:mod:`pydoc_data.topics`): two neighbouring
  sentences of one topic make a pair, the kind of the STS forum and news pairs (long, varied, punctuated);
- captions written by a seeded grammar ("A young boy is riding a bike in the park."), each paired with
  another caption of the same subject, the kind of the STS caption pairs (short, plain).

The spread of lengths follows the STS Benchmark's (3 to 30 words; most between 6 and 15), and so does the
order: the captions first (the first hundreds of pairs are short, as tests that take the first ones expect),
then the prose. Exactly :data:`DOUBLE_SPACED` sentences have a double space between two words, as four STS sentences do (the
SentencePiece tests count them). Only ASCII whitespace and no line breaks: a sentence is one line of a
documents file. The pairs are the same on every run; :func:`digest` names them in cache keys, so a change of
corpus (another Python's documentation, an edit here) rebuilds what was built from it.
"""

from __future__ import annotations

import functools
import hashlib
import json
import random
import re

N_PAIRS = 1379  # the STS Benchmark test set's size
DOCS_PAIRS = 600  # pairs of documentation prose; the rest are captions (fewer prose pairs where a Python has less)
DOUBLE_SPACED = 4
MIN_WORDS, MAX_WORDS = 3, 30
SEED = 20261207

_SINGULAR = (
    "A man", "A woman", "A young boy", "A little girl", "An old man", "An elderly woman", "A child", "A baby",
    "A teenager", "The chef", "A police officer", "A firefighter", "A musician", "A cyclist", "A skateboarder",
    "The teacher", "A doctor", "A farmer", "A soldier", "A dancer", "A dog", "A black dog", "A brown horse",
    "A white cat", "A small bird", "A monkey", "A panda", "A person", "Someone", "The player", "A girl in red",
    "A man in a hat", "A tall man", "A young woman",
)  # fmt: skip
_PLURAL = (
    "Two men", "Three women", "Two dogs", "Some children", "A group of people", "Two kids", "The soldiers",
    "Several players", "Four friends", "Two girls", "Many tourists", "The students", "Two cats", "A few workers",
    "Three boys", "A couple", "Two horses", "The musicians", "A crowd of fans", "Five cyclists",
)  # fmt: skip
_ACTIONS = (
    "playing a guitar", "playing the piano", "playing the flute", "slicing an onion", "cutting a tomato",
    "peeling a potato", "riding a bike", "riding a horse", "running on the beach", "eating a sandwich",
    "eating pasta", "reading a book", "reading the newspaper", "swimming in a pool", "dancing", "singing",
    "talking on the phone", "cooking dinner", "jumping over a fence", "walking down the street",
    "climbing a rock wall", "playing soccer", "playing basketball", "kicking a ball", "throwing a frisbee",
    "painting a picture", "driving a car", "writing on a whiteboard", "sitting on a bench", "drinking coffee",
    "feeding the ducks", "walking a dog", "washing the dishes", "fixing a bicycle", "taking a photo",
    "looking at a map", "laughing", "sleeping", "waiting for a bus", "carrying a box", "mixing flour and eggs",
    "pouring water into a glass", "chopping wood", "folding laundry", "typing on a laptop", "skiing down a hill",
    "surfing a large wave", "crossing the road", "flying a kite", "planting a tree",
)  # fmt: skip
_PLACES = (
    "in the park", "on the street", "at the beach", "in a kitchen", "on a stage", "in the snow",
    "near the river", "outside a building", "in front of a crowd", "in a small room", "on a busy sidewalk",
    "at night", "in the rain", "on a wooden floor", "by the lake", "in a field of grass", "at the market",
)  # fmt: skip
_ENDS = (".", ".", ".", ".", "!", "")


def _be(subject: str) -> str:
    return "are" if subject in _PLURAL else "is"


def _caption(rng: random.Random, subject: str, action: str) -> str:
    place = rng.choice(_PLACES) if rng.random() < 0.25 else ""  # mostly short, as the STS captions are
    text = f"{subject} {_be(subject)} {action}" + (f" {place}" if place else "")
    return text + rng.choice(_ENDS)


def _caption_pairs(rng: random.Random, n: int, taken: set[str]) -> list[tuple[str, str]]:
    """``n`` caption pairs: the same subject doing the same thing elsewhere, or something else (new texts only)."""
    out: list[tuple[str, str]] = []
    while len(out) < n:
        subject = rng.choice(_SINGULAR + _PLURAL)
        action = rng.choice(_ACTIONS)
        first = _caption(rng, subject, action)
        second = _caption(rng, subject, action if rng.random() < 0.6 else rng.choice(_ACTIONS))
        if first != second and first not in taken and second not in taken:
            taken.update((first, second))
            out.append((first, second))
    return out


_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z\"(])")
_UNDERLINE = re.compile(r"[*=\-~^+]{3,}")
_MARKUP = ("|", "+--", ">>>", "::", "\\")


def docs_sentences() -> list[list[str]]:
    """The prose sentences of each documentation topic (``pydoc_data.topics``), in order, one list per topic.

    Only unindented paragraphs (the indented ones are code, grammar and tables), whitespace collapsed, cut
    after a full stop, and only sentences of :data:`MIN_WORDS` to :data:`MAX_WORDS` words that start with a
    capital letter or a quote.
    """
    from pydoc_data.topics import topics

    out = []
    for key in sorted(topics):
        sentences = []
        for block in re.split(r"\n[ \t]*\n", topics[key]):
            lines = block.strip("\n").split("\n")
            if any(line[:1].isspace() for line in lines) or any(_UNDERLINE.fullmatch(ln.strip()) for ln in lines):
                continue
            paragraph = " ".join(" ".join(lines).split())
            for sentence in _SENTENCE_END.split(paragraph):
                words = len(sentence.split())
                if (
                    MIN_WORDS <= words <= MAX_WORDS
                    and sentence[0] in 'ABCDEFGHIJKLMNOPQRSTUVWXYZ"('
                    and not any(m in sentence for m in _MARKUP)
                ):
                    sentences.append(sentence)
        out.append(sentences)
    return out


def _docs_pairs(rng: random.Random, n: int, taken: set[str]) -> list[tuple[str, str]]:
    """Up to ``n`` pairs of neighbouring sentences of one topic (each sentence in one pair at most)."""
    candidates = []
    for sentences in docs_sentences():
        for a, b in zip(sentences[::2], sentences[1::2], strict=False):
            if a != b and a not in taken and b not in taken:
                taken.update((a, b))
                candidates.append((a, b))
    return rng.sample(candidates, min(n, len(candidates)))


def _double_space(text: str, rng: random.Random) -> str:
    """``text`` with one of its inner spaces doubled."""
    at = rng.choice([i for i, ch in enumerate(text) if ch == " "])
    return text[:at] + " " + text[at:]


@functools.cache
def _pairs() -> tuple[tuple[str, ...], tuple[str, ...]]:
    rng = random.Random(SEED)
    taken: set[str] = set()
    docs = _docs_pairs(rng, DOCS_PAIRS, taken)
    captions = _caption_pairs(rng, N_PAIRS - len(docs), taken)
    pairs = captions + docs  # the STS Benchmark's order: its short captions first, then news and forums
    # A double space between two words, in the first sentences of four caption pairs.
    generated = set(captions)
    for i in rng.sample([i for i, pair in enumerate(pairs) if pair in generated], DOUBLE_SPACED):
        pairs[i] = (_double_space(pairs[i][0], rng), pairs[i][1])
    return tuple(a for a, _ in pairs), tuple(b for _, b in pairs)


def training_texts() -> list[str]:
    """What the test models' own vocabularies (SentencePiece unigram) are trained on: every sentence of the
    pairs, then every line of the documentation, whitespace collapsed (code and tables too: the pairs alone
    are too few distinct words for the 4,000 pieces of the unigram model; each Python gives about 4,500)."""
    from pydoc_data.topics import topics

    first, second = _pairs()
    lines = (" ".join(line.split()) for key in sorted(topics) for line in topics[key].split("\n"))
    return [*first, *second, *filter(None, lines)]


def sentence_pairs() -> tuple[list[str], list[str]]:
    """:data:`N_PAIRS` pairs of related sentences: the first sentences and the second ones (new lists)."""
    first, second = _pairs()
    return list(first), list(second)


@functools.cache
def digest() -> str:
    """16 hex digits over the pairs and the training texts: what a cache of anything built from them keys on."""
    return hashlib.sha256(json.dumps([_pairs(), training_texts()]).encode()).hexdigest()[:16]


def main() -> int:
    """Print the pairs' digest, counts and length spread (``python -m tests.support.corpus``)."""
    first, second = sentence_pairs()
    texts = first + second
    words = sorted(len(t.split()) for t in texts)
    cut = [words[int(q * (len(words) - 1))] for q in (0, 0.05, 0.25, 0.5, 0.75, 0.95, 1)]
    print(f"{len(first)} pairs, {len(set(texts))} distinct sentences, digest {digest()}")
    print(f"words at 0/5/25/50/75/95/100 %: {cut}")
    print(f"double-spaced: {sum('  ' in t for t in texts)}, non-ASCII: {sum(not t.isascii() for t in texts)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
