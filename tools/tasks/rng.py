"""A tiny, version-independent PRNG (SplitMix64) so that a seed gives the same tasks on every Python.

`random.Random` keeps `random()` stable across versions but not the algorithms behind `choice`, `sample` or
`shuffle`; SplitMix64 is ten lines, has no such caveat, and is easy to reproduce in C++ if ever needed.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import TypeVar

T = TypeVar("T")
_MASK = (1 << 64) - 1


def derive_seed(seed: int, *labels: object) -> int:
    """A 64-bit seed for a named sub-stream, e.g. derive_seed(seed, "mqar", 4096, 17)."""
    text = "/".join([str(seed), *map(str, labels)]).encode()
    return int.from_bytes(hashlib.blake2b(text, digest_size=8).digest(), "little")


class Rng:
    def __init__(self, seed: int) -> None:
        self._state = seed & _MASK

    def next_u64(self) -> int:
        self._state = (self._state + 0x9E3779B97F4A7C15) & _MASK
        z = self._state
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK
        return z ^ (z >> 31)

    def below(self, n: int) -> int:
        """Uniform integer in [0, n) without modulo bias."""
        if n <= 0:
            raise ValueError(f"below({n}): n must be positive")
        limit = (1 << 64) - (1 << 64) % n
        while True:
            x = self.next_u64()
            if x < limit:
                return x % n

    def uniform(self) -> float:
        """Uniform float in [0, 1) with 53 random bits."""
        return (self.next_u64() >> 11) * (1.0 / (1 << 53))

    def choice(self, items: Sequence[T]) -> T:
        return items[self.below(len(items))]

    def shuffle(self, items: list[T]) -> None:
        for i in range(len(items) - 1, 0, -1):
            j = self.below(i + 1)
            items[i], items[j] = items[j], items[i]

    def sample_indices(self, n: int, k: int) -> list[int]:
        """k distinct integers from [0, n), in random order."""
        if k > n:
            raise ValueError(f"cannot sample {k} distinct values out of {n}")
        if 3 * k >= n:
            pool = list(range(n))
            self.shuffle(pool)
            return pool[:k]
        seen: set[int] = set()
        out: list[int] = []
        while len(out) < k:
            x = self.below(n)
            if x not in seen:
                seen.add(x)
                out.append(x)
        return out
