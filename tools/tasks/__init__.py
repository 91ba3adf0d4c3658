"""Synthetic long-context retrieval tasks over a byte vocabulary (see docs/training.md).

Standard library only, so that CI can test it and the C++ side has a plain reference.
"""

from .families import FAMILIES, generate
from .files import exact_match, item_seed, read_items, read_manifest, score, write_tasks
from .items import BOS, EOS, PAD, SEP, SPECIALS, VOCAB_SIZE, Item
from .rng import Rng, derive_seed

__all__ = [
    "BOS", "EOS", "PAD", "SEP", "SPECIALS", "VOCAB_SIZE", "FAMILIES", "Item", "Rng",
    "derive_seed", "exact_match", "generate", "item_seed", "read_items", "read_manifest", "score", "write_tasks",
]
