#!/usr/bin/env python3
"""Tests of the synthetic task generator and scorer (tools/tasks, tools/make_tasks.py). Standard library only.

Every generated item is checked against an independent solver that reads the prompt bytes back: the records
`|key=value;` of the context and the question `?key=` / `#value=` determine the answer.
"""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import sys
import tempfile
import unittest
from pathlib import Path

TOOLS = Path(__file__).resolve().parents[2] / "tools"
sys.path.insert(0, str(TOOLS))

from tasks import (  # noqa: E402
    BOS, EOS, FAMILIES, SEP, VOCAB_SIZE, exact_match, generate, item_seed, read_items, read_manifest, score,
    write_tasks,
)

RECORD = re.compile(rb"\|([a-z]+)=([a-z0-9]+);")


def solve(question: bytes, context: bytes) -> bytes:
    """The answer to `?key=` (every value of key, in order) or `#value=` (every variable whose chain of
    assignments ends at value, in order of assignment), from the records of the context alone."""
    records = RECORD.findall(context)
    if question.startswith(b"?"):
        key = question[1:-1]
        return b",".join(v for k, v in records if k == key)
    assert question.startswith(b"#"), question
    reaches = {question[1:-1]}
    names = []
    for k, v in records:
        if v in reaches:
            reaches.add(k)
            names.append(k)
    return b",".join(names)


def split_prompt(prompt: list[int]) -> tuple[bytes, list[tuple[bytes, bytes]], bytes]:
    """Context, answered (question, answer) pairs and the final question of a prompt."""
    assert prompt[0] == BOS and prompt.count(SEP) == 1
    sep = prompt.index(SEP)
    context = bytes(prompt[1:sep])
    section = prompt[sep + 1 :]
    *answered, last = [bytes(part) for part in _split(section, EOS)]
    pairs = [(qa[: qa.index(b"=") + 1], qa[qa.index(b"=") + 1 :]) for qa in answered]
    return context, pairs, last


def _split(ids: list[int], sep: int) -> list[list[int]]:
    out, cur = [], []
    for x in ids:
        if x == sep:
            out.append(cur)
            cur = []
        else:
            cur.append(x)
    return out + [cur]


class GeneratorTest(unittest.TestCase):
    LENGTHS = (512, 1024, 3000)

    def test_evaluation_items_answer_what_the_context_says(self):
        for task in FAMILIES:
            for length in self.LENGTHS:
                for index in range(8):
                    item = generate(task, item_seed(3, task, length, index), length)
                    prompt, answer = item.prompt_ids(), item.answer_ids()
                    with self.subTest(task=task, length=length, index=index):
                        self.assertEqual(len(prompt), length)
                        self.assertTrue(all(0 <= x < VOCAB_SIZE for x in prompt + answer))
                        self.assertEqual(answer[-1], EOS)
                        self.assertNotIn(EOS, answer[:-1])
                        context, answered, question = split_prompt(prompt)
                        self.assertEqual(bytes(answer[:-1]), solve(question, context))
                        self.assertTrue(len(answer) > 1)
                        for q, a in answered:
                            self.assertEqual(a, solve(q, context))
                        # The filler holds no record syntax: every `|` opens a record.
                        self.assertEqual(context.count(b"|"), len(RECORD.findall(context)))
                        for pos in item.meta["evidence"]:
                            self.assertEqual(prompt[pos], ord("|"))

    def test_training_items_fill_the_length_and_mark_every_answer(self):
        for task in FAMILIES:
            for length in (128, 256, 2048):
                for index in range(6):
                    item = generate(task, 1000 + index, length, training=True)
                    ids = item.ids()
                    with self.subTest(task=task, length=length, index=index):
                        self.assertEqual(len(ids), length)
                        context, answered, _ = split_prompt(ids[:-1])
                        spans = item.answer_spans()
                        self.assertEqual(len(spans), len(item.questions))
                        for (start, end), (q, a) in zip(spans, item.questions):
                            self.assertEqual(bytes(ids[start : end - 1]), a)
                            self.assertEqual(ids[end - 1], EOS)
                            self.assertEqual(a, solve(q, context))

    def test_the_seed_decides_everything(self):
        for task in FAMILIES:
            a = generate(task, 42, 1024)
            b = generate(task, 42, 1024)
            c = generate(task, 43, 1024)
            self.assertEqual(a.prompt_ids(), b.prompt_ids())
            self.assertEqual(a.answer_ids(), b.answer_ids())
            self.assertNotEqual(a.prompt_ids(), c.prompt_ids())

    def test_items_are_those_of_the_recorded_version(self):
        # Pins the generator: task files written earlier (and their C++ scores) stay reproducible. A change
        # here is a format change: update the digest and say so in docs/training.md.
        h = hashlib.sha256()
        for task in sorted(FAMILIES):
            for length in (512, 2048):
                for index in range(3):
                    item = generate(task, item_seed(7, task, length, index), length)
                    h.update(json.dumps([item.prompt_ids(), item.answer_ids()]).encode())
            h.update(json.dumps(generate(task, 11, 1024, training=True).ids()).encode())
        self.assertEqual(h.hexdigest(), "6b4851424c9c373f07825ece45845ac5b0ced8f11399c64c3aa698a54be98975")

    def test_bad_requests_are_refused(self):
        with self.assertRaises(ValueError):
            generate("no_such_task", 1, 512)
        for task in FAMILIES:
            with self.assertRaises(ValueError):
                generate(task, 1, 12)


