"""The main job (`make demo`): the five papers' methods and their baselines at small
scale on bundled offline data, one results table, JSON and PNG plots in a folder.

Quick settings (one seed or split, small grids, few epochs) keep it to a few minutes on
2 CPU cores; ``--full`` runs the settings of the committed benchmark tables
(``benchmarks/methods_linear.py``, ``benchmarks/methods_deep.py``).
"""

from __future__ import annotations

import time
from pathlib import Path

import torch

from .experiments.registry import EXPERIMENTS, get
from .train._base import write_json


def format_table(result: dict) -> str:
    cols = result["columns"]
    rows = [[str(v) for v in r] for r in result["rows"]]
    widths = [max(len(c), *(len(r[i]) for r in rows)) if rows else len(c) for i, c in enumerate(cols)]
    line = lambda vals: "  ".join(v.ljust(w) for v, w in zip(vals, widths))  # noqa: E731
    out = [result["title"], line(cols), line(["-" * w for w in widths])]
    out += [line(r) for r in rows]
    if result.get("notes"):
        out.append(f"note: {result['notes']}")
    return "\n".join(out)


def main(out: str = "mtlkernels-results", full: bool = False, methods: list[str] | None = None, seed: int = 0,
         threads: int = 1) -> dict:
    # The demo's problems are tiny: one intra-op thread is faster than several (measured
    # 4-30x on the 2-core CI machine when it is busy) and makes runs reproducible.
    torch.set_num_threads(threads)
    out_dir = Path(out).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    names = methods or list(EXPERIMENTS)
    print(f"mtlkernels demo: {len(names)} experiments ({'full' if full else 'quick'} settings); "
          f"results go to {out_dir}\n", flush=True)
    results, timings = {}, {}
    for name in names:
        fn = get(name)
        t0 = time.perf_counter()
        print(f"== {name}: {EXPERIMENTS[name][2]}", flush=True)
        seeds = None if full else (seed,)
        res = fn(quick=not full, out_dir=out_dir, log=lambda *a: print(*a, flush=True), **({} if seeds is None else {"seeds": seeds}))
        timings[name] = time.perf_counter() - t0
        results[name] = res
        print(f"   ({timings[name]:.0f} s)\n", flush=True)
    print("=" * 100)
    print("RESULTS\n")
    for name, res in results.items():
        print(format_table(res))
        print()
    plots = [p for r in results.values() for p in r.get("plots", [])]
    write_json(out_dir / "results.json", {"results": results, "seconds": timings})
    print(f"JSON: {out_dir / 'results.json'}")
    if plots:
        print("plots:\n  " + "\n  ".join(str(p) for p in plots))
    print(f"total {sum(timings.values()):.0f} s")
    return results
