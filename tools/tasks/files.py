"""Task files (one JSONL per task and length, plus manifest.json) and the exact-match scorer.

docs/training.md specifies the format; the C++ evaluator reads the same files.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path

from .families import generate
from .items import SPECIALS, VOCAB_SIZE
from .rng import derive_seed

FORMAT = "flashmemory-tasks-v1"


def item_seed(seed: int, task: str, length: int, index: int) -> int:
    return derive_seed(seed, task, length, index)


def write_tasks(out: Path, *, split: str, seed: int, tasks: Sequence[str], lengths: Sequence[int],
                items: int | Mapping[str, int]) -> dict:
    """Generates every (task, length) file under `out` (`items` per file, or per task) and writes
    out/manifest.json; returns the manifest. Item k of a file is the same whatever the count."""
    files = []
    for task in tasks:
        for length in lengths:
            rel = Path(task) / f"{length}.jsonl"
            (out / task).mkdir(parents=True, exist_ok=True)
            with open(out / rel, "w") as f:
                for index in range(items[task] if isinstance(items, Mapping) else items):
                    item = generate(task, item_seed(seed, task, length, index), length)
                    line = {
                        "id": f"{task}/{length}/{index}",
                        "task": task,
                        "length": length,
                        "prompt": item.prompt_ids(),
                        "answer": item.answer_ids(),
                        "meta": item.meta,
                    }
                    f.write(json.dumps(line, separators=(",", ":")) + "\n")
            files.append({"task": task, "length": length, "path": rel.as_posix(),
                          "items": items[task] if isinstance(items, Mapping) else items})
    manifest = {
        "format": FORMAT,
        "vocab_size": VOCAB_SIZE,
        "specials": SPECIALS,
        "split": split,
        "seed": seed,
        "files": files,
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
    return manifest


def read_manifest(root: Path) -> dict:
    manifest = json.loads((root / "manifest.json").read_text())
    if manifest.get("format") != FORMAT:
        raise ValueError(f"{root / 'manifest.json'}: format '{manifest.get('format')}', expected '{FORMAT}'")
    return manifest


def read_items(path: Path) -> Iterator[dict]:
    with open(path) as f:
        for line in f:
            if line.strip():
                yield json.loads(line)


def exact_match(generated: Sequence[int], answer: Sequence[int]) -> bool:
    """Correct iff the first len(answer) generated tokens are the answer (whose last token is EOS)."""
    return list(generated[: len(answer)]) == list(answer)


def score(root: Path, predictions: Iterable[dict]) -> list[dict]:
    """Accuracy per (task, length) of predictions {"id", "generated"} against the task files under root.

    Items without a prediction count as wrong; predictions for unknown ids are an error.
    """
    generated = {p["id"]: p["generated"] for p in predictions}
    rows, seen = [], set()
    for entry in read_manifest(root)["files"]:
        correct = total = 0
        for item in read_items(root / entry["path"]):
            seen.add(item["id"])
            total += 1
            correct += exact_match(generated.get(item["id"], []), item["answer"])
        rows.append({"task": entry["task"], "length": entry["length"], "items": total, "correct": correct,
                     "accuracy": correct / total if total else 0.0})
    unknown = sorted(set(generated) - seen)
    if unknown:
        raise ValueError(f"{len(unknown)} predictions name no item under {root}, e.g. '{unknown[0]}'")
    return rows
