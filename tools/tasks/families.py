"""RULER-style task families over the record syntax of text.py.

Every family builds an Item of an exact token length:
  * evaluation items (training=False): the prompt is exactly `length` tokens; one scored question at the end
    (mqar: several, all but the last answered in the prompt);
  * training items (training=True): the whole sequence (prompt and every answer) is exactly `length` tokens,
    with as many questions as the family allows, so that supervision is dense.

Questions: `?key=` asks for every value recorded for key, in order of appearance, joined by `,`;
`#value=` (variable tracking) asks for every variable whose chain of assignments leads to value, in order.
`meta["evidence"]` lists the token positions (in ids / prompt) of the records the scored answer needs.
"""

from __future__ import annotations

from collections.abc import Callable

from .items import Item, question_tokens
from .rng import Rng
from .text import (
    KEY_LEN,
    KEY_SPACE,
    VALUE_LEN,
    distinct_keys,
    distinct_values,
    haystack,
    near_keys,
    random_value,
    record,
    sorted_depths,
)

RECORD_LEN = KEY_LEN + VALUE_LEN + 3
QUESTION_LEN = KEY_LEN + 2  # ?key=


def _fit(n: int, length: int, tokens_each: int) -> int:
    """At most n groups of `tokens_each` tokens (records and questions), using at most half of the length:
    short training sequences get fewer needles instead of failing."""
    return max(1, min(n, length // (2 * tokens_each)))


def _query(key: bytes, values: list[bytes]) -> tuple[bytes, bytes]:
    return b"?" + key + b"=", b",".join(values)


def _context_budget(length: int, questions: list[tuple[bytes, bytes]], training: bool) -> int:
    budget = length - question_tokens(questions, count_last_answer=training)
    if budget <= 0:
        raise ValueError(f"length {length} is too short for {len(questions)} questions")
    return budget


def _haystack_item(
    task: str,
    rng: Rng,
    length: int,
    training: bool,
    groups: list[list[bytes]],
    questions: list[tuple[bytes, bytes]],
    scored_group: int,
) -> Item:
    """Records of each group in order at random depths of a haystack; `scored_group` is what the last
    question needs."""
    needles: list[tuple[float, bytes]] = []
    members: list[list[int]] = []
    for group in groups:
        depths = sorted_depths(rng, len(group))
        members.append(list(range(len(needles), len(needles) + len(group))))
        needles += list(zip(depths, group))
    budget = _context_budget(length, questions, training)
    context, offsets = haystack(rng, budget, needles)
    evidence = [1 + offsets[i] for i in members[scored_group]]
    return Item(task, context, tuple(questions), {"evidence": evidence, "depth": [e / length for e in evidence]})


def niah_single(rng: Rng, length: int, training: bool) -> Item:
    (key,) = distinct_keys(rng, 1)
    value = random_value(rng)
    return _haystack_item("niah_single", rng, length, training, [[record(key, value)]], [_query(key, [value])], 0)


def niah_multikey(rng: Rng, length: int, training: bool) -> Item:
    """Several needles with different keys; evaluation asks for one of 4, training for all of 2..8."""
    n = _fit(2 + rng.below(7), length, RECORD_LEN + QUESTION_LEN + VALUE_LEN + 1) if training else 4
    keys = distinct_keys(rng, n)
    values = [random_value(rng) for _ in keys]
    groups = [[record(k, v)] for k, v in zip(keys, values)]
    asked = list(range(n)) if training else [rng.below(n)]
    rng.shuffle(asked)
    questions = [_query(keys[i], [values[i]]) for i in asked]
    return _haystack_item("niah_multikey", rng, length, training, groups, questions, asked[-1])


def niah_multivalue(rng: Rng, length: int, training: bool) -> Item:
    """One key recorded with several values (evaluation: 1 key x 4 values; training: 1..3 keys x 2..4)."""
    n_keys = _fit(1 + rng.below(3), length, 4 * (RECORD_LEN + VALUE_LEN + 1) + QUESTION_LEN) if training else 1
    keys = distinct_keys(rng, n_keys)
    values = [[random_value(rng) for _ in range(2 + rng.below(3) if training else 4)] for _ in keys]
    groups = [[record(k, v) for v in vs] for k, vs in zip(keys, values)]
    asked = list(range(n_keys))
    rng.shuffle(asked)
    questions = [_query(keys[i], values[i]) for i in asked]
    return _haystack_item("niah_multivalue", rng, length, training, groups, questions, asked[-1])


def variable_tracking(rng: Rng, length: int, training: bool) -> Item:
    """Chains `|a=123;` `|b=a;` `|c=b;` ...; `#123=` asks for `a,b,c,...` (evaluation: 2 chains of 4, one
    asked; training: 1..3 chains of 2..5, all asked)."""
    n_chains = _fit(1 + rng.below(3), length, 5 * (RECORD_LEN + KEY_LEN + 1) + QUESTION_LEN) if training else 2
    sizes = [2 + rng.below(4) if training else 4 for _ in range(n_chains)]
    names = distinct_keys(rng, sum(sizes))
    numbers = distinct_values(rng, n_chains)
    groups, chains = [], []
    for c, size in enumerate(sizes):
        chain = names[sum(sizes[:c]) : sum(sizes[: c + 1])]
        targets = [numbers[c], *chain[:-1]]
        groups.append([record(name, target) for name, target in zip(chain, targets)])
        chains.append(chain)
    asked = list(range(n_chains)) if training else [rng.below(n_chains)]
    rng.shuffle(asked)
    questions = [(b"#" + numbers[c] + b"=", b",".join(chains[c])) for c in asked]
    return _haystack_item("variable_tracking", rng, length, training, groups, questions, asked[-1])


def _records_item(
    task: str, length: int, training: bool, keys: list[bytes], values: list[bytes], asked: list[int], rng: Rng
) -> Item:
    """A context made of records only (keys[i] = values[i], shuffled), padded at the front with spaces."""
    questions = [_query(keys[i], [values[i]]) for i in asked]
    budget = _context_budget(length, questions, training)
    order = list(range(len(keys)))
    rng.shuffle(order)
    pad = budget - RECORD_LEN * len(keys)
    context = b" " * pad + b"".join(record(keys[i], values[i]) for i in order)
    position = {i: 1 + pad + RECORD_LEN * slot for slot, i in enumerate(order)}
    evidence = [position[asked[-1]]]
    return Item(task, context, tuple(questions), {"evidence": evidence, "depth": [evidence[0] / length]})


def _records_fitting(length: int, n_questions: int, training: bool) -> int:
    outside = 2 + n_questions * (QUESTION_LEN + VALUE_LEN + 1) - (0 if training else VALUE_LEN + 1)
    return (length - outside) // RECORD_LEN


def mqar(rng: Rng, length: int, training: bool) -> Item:
    """Multi-query associative recall: records only, then many `?key=` questions about distinct keys
    (evaluation: 16, the last one scored; training: about a quarter of the tokens)."""
    n_questions = max(1, length // (4 * RECORD_LEN)) if training else 16
    n_records = _records_fitting(length, n_questions, training)
    if n_records < n_questions:
        raise ValueError(f"mqar: length {length} holds {n_records} records, fewer than {n_questions} questions")
    keys = distinct_keys(rng, n_records)
    values = [random_value(rng) for _ in keys]
    asked = rng.sample_indices(n_records, n_questions)
    return _records_item("mqar", length, training, keys, values, asked, rng)


def kv_distract(rng: Rng, length: int, training: bool) -> Item:
    """Records only; every asked key hides among near duplicates (one letter changed) and random keys
    (evaluation: 1 key with 32 near duplicates; training: 1..8 keys with 16 each)."""
    n_asked = 1 + rng.below(8) if training else 1
    while n_asked > 1 and _records_fitting(length, n_asked, training) < 4 * n_asked:
        n_asked -= 1
    n_near = 16 if training else 32
    n_records = _records_fitting(length, n_asked, training)
    if not n_asked <= n_records <= KEY_SPACE:
        raise ValueError(f"kv_distract: length {length} holds {n_records} records")
    targets = distinct_keys(rng, n_asked)
    keys: dict[bytes, None] = dict.fromkeys(targets)
    for t in targets:
        for k in near_keys(rng, t, n_near):
            if len(keys) < n_records:
                keys.setdefault(k)
    while len(keys) < n_records:
        keys.setdefault(distinct_keys(rng, 1)[0])
    key_list = list(keys)
    values = [random_value(rng) for _ in key_list]
    asked = list(range(n_asked))
    rng.shuffle(asked)
    return _records_item("kv_distract", length, training, key_list, values, asked, rng)


FAMILIES: dict[str, Callable[[Rng, int, bool], Item]] = {
    "niah_single": niah_single,
    "niah_multikey": niah_multikey,
    "niah_multivalue": niah_multivalue,
    "variable_tracking": variable_tracking,
    "mqar": mqar,
    "kv_distract": kv_distract,
}


def generate(task: str, seed: int, length: int, *, training: bool = False) -> Item:
    """The item of a task for a given seed; raises ValueError for an unknown task or a too short length."""
    if task not in FAMILIES:
        raise ValueError(f"unknown task '{task}' (known: {', '.join(FAMILIES)})")
    item = FAMILIES[task](Rng(seed), length, training)
    n = len(item.ids()) if training else len(item.prompt_ids())
    assert n == length, f"{task}: built {n} tokens instead of {length}"
    return item
