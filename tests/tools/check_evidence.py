"""Checks `fm-dsv4 --dump` against the schema of docs/training.md (§8) and `fm-dsv4 --eval` against its
JSONL format (docs/results.md). Standard library only.

    python3 tests/tools/check_evidence.py FM_DSV4 CHECKPOINT WORKDIR [INDEXER]

Generates two task documents per family (tools/make_tasks.py) in WORKDIR (emptied first), dumps them, and
asserts for every file: the schema name and metadata; tensor names, dtypes and shapes; samples at the prompt's
last token and every answer token but the last; chunk counts that grow by the compress rate; labels only among the candidates
of each sample, present for every sample whose window holds a token; index keys and hidden states finite and
not all zero; the hidden states of one sample differing between CSA layers. Then evaluates the same items with
every mode (memory_* only with INDEXER) and asserts one line per item and mode, full attention at 100% resident,
the equal-budget modes within their budget, and answers of the expected length.
"""

from __future__ import annotations

import json
import math
import shutil
import struct
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DTYPES = {"F32": ("f", 4), "I64": ("q", 8), "U8": ("B", 1)}


def read_safetensors(path: Path) -> tuple[dict, dict]:
    data = path.read_bytes()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + n])
    meta = header.pop("__metadata__", {})
    tensors = {}
    for name, info in header.items():
        fmt, size = DTYPES[info["dtype"]]
        begin, end = info["data_offsets"]
        raw = data[8 + n + begin : 8 + n + end]
        count = (end - begin) // size
        tensors[name] = (info["dtype"], info["shape"], struct.unpack(f"<{count}{fmt}", raw))
    return meta, tensors


def rows(values, width):
    return [values[i : i + width] for i in range(0, len(values), width)]


def main() -> int:
    fm, checkpoint, work = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
    config = json.loads((checkpoint / "config.json").read_text())
    D, d = config["hidden_size"], config["index_head_dim"]
    rate = config["compress_rates"]["compressed_sparse_attention"]
    csa = [i for i, t in enumerate(config["layer_types"]) if t == "compressed_sparse_attention"]
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    tasks, dumps = work / "tasks", work / "dumps"
    subprocess.run([sys.executable, str(ROOT / "tools/make_tasks.py"), "generate", "--out", str(tasks), "--seed", "5",
                    "--lengths", "384", "--items", "2"], check=True, capture_output=True)
    run = subprocess.run([fm, str(checkpoint), "--dump", str(dumps), "--tasks", str(tasks), "--tau", "16"],
                         check=True, capture_output=True, text=True)
    print(run.stdout.strip())
    manifest = json.loads((dumps / "manifest.json").read_text())
    assert manifest["schema"] == "flashmemory.dump.v2" and manifest["tau"] == 16
    assert len(manifest["files"]) == 12, manifest["files"]
    items = {}
    for line in (tasks / "mqar/384.jsonl").read_text().splitlines() + (tasks / "niah_single/384.jsonl").read_text().splitlines():
        item = json.loads(line)
        items[item["id"]] = item
    for entry in manifest["files"]:
        meta, t = read_safetensors(dumps / entry["path"])
        assert meta["schema"] == "flashmemory.dump.v2" and meta["id"] == entry["id"]
        assert meta["target_layers"] == ",".join(str(i) for i in range(len(csa)))
        assert int(meta["hidden_size"]) == D and int(meta["index_head_dim"]) == d and int(meta["tau"]) == 16
        assert float(meta["nucleus_p"]) == 0.6 and int(meta["votes"]) == 2
        S, N = entry["samples"], entry["chunks"]
        prompt = int(meta["prompt_tokens"])
        length = int(meta["length"])
        assert prompt == length
        total = length + (len(items[entry["id"]]["answer"]) if entry["id"] in items else 0)
        positions, chunks = t["positions"][2], t["num_chunks"][2]
        assert t["positions"][:2] == ("I64", [S]) and t["labels"][:2] == ("U8", [S, N])
        assert list(positions) == list(range(prompt - 1, prompt - 1 + S)), (entry["id"], positions[:3], prompt)
        if entry["id"] in items:
            assert positions[-1] == total - 2  # every token but the last has a window after it
            assert N == total // rate
        assert all(c == (p + 1) // rate for p, c in zip(positions, chunks)), entry["id"]
        labels = rows(t["labels"][2], N)
        for s in range(S):
            assert not any(labels[s][chunks[s] :]), f"{entry['id']}: labels past the candidates of sample {s}"
        assert sum(1 for r in labels if any(r)) >= S - 1, entry["id"]  # a window after every sample holds a token
        # Each CSA layer's own nucleus labels; a chunk golden with θ = 2 votes is in at least two of them.
        per_layer = []
        for layer in range(len(csa)):
            assert t[f"labels.l{layer}"][:2] == ("U8", [S, N])
            per_layer.append(rows(t[f"labels.l{layer}"][2], N))
            assert not any(any(r[c:]) for r, c in zip(per_layer[-1], chunks)), f"{entry['id']}: layer {layer} past the candidates"
        assert all(sum(p[s][c] for p in per_layer) >= 2 for s in range(S) for c in range(N) if labels[s][c]), entry["id"]
        assert all(any(map(any, p)) for p in per_layer), f"{entry['id']}: a layer without labels"
        for layer in range(len(csa)):
            dtype, shape, keys = t[f"keys.l{layer}"]
            assert dtype == "F32" and shape == [N, d] and all(map(math.isfinite, keys)) and any(keys)
            dtype, shape, hidden = t[f"hidden.l{layer}"]
            assert dtype == "F32" and shape == [S, D] and all(map(math.isfinite, hidden)) and any(hidden)
        assert t["hidden.l0"][2][:D] != t["hidden.l1"][2][:D]
    print(f"checked {len(manifest['files'])} dump files")
    check_eval(fm, checkpoint, tasks, work, Path(sys.argv[4]) if len(sys.argv) > 4 else None)
    return 0


def check_eval(fm: str, checkpoint: Path, tasks: Path, work: Path, indexer: Path | None) -> None:
    modes = ["full", "recency", "random", "minmax", "oracle"] + (["memory_threshold", "memory_densest"] if indexer else [])
    out = work / "eval.jsonl"
    args = [fm, str(checkpoint), "--eval", str(tasks), "--out", str(out), "--items", "1", "--modes", ",".join(modes),
            "--budget", "0.25", "--page", "4"]
    run = subprocess.run(args + (["--indexer", str(indexer)] if indexer else []), check=True, capture_output=True, text=True)
    print(run.stdout.strip())
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(lines) == 6 * len(modes), len(lines)
    for line in lines:
        assert set(line) >= {"id", "task", "length", "mode", "generated", "answer", "resident_fraction", "gpu_kv_bytes",
                             "full_kv_bytes", "decode_tokens_per_s", "pages_recalled", "recall_bytes"}, line.keys()
        assert 1 <= len(line["generated"]) <= len(line["answer"])
        assert 0 < line["gpu_kv_bytes"] <= line["full_kv_bytes"]
        if line["mode"] == "full":
            assert line["resident_fraction"] == 1.0 and line["pages_recalled"] == 0
        elif line["mode"] in ("recency", "random", "minmax", "memory_densest"):
            pages = line["history_pages"]
            assert line["resident_pages"] <= max(2, math.ceil(0.25 * pages)), line  # the budget, tail included
            assert line["pages_recalled"] == line["resident_pages"] > 0
    print(f"checked {len(lines)} eval lines")


if __name__ == "__main__":
    sys.exit(main())
