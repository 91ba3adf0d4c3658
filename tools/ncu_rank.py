#!/usr/bin/env python3
"""Ranks the kernels of one profiled decode step (tools/gpu_carried.sh profile: ncu --csv with the metric
gpu__time_duration.sum) by their total time: name, launches, µs per launch, µs in all, share of the step.
Usage: tools/ncu_rank.py ncu-step-b1.csv [more.csv ...]"""
import collections
import csv
import io
import re
import sys

for path in sys.argv[1:]:
    text = open(path).read()
    rows = list(csv.DictReader(io.StringIO(text[text.index('"ID"'):])))
    total = collections.defaultdict(float)
    launches = collections.Counter()
    for r in rows:
        if r["Metric Name"] != "gpu__time_duration.sum":
            continue
        scale = {"ns": 1e-3, "us": 1.0, "usecond": 1.0, "nsecond": 1e-3, "msecond": 1e3, "ms": 1e3}[r["Metric Unit"]]
        name = re.sub(r"\(.*", "", r["Kernel Name"]).replace("void ", "")
        name = re.sub(r"^.*::", "", name)
        total[name] += float(r["Metric Value"].replace(",", "")) * scale
        launches[name] += 1
    step = sum(total.values())
    print(f"{path}: {sum(launches.values())} kernels, {step:.0f} us of kernel time (each kernel alone, as ncu runs them)")
    print(f"{'kernel':32} {'launches':>8} {'us/launch':>10} {'us':>9} {'share':>6}")
    for name, us in sorted(total.items(), key=lambda kv: -kv[1]):
        print(f"{name:32} {launches[name]:8d} {us / launches[name]:10.1f} {us:9.1f} {100 * us / step:5.1f}%")