class ScorerTest(unittest.TestCase):
    def test_exact_match(self):
        answer = [49, 50, 51, EOS]
        self.assertTrue(exact_match([49, 50, 51, EOS], answer))
        self.assertTrue(exact_match([49, 50, 51, EOS, 7, 7], answer))  # what follows EOS is ignored
        self.assertFalse(exact_match([49, 50, 52, EOS], answer))
        self.assertFalse(exact_match([49, 50, 51, 52], answer))  # no EOS: the answer went on
        self.assertFalse(exact_match([49, 50, 51], answer))
        self.assertFalse(exact_match([], answer))


class FilesTest(unittest.TestCase):
    def test_files_manifest_and_scores(self):
        with tempfile.TemporaryDirectory() as tmp:
            root = Path(tmp) / "tasks"
            subprocess.run([sys.executable, str(TOOLS / "make_tasks.py"), "generate", "--out", str(root),
                            "--lengths", "512,1024", "--items", "5,variable_tracking=2", "--tasks",
                            "mqar,variable_tracking"], check=True, capture_output=True)
            manifest = read_manifest(root)
            self.assertEqual(manifest["vocab_size"], VOCAB_SIZE)
            self.assertEqual([(f["task"], f["items"]) for f in manifest["files"]],
                             [("mqar", 5), ("mqar", 5), ("variable_tracking", 2), ("variable_tracking", 2)])
            predictions = []
            for entry in manifest["files"]:
                items = list(read_items(root / entry["path"]))
                self.assertEqual(len(items), entry["items"])
                for i, item in enumerate(items):
                    self.assertEqual(len(item["prompt"]), entry["length"])
                    self.assertEqual(set(item), {"id", "task", "length", "prompt", "answer", "meta"})
                    regenerated = generate(entry["task"], item_seed(manifest["seed"], entry["task"],
                                                                    entry["length"], i), entry["length"])
                    self.assertEqual(item["prompt"], regenerated.prompt_ids())
                    self.assertEqual(item["answer"], regenerated.answer_ids())
                    if entry["task"] == "mqar" and i < 3:  # 3 of 5 right
                        predictions.append({"id": item["id"], "generated": item["answer"] + [7]})
                    elif entry["task"] == "variable_tracking":  # all wrong in the last byte
                        predictions.append({"id": item["id"], "generated": item["answer"][:-2] + [0, EOS]})
            rows = {(r["task"], r["length"]): r for r in score(root, predictions)}
            self.assertEqual(rows[("mqar", 512)]["correct"], 3)
            self.assertAlmostEqual(rows[("mqar", 1024)]["accuracy"], 0.6)
            self.assertEqual(rows[("variable_tracking", 512)]["correct"], 0)

            pred_file = Path(tmp) / "pred.jsonl"
            pred_file.write_text("".join(json.dumps(p) + "\n" for p in predictions))
            out = subprocess.run([sys.executable, str(TOOLS / "make_tasks.py"), "score", "--tasks", str(root),
                                  "--predictions", str(pred_file)], check=True, capture_output=True, text=True)
            self.assertIn("0.600", out.stdout)

            with self.assertRaises(ValueError):
                score(root, [{"id": "mqar/512/99", "generated": []}])

            bad = subprocess.run([sys.executable, str(TOOLS / "make_tasks.py"), "generate", "--out", str(root),
                                  "--items", "5,mqr=3"], capture_output=True, text=True)
            self.assertNotEqual(bad.returncode, 0)
            self.assertIn("unknown task 'mqr'", bad.stderr)


if __name__ == "__main__":
    unittest.main()
