"""Synthetic text: a fixed pseudo-word lexicon for the haystack, keys, values and the record syntax.

A record is `|key=value;` (keys: lowercase letters, values: digits or, in variable tracking, another key).
The haystack is made of lowercase pseudo-words separated by spaces, so it never contains `|`, `=`, `;`,
`?`, `#`, `,` or digits, and a record can always be told apart from the filler around it.
"""

from __future__ import annotations

import bisect
import itertools

from .rng import Rng

KEY_LEN = 3
VALUE_LEN = 3
LETTERS = b"abcdefghijklmnopqrstuvwxyz"
DIGITS = b"0123456789"
KEY_SPACE = len(LETTERS) ** KEY_LEN

_LEXICON_SEED = 0x5EED_1E71C0  # the "language" is the same for every split; only the draws differ
_LEXICON_SIZE = 4096
_CONSONANTS = b"bcdfghjklmnprstvwz"
_VOWELS = b"aeiou"


def record(key: bytes, value: bytes) -> bytes:
    return b"|" + key + b"=" + value + b";"


def key_at(index: int) -> bytes:
    """The index-th key of the key space (base-26 digits, most significant first)."""
    out = bytearray()
    for _ in range(KEY_LEN):
        index, r = divmod(index, len(LETTERS))
        out.append(LETTERS[r])
    return bytes(reversed(out))


def distinct_keys(rng: Rng, k: int) -> list[bytes]:
    return [key_at(i) for i in rng.sample_indices(KEY_SPACE, k)]


def random_value(rng: Rng) -> bytes:
    return bytes(DIGITS[rng.below(len(DIGITS))] for _ in range(VALUE_LEN))


def distinct_values(rng: Rng, k: int) -> list[bytes]:
    space = len(DIGITS) ** VALUE_LEN
    return [str(i).zfill(VALUE_LEN).encode() for i in rng.sample_indices(space, k)]


def near_keys(rng: Rng, key: bytes, k: int) -> list[bytes]:
    """k distinct keys that differ from `key` in exactly one letter."""
    options = [key[:i] + bytes([c]) + key[i + 1 :] for i in range(len(key)) for c in LETTERS if c != key[i]]
    return [options[i] for i in rng.sample_indices(len(options), k)]


class Lexicon:
    """Pseudo-words (consonant-vowel syllables) drawn with Zipf weights 1/rank."""

    def __init__(self) -> None:
        rng = Rng(_LEXICON_SEED)
        words: dict[bytes, None] = {}
        while len(words) < _LEXICON_SIZE:
            syllables = 1 + rng.below(3)
            word = b"".join(bytes([rng.choice(_CONSONANTS), rng.choice(_VOWELS)]) for _ in range(syllables))
            if rng.below(3) == 0:
                word += bytes([rng.choice(_CONSONANTS)])
            words[word] = None
        self.words = list(words)
        self._cumulative = list(itertools.accumulate(1.0 / (r + 1) for r in range(len(self.words))))

    def draw(self, rng: Rng) -> bytes:
        return self.words[bisect.bisect_right(self._cumulative, rng.uniform() * self._cumulative[-1])]

    def filler(self, rng: Rng, n: int) -> list[bytes]:
        """Chunks `word ` of exactly n bytes in total (the last word may be cut)."""
        chunks, total = [], 0
        while total < n:
            chunk = self.draw(rng) + b" "
            chunks.append(chunk[: n - total])
            total += len(chunks[-1])
        return chunks


LEXICON = Lexicon()


def haystack(rng: Rng, length: int, needles: list[tuple[float, bytes]]) -> tuple[bytes, list[int]]:
    """Exactly `length` bytes of filler with every needle inserted at a word boundary near its depth (0..1).

    Needles keep their relative order when their depths are sorted. Returns the text and the byte offset of
    every needle, in the order given.
    """
    filler_len = length - sum(len(n) for _, n in needles)
    if filler_len < 0:
        raise ValueError(f"needles ({length - filler_len} bytes) do not fit into {length} bytes")
    chunks = LEXICON.filler(rng, filler_len)
    starts = list(itertools.accumulate((len(c) for c in chunks), initial=0))  # boundary i precedes chunk i
    order = sorted(range(len(needles)), key=lambda i: needles[i][0])
    boundary = [0] * len(needles)
    for i in order:
        boundary[i] = bisect.bisect_right(starts, round(needles[i][0] * filler_len)) - 1
    parts: list[bytes] = []
    offsets = [0] * len(needles)
    cursor, written = 0, 0
    for i in order:
        head = b"".join(chunks[cursor : boundary[i]])
        parts.append(head)
        written += len(head)
        cursor = boundary[i]
        offsets[i] = written
        parts.append(needles[i][1])
        written += len(needles[i][1])
    parts.append(b"".join(chunks[cursor:]))
    return b"".join(parts), offsets


def sorted_depths(rng: Rng, k: int) -> list[float]:
    return sorted(rng.uniform() for _ in range(k))
