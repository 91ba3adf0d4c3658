#!/usr/bin/env python3
"""Tests of the accuracy / footprint table (tools/lsa_table.py) on synthetic `fm-dsv4 --eval` results.
Standard library only."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import unittest
import xml.etree.ElementTree as ET
from pathlib import Path

sys.dont_write_bytecode = True
TOOLS = Path(__file__).resolve().parents[2] / "tools"
sys.path.insert(0, str(TOOLS))

import lsa_table  # noqa: E402
from tasks import EOS  # noqa: E402

TASKS, LENGTHS, ITEMS = ("mqar", "niah_single"), (1024, 2048), 4
# Correct items out of ITEMS per (task, length), per mode; modes listed in the order they appear in the files.
CORRECT = {
    "oracle": {("mqar", 1024): 1, ("mqar", 2048): 1, ("niah_single", 1024): 1, ("niah_single", 2048): 1},
    "sticky&wide": {("mqar", 1024): 2},
    "recency": {("mqar", 1024): 0, ("mqar", 2048): 0, ("niah_single", 1024): 0, ("niah_single", 2048): 0},
    "full": {("mqar", 1024): 4, ("mqar", 2048): 4, ("niah_single", 1024): 4, ("niah_single", 2048): 4},
    "memory_threshold": {("mqar", 1024): 4, ("mqar", 2048): 1, ("niah_single", 1024): 3, ("niah_single", 2048): 2},
}
ORDER = ["full", "memory_threshold", "recency", "oracle", "sticky&wide"]


def fraction(mode: str, length: int) -> float:
    return 1.0 if mode == "full" else {1024: 0.1, 2048: 0.2}[length]


def results() -> list[dict]:
    rows = []
    for mode, cells in CORRECT.items():
        for (task, length), correct in cells.items():
            for i in range(ITEMS):
                answer = [97 + i % 3, 98, EOS]
                if i < correct:  # right, with trailing tokens for odd items (only the answer's length counts)
                    generated = answer + [120, 121] if i % 2 else answer
                else:  # wrong: a strict prefix, or a wrong last token
                    generated = answer[:2] if i % 2 else answer[:2] + [99]
                rows.append({"id": f"{task}/{length}/{i}", "task": task, "length": length, "mode": mode,
                             "generated": generated, "answer": answer, "resident_fraction": fraction(mode, length),
                             "gpu_kv_bytes": int(fraction(mode, length) * 2**22), "full_kv_bytes": 2**22,
                             "decode_tokens_per_s": 100.0 + i, "pages_recalled": i, "recall_bytes": 1000 * i})
    return rows


class AggregateTest(unittest.TestCase):
    def setUp(self):
        self.table = lsa_table.aggregate(results())
        self.modes = {m["mode"]: m for m in self.table["modes"]}

    def test_rows_and_columns_in_order(self):
        self.assertEqual([m["mode"] for m in self.table["modes"]], ORDER)
        self.assertEqual(self.table["columns"], ["niah_single 1024", "niah_single 2048", "mqar 1024", "mqar 2048"])
        self.assertEqual(self.modes["memory_threshold"]["name"], "LSA (Memory Indexer, threshold)")
        self.assertEqual(self.modes["sticky&wide"]["name"], "sticky&wide")

    def test_cell_accuracies_use_exact_match(self):
        for mode, cells in CORRECT.items():
            got = self.modes[mode]["cells"]
            self.assertEqual(set(got), {f"{t} {n}" for t, n in cells})
            for (task, length), correct in cells.items():
                cell = got[f"{task} {length}"]
                self.assertEqual((cell["n"], cell["correct"]), (ITEMS, correct), (mode, task, length))
                self.assertAlmostEqual(cell["accuracy"], correct / ITEMS)

    def test_means(self):
        m = self.modes["memory_threshold"]
        self.assertAlmostEqual(m["mean_accuracy"], (4 + 1 + 3 + 2) / 16)
        self.assertAlmostEqual(m["mean_resident_fraction"], 0.15)
        self.assertAlmostEqual(m["mean_gpu_kv_bytes"], 0.15 * 2**22, delta=1)
        self.assertAlmostEqual(m["mean_decode_tokens_per_s"], 101.5)
        self.assertEqual(self.modes["full"]["mean_accuracy"], 1.0)
        self.assertEqual(self.modes["recency"]["mean_accuracy"], 0.0)
        self.assertAlmostEqual(self.modes["sticky&wide"]["mean_accuracy"], 0.5)

    def test_plot_points_per_length(self):
        points = self.modes["memory_threshold"]["points"]
        self.assertEqual([p["length"] for p in points], [1024, 2048])
        self.assertAlmostEqual(points[0]["accuracy"], (4 + 3) / 8)
        self.assertAlmostEqual(points[1]["accuracy"], (1 + 2) / 8)
        self.assertAlmostEqual(points[1]["resident_fraction"], 0.2)
        self.assertEqual(len(self.modes["sticky&wide"]["points"]), 1)

    def test_human_bytes(self):
        self.assertEqual(lsa_table.human_bytes(512), "512 B")
        self.assertEqual(lsa_table.human_bytes(1536), "1.50 KiB")
        self.assertEqual(lsa_table.human_bytes(3 * 2**20), "3.00 MiB")
        self.assertEqual(lsa_table.human_bytes(5 * 2**30), "5.00 GiB")


class OutputTest(unittest.TestCase):
    def setUp(self):
        self.table = lsa_table.aggregate(results())

    def test_markdown_rows(self):
        text = lsa_table.markdown(self.table)
        rows = [line for line in text.splitlines() if line.startswith("| ") and not line.startswith("| mode")]
        names = [lsa_table.MODES.get(m, m) for m in ORDER]
        # The accuracy table, the per-length means, then the items per cell.
        self.assertEqual([r.split(" | ")[0][2:] for r in rows], names * 3)
        self.assertEqual(rows[1], "| LSA (Memory Indexer, threshold) | 75.0 | 50.0 | 100.0 | 25.0 | 62.5 | 15.0 "
                                  "| 614.40 KiB | 101.5 |")
        self.assertEqual(rows[4], "| sticky&wide | – | – | 50.0 | – | 50.0 | 10.0 | 409.60 KiB | 101.5 |")
        self.assertEqual(rows[6], "| LSA (Memory Indexer, threshold) | 87.5 | 10.0 | 37.5 | 20.0 |")
        self.assertEqual(rows[9], "| sticky&wide | 50.0 | 10.0 | – | – |")
        self.assertEqual(rows[-1], "| sticky&wide | 0 | 0 | 4 | 0 |")

    def test_svg_is_well_formed(self):
        root = ET.fromstring(lsa_table.svg(self.table))
        ns = "{http://www.w3.org/2000/svg}"
        self.assertEqual(root.tag, ns + "svg")
        points = sum(len(m["points"]) for m in self.table["modes"])
        # Full's two lengths land on one spot (100 %, 100 %) and share a mark; one legend mark per mode.
        self.assertEqual(len(root.findall(ns + "circle")), points - 1 + len(ORDER))
        texts = [t.text for t in root.iter(ns + "text")]
        for m in ORDER:
            self.assertIn(lsa_table.MODES.get(m, m), texts)
        self.assertEqual(texts.count("1K, 2K"), 1)
        self.assertEqual(texts.count("2K"), 3)


class CliTest(unittest.TestCase):
    def run_cli(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, str(TOOLS / "lsa_table.py"), *args], capture_output=True, text=True,
                              env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"})

    def test_files_from_several_inputs(self):
        rows = results()
        parts = rows[::2], rows[1::2]
        with tempfile.TemporaryDirectory() as tmp:
            d = Path(tmp)
            for name, part in zip(("a.jsonl", "b.jsonl"), parts):
                (d / name).write_text("".join(json.dumps(r) + "\n" for r in part))
            run = self.run_cli(str(d / "a.jsonl"), str(d / "b.jsonl"), "--out", str(d / "t.md"), "--plot",
                               str(d / "p.svg"), "--json", str(d / "t.json"))
            self.assertEqual(run.returncode, 0, run.stderr)
            self.assertEqual((d / "t.md").read_text(), run.stdout)
            self.assertEqual(json.loads((d / "t.json").read_text()), lsa_table.aggregate(parts[0] + parts[1]))
            ET.parse(d / "p.svg")

    def test_repeated_item_is_an_error(self):
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "r.jsonl"
            row = json.dumps(results()[0]) + "\n"
            path.write_text(row + row)
            run = self.run_cli(str(path))
            self.assertNotEqual(run.returncode, 0)
            self.assertIn("appears twice", run.stderr)


if __name__ == "__main__":
    unittest.main()
