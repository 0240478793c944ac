"""Shared benchmark harness: timing (medians), copy bandwidth, environment header,
and ratio tables written to benchmarks/results/ (markdown + JSON).

Every benchmark compares, in one run, our op against its peers on the same inputs
and reports medians; nothing here asserts a speed.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import platform
import statistics
import time
from pathlib import Path
from typing import Callable, Sequence

import torch

import mtlkernels

RESULTS = Path(__file__).resolve().parent / "results"
QUICK = False  # set by bench_setup from --quick


def sync(device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def time_fn(fn: Callable[[], object], device, warmup: int = 3, reps: int = 10, max_seconds: float = 20.0) -> float:
    """Median wall time of fn() in seconds (CUDA: CUDA events around each call)."""
    is_cuda = torch.device(device).type == "cuda"
    for _ in range(warmup):
        fn()
    sync(device)
    times = []
    start_all = time.perf_counter()
    for _ in range(reps):
        if is_cuda:
            a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            a.record()
            fn()
            b.record()
            b.synchronize()
            times.append(a.elapsed_time(b) / 1e3)
        else:
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
        if time.perf_counter() - start_all > max_seconds and len(times) >= 3:
            break
    return statistics.median(times)


def copy_bandwidth(device, nbytes: int = 1 << 28) -> float:
    """Measured device-memory copy bandwidth in GB/s (bytes read + bytes written)."""
    n = nbytes // 4
    src = torch.rand(n, device=device)
    dst = torch.empty_like(src)
    t = time_fn(lambda: dst.copy_(src), device, warmup=3, reps=10)
    return 2 * n * 4 / t / 1e9


def device_name(device) -> str:
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{platform.processor() or platform.machine()} CPU, {torch.get_num_threads()} threads"


def device_tag(device) -> str:
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_name(device).replace("NVIDIA", "").strip().split()[0].lower()
    return "cpu"


def environment(device) -> dict:
    return {
        "device": device_name(device),
        "torch": torch.__version__,
        "mtlkernels": mtlkernels.__version__,
        "build": mtlkernels.build_info(),
        "python": platform.python_version(),
        "date": _dt.date.today().isoformat(),
    }


def fmt(v) -> str:
    if isinstance(v, float):
        if v == 0 or 1e-3 <= abs(v) < 1e5:
            return f"{v:.3g}" if abs(v) < 100 else f"{v:.1f}"
        return f"{v:.2e}"
    return str(v)


def write_table(name: str, device, columns: Sequence[str], rows: Sequence[Sequence], command: str, notes: str = "",
                extra: Sequence[tuple] = ()):
    """Print a markdown table with its environment and write it (and JSON) under benchmarks/results/.

    ``extra``: more tables after the first, as (title, columns, rows)."""
    env = environment(device)
    lines = [
        f"# {name} on {env['device']}",
        "",
        f"- command: `{command}`",
        f"- torch {env['torch']}, mtlkernels {env['mtlkernels']}, python {env['python']}, date {env['date']}",
        f"- build: cuda={env['build']['cuda']} archs={env['build']['cuda_archs']} openmp={env['build']['openmp']}",
    ]
    if notes:
        lines += [f"- {notes}"]
    lines += ["", "| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(fmt(v) for v in row) + " |" for row in rows]
    for title, cols, rws in extra:
        lines += ["", f"## {title}", "", "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
        lines += ["| " + " | ".join(fmt(v) for v in row) + " |" for row in rws]
    text = "\n".join(lines) + "\n"
    print(text)
    RESULTS.mkdir(parents=True, exist_ok=True)
    if QUICK and "_quick" not in name:
        name += "_quick"  # smoke-run tables never replace the committed ones (git ignores *_quick_*)
    stem = f"{name}_{device_tag(device)}"
    (RESULTS / f"{stem}.md").write_text(text)
    (RESULTS / f"{stem}.json").write_text(
        json.dumps({"environment": env, "command": command, "columns": list(columns), "rows": [list(r) for r in rows],
                    "extra": [{"title": t, "columns": list(c), "rows": [list(r) for r in rs]} for t, c, rs in extra]},
                   indent=1, default=str)
    )
    return text


def default_device(argv_device: str | None = None) -> str:
    if argv_device:
        return argv_device
    return "cuda" if torch.cuda.is_available() else "cpu"


def bench_parser(doc: str | None) -> argparse.ArgumentParser:
    """The options every benchmark takes: --device (default cuda when available), --threads,
    --quick (small sizes, a smoke run) and --out (the results folder).

    A script may add its own --quick with a more specific help text (it replaces this one).
    """
    p = argparse.ArgumentParser(description=(doc or "").strip().splitlines()[0] if doc else None,
                                conflict_handler="resolve")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    p.add_argument("--threads", type=int, default=None,
                   help="CPU threads (torch.set_num_threads; default: torch's); 1 is steadier on a busy machine")
    p.add_argument("--quick", action="store_true", help="small sizes only (a smoke run)")
    p.add_argument("--out", default=None, help=f"folder for the tables (default: {RESULTS})")
    p.add_argument("--no-compile", action="store_true",
                   help="skip torch.compile peers where a benchmark has one (they take a while to compile)")
    return p


def bench_setup(args) -> str:
    """Apply --threads and --out and return the device to run on."""
    global RESULTS, QUICK
    QUICK = bool(getattr(args, "quick", False))
    if args.threads:
        torch.set_num_threads(args.threads)
    if getattr(args, "out", None):
        RESULTS = Path(args.out).resolve()
    return default_device(args.device)
