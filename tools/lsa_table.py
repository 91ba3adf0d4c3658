#!/usr/bin/env python3
"""Accuracy / CSA-KV-footprint table and plot of `fm-dsv4 --eval` results, per residency mode.

    python3 tools/lsa_table.py eval1.jsonl [eval2.jsonl ...] [--out table.md] [--plot plot.svg] [--json table.json]

Input lines (one per item and mode): {"id", "task", "length", "mode", "generated", "answer", "resident_fraction",
"gpu_kv_bytes", "full_kv_bytes", "decode_tokens_per_s", "pages_recalled", "recall_bytes"}. An item is correct
when tools/tasks' exact_match(generated, answer) says so. Definitions:
  * accuracy of a cell (task, length): correct items / items of that mode in the cell;
  * mean accuracy: the mean of a mode's cell accuracies (every task and length weighs the same);
  * resident CSA KV fraction, GPU CSA KV bytes, decode tokens/s: means over the mode's items;
  * plot: one point per mode and length, x = mean resident fraction of those items, y = mean of the cell
    accuracies at that length.
Rows: full, memory_threshold, memory_densest, recency, random, minmax, oracle, then other modes in order of
appearance. A repeated (id, mode) is an error. Standard library only.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from xml.sax.saxutils import escape

sys.path.insert(0, str(Path(__file__).resolve().parent))

from tasks import FAMILIES, exact_match  # noqa: E402

MODES = {
    "full": "Full",
    "memory_threshold": "LSA (Memory Indexer, threshold)",
    "memory_densest": "LSA (Memory Indexer, densest pages)",
    "recency": "Recency (equal budget)",
    "random": "Random (equal budget)",
    "minmax": "MinMax bounds (equal budget)",
    "oracle": "Oracle",
}
FIELDS = ("id", "task", "length", "mode", "generated", "answer", "resident_fraction", "gpu_kv_bytes",
          "decode_tokens_per_s")
COLORS = ("#000000", "#d55e00", "#e69f00", "#0072b2", "#56b4e9", "#009e73", "#cc79a7", "#777777", "#8c564b")


def read_results(paths: list[Path]) -> list[dict]:
    """Every line of every file, checked for the fields used here and for repeated (id, mode)."""
    rows, seen = [], set()
    for path in paths:
        with open(path) as f:
            for number, line in enumerate(f, 1):
                if not line.strip():
                    continue
                row = json.loads(line)
                missing = [k for k in FIELDS if k not in row]
                if missing:
                    raise ValueError(f"{path}:{number}: missing {', '.join(missing)}")
                if (row["id"], row["mode"]) in seen:
                    raise ValueError(f"{path}:{number}: item '{row['id']}' in mode '{row['mode']}' appears twice")
                seen.add((row["id"], row["mode"]))
                rows.append(row)
    return rows


def mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def aggregate(rows: list[dict]) -> dict:
    """Per mode (table order): cell accuracies, means, and the per-length points of the plot."""
    appearance = list(dict.fromkeys(r["mode"] for r in rows))
    modes = [m for m in MODES if m in appearance] + [m for m in appearance if m not in MODES]
    families = list(FAMILIES)  # known tasks in the generator's order, then others by name
    task_rank = lambda t: (families.index(t) if t in families else len(families), t)
    cells = sorted({(r["task"], r["length"]) for r in rows}, key=lambda c: (task_rank(c[0]), c[1]))
    lengths = sorted({r["length"] for r in rows})
    out = []
    for mode in modes:
        mine = [r for r in rows if r["mode"] == mode]
        by_cell = {}
        for task, length in cells:
            items = [r for r in mine if r["task"] == task and r["length"] == length]
            if items:
                correct = sum(exact_match(r["generated"], r["answer"]) for r in items)
                by_cell[f"{task} {length}"] = {"task": task, "length": length, "n": len(items), "correct": correct,
                                               "accuracy": correct / len(items)}
        points = []
        for length in lengths:
            accs = [c["accuracy"] for c in by_cell.values() if c["length"] == length]
            if accs:
                points.append({"length": length, "accuracy": mean(accs), "resident_fraction":
                               mean([r["resident_fraction"] for r in mine if r["length"] == length])})
        out.append({
            "mode": mode, "name": MODES.get(mode, mode), "n": len(mine), "cells": by_cell,
            "mean_accuracy": mean([c["accuracy"] for c in by_cell.values()]),
            "mean_resident_fraction": mean([r["resident_fraction"] for r in mine]),
            "mean_gpu_kv_bytes": mean([r["gpu_kv_bytes"] for r in mine]),
            "mean_decode_tokens_per_s": mean([r["decode_tokens_per_s"] for r in mine]),
            "points": points,
        })
    return {"columns": [f"{t} {n}" for t, n in cells], "modes": out}


def human_bytes(n: float | None) -> str:
    if n is None:
        return "–"
    if n < 1024:
        return f"{n:.0f} B"
    for unit in ("KiB", "MiB", "GiB"):
        n /= 1024
        if n < 1024 or unit == "GiB":
            return f"{n:.2f} {unit}"


def percent(x: float | None) -> str:
    return "–" if x is None else f"{100 * x:.1f}"


def markdown(table: dict) -> str:
    cols = table["columns"]
    head = ["mode", *cols, "mean", "resident CSA KV (%)", "GPU CSA KV", "decode tok/s"]
    lines = ["## Accuracy (exact match, %) and CSA KV footprint", "", "| " + " | ".join(head) + " |",
             "|" + "---|" + "---:|" * (len(head) - 1)]
    for m in table["modes"]:
        acc = [percent(m["cells"][c]["accuracy"]) if c in m["cells"] else "–" for c in cols]
        tps = m["mean_decode_tokens_per_s"]
        lines.append("| " + " | ".join([m["name"], *acc, percent(m["mean_accuracy"]), percent(m["mean_resident_fraction"]),
                                         human_bytes(m["mean_gpu_kv_bytes"]), "–" if tps is None else f"{tps:.1f}"]) + " |")
    lengths = sorted({p["length"] for m in table["modes"] for p in m["points"]})
    lines += ["", "### Per length (mean over the tasks, %; resident CSA KV, %)", "",
              "| mode | " + " | ".join(f"{n} mean | {n} resident" for n in lengths) + " |",
              "|---|" + "---:|" * (2 * len(lengths))]
    for m in table["modes"]:
        at = {p["length"]: p for p in m["points"]}
        values = [percent(at[n][key]) if n in at else "–" for n in lengths for key in ("accuracy", "resident_fraction")]
        lines.append("| " + " | ".join([m["name"], *values]) + " |")
    lines += ["", "### Items per cell", "", "| " + " | ".join(["mode", *cols]) + " |", "|---|" + "---:|" * len(cols)]
    for m in table["modes"]:
        lines.append("| " + " | ".join([m["name"], *(str(m["cells"][c]["n"]) if c in m["cells"] else "0" for c in cols)]) + " |")
    return "\n".join(lines) + "\n"


def short_length(n: int) -> str:
    return f"{n // 1024}K" if n >= 1024 and n % 1024 == 0 else str(n)


def svg(table: dict) -> str:
    """Mean accuracy against resident CSA KV fraction, both 0–100 %, one colour per mode, points labelled by length."""
    W, H, left, top, plot_w, plot_h = 860, 440, 60, 40, 480, 340
    x = lambda f: left + plot_w * f
    y = lambda a: top + plot_h * (1 - a)
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="sans-serif" font-size="12">',
             f'<rect width="{W}" height="{H}" fill="white"/>',
             f'<text x="{left + plot_w / 2}" y="22" text-anchor="middle" font-size="14">Accuracy vs resident CSA KV</text>']
    for k in range(11):
        f = k / 10
        parts.append(f'<line x1="{x(f)}" y1="{top}" x2="{x(f)}" y2="{top + plot_h}" stroke="#e5e5e5"/>')
        parts.append(f'<line x1="{left}" y1="{y(f)}" x2="{left + plot_w}" y2="{y(f)}" stroke="#e5e5e5"/>')
        parts.append(f'<text x="{x(f)}" y="{top + plot_h + 16}" text-anchor="middle">{k * 10}</text>')
        parts.append(f'<text x="{left - 6}" y="{y(f) + 4}" text-anchor="end">{k * 10}</text>')
    parts += [f'<rect x="{left}" y="{top}" width="{plot_w}" height="{plot_h}" fill="none" stroke="black"/>',
              f'<text x="{left + plot_w / 2}" y="{top + plot_h + 34}" text-anchor="middle">resident CSA KV (% of the history)</text>',
              f'<text transform="translate(16 {top + plot_h / 2}) rotate(-90)" text-anchor="middle">mean accuracy (%)</text>']
    unknown = [m["mode"] for m in table["modes"] if m["mode"] not in MODES]
    for i, m in enumerate(table["modes"]):
        # A mode keeps its colour whichever other modes are present.
        k = list(MODES).index(m["mode"]) if m["mode"] in MODES else len(MODES) + unknown.index(m["mode"])
        color = COLORS[k % len(COLORS)]
        labels: dict[tuple[float, float], list[str]] = {}  # lengths that land on the same spot share one label
        for p in m["points"]:
            spot = (round(x(min(max(p["resident_fraction"], 0.0), 1.0)), 1), round(y(p["accuracy"]), 1))
            labels.setdefault(spot, []).append(short_length(p["length"]))
        for (px, py), names in labels.items():
            parts.append(f'<circle cx="{px}" cy="{py}" r="4" fill="{color}"/>')
            parts.append(f'<text x="{px + 6:.1f}" y="{py - 5:.1f}" font-size="10" fill="{color}">{", ".join(names)}</text>')
        ly = top + 10 + 20 * i
        parts.append(f'<circle cx="{left + plot_w + 24}" cy="{ly}" r="4" fill="{color}"/>')
        parts.append(f'<text x="{left + plot_w + 34}" y="{ly + 4}">{escape(m["name"])}</text>')
    return "\n".join(parts + ["</svg>"]) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("results", type=Path, nargs="+", help="JSONL files of fm-dsv4 --eval")
    ap.add_argument("--out", type=Path, help="write the markdown tables here")
    ap.add_argument("--plot", type=Path, help="write the SVG plot here")
    ap.add_argument("--json", type=Path, help="write the aggregated numbers here")
    args = ap.parse_args(argv)
    table = aggregate(read_results(args.results))
    text = markdown(table)
    print(text, end="")
    if args.out:
        args.out.write_text(text)
    if args.plot:
        args.plot.write_text(svg(table))
    if args.json:
        args.json.write_text(json.dumps(table, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
