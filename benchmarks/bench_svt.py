"""Benchmark: mtlkernels.ops.svt against the torch composites, float32.

Peers, in the same run and on the same inputs:
- svd:      the torch.linalg.svd composite U diag(max(s - tau, 0)) V^T (default driver),
- gesvda:   the same with driver="gesvda" (CUDA only),
- gram+eigh: G = x^T x, torch.linalg.eigh(G), x V diag(max(1 - tau / s, 0)) V^T,
- compile:  torch.compile of the svd composite (where it compiles).
Ratios are peer time / our time (above 1: we are faster). Errors are relative
Frobenius errors against the float64 svd composite on the same (float32) input.
tau is the median singular value of the batch (about half the spectrum is zeroed);
the rows with tau = 1e-3 s_max put singular values near tau, where the accuracy rule of
the Gram route sends some matrices to the float64 tier or the exact route (column
"routes": how many matrices took each route).

Usage (from python_tests/, after `make install`):
    ../.venv/bin/python ../benchmarks/bench_svt.py [--device cpu|cuda] [--quick] [--reps N]
        [--threads N] [--no-compile]
Tables: benchmarks/results/svt_<device>.md (svt_threads<N>_<device>.md with --threads).
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import bench_parser, bench_setup, sync, time_fn, write_table  # noqa: E402

from mtlkernels import ops  # noqa: E402
from mtlkernels import reference as R  # noqa: E402
from mtlkernels.testing import rel_err  # noqa: E402

SHAPES = [(16, 4096, 100), (256, 64, 64), (10000, 32, 32), (64, 512, 512), (1, 2048, 1000)]
SMALL_TAU_SHAPES = [(256, 64, 64), (16, 4096, 100)]
# Quick: the fused small route, the Gram route with its eigensolver in shared memory
# (k = 100), in global memory (64 matrices, k = 130) and, on CUDA, through cuSOLVER's eigh
# (batches of at most k / 4 matrices past shared memory: k = 200, 400).
QUICK_SHAPES = [(16, 1024, 100), (256, 64, 64), (2000, 32, 32), (64, 256, 130), (16, 1024, 200), (4, 2048, 400)]


def svd_composite(x, tau, driver=None):
    u, s, vh = torch.linalg.svd(x, full_matrices=False, driver=driver)
    return (u * torch.clamp(s - tau, min=0).unsqueeze(-2)) @ vh


def gram_eigh_composite(x, tau):
    wide = x.shape[-2] < x.shape[-1]
    xt = x.mT if wide else x
    w, v = torch.linalg.eigh(xt.mT @ xt)
    s = w.clamp(min=0).sqrt()
    f = torch.where(s > tau, 1 - tau / s, torch.zeros_like(s))
    out = xt @ ((v * f.unsqueeze(-2)) @ v.mT)
    return out.mT if wide else out


def interleaved(fns: dict, device, warmup: int, reps: int, budget_s: float = 90.0) -> dict:
    """Median time of each fn, the fns timed in turn (ABCABC...) so that a change in the
    machine's load affects every peer alike; stops after budget_s once each has 3 runs."""
    for name in list(fns):
        try:
            for _ in range(warmup):
                fns[name]()
        except Exception as e:  # noqa: BLE001 - a peer that fails is reported as n/a
            print(f"{name} failed: {type(e).__name__}: {e}", file=sys.stderr)
            if name == "ours":
                raise
            del fns[name]
    sync(device)
    times = {name: [] for name in fns}
    start = time.perf_counter()
    for rep in range(reps):
        for name, fn in fns.items():
            times[name].append(time_fn(fn, device, warmup=0, reps=1))
        if rep >= 2 and time.perf_counter() - start > budget_s:
            break
    return {name: statistics.median(v) for name, v in times.items()}


def load_note() -> str:
    """The machine's load average (other processes share this CPU), for the table notes."""
    try:
        import os

        return "; load average at the end: {:.1f} {:.1f} {:.1f} on {} cores".format(*os.getloadavg(), os.cpu_count())
    except (OSError, AttributeError):
        return ""


def route_summary(x, tau) -> str:
    r = ops.spectral_route(x, "svt", tau).flatten().cpu()
    counts = torch.bincount(r + 1, minlength=5).tolist()  # codes -1..3
    names = ["empty", "small", "gram", "gram64", "exact"]
    return " ".join(f"{n}:{c}" for n, c in zip(names, counts) if c)


def main(argv=None):
    p = bench_parser(__doc__)
    p.add_argument("--quick", action="store_true", help="smaller shapes, for a smoke run")
    p.add_argument("--reps", type=int, default=None, help="timed repetitions (default: 10 on CUDA, 3 on CPU)")
    p.add_argument("--no-compile", action="store_true", help="skip the torch.compile peer")
    args = p.parse_args(argv)
    device = bench_setup(args)
    is_cuda = torch.device(device).type == "cuda"
    reps = args.reps or (10 if is_cuda else 3)
    warmup = 2 if is_cuda else 1
    shapes = QUICK_SHAPES if args.quick else SHAPES
    cases = [(s, "median") for s in shapes] + [(s, "small") for s in (SMALL_TAU_SHAPES if not args.quick else [])]

    compiled = None if args.no_compile else torch.compile(svd_composite, dynamic=True)
    rows = []
    gen = torch.Generator().manual_seed(0)
    for shape, tau_kind in cases:
        x64 = torch.randn(*shape, generator=gen, dtype=torch.float64)
        x = x64.float().to(device)
        xd = x.double()
        s = torch.linalg.svdvals(xd)
        tau = float(s.median()) if tau_kind == "median" else 1e-3 * float(s.amax())
        ref = R.svt(xd, tau)
        del s

        peers = {"ours": lambda: ops.svt(x, tau), "svd": lambda: svd_composite(x, tau)}
        if is_cuda:
            peers["gesvda"] = lambda: svd_composite(x, tau, "gesvda")
        peers["gram"] = lambda: gram_eigh_composite(x, tau)
        if compiled is not None:
            tau_t = torch.tensor(tau, device=device)  # a tensor, so that a new tau does not recompile
            try:
                compiled(x, tau_t)
                sync(device)
                peers["compile"] = lambda: compiled(x, tau_t)
            except Exception as e:  # noqa: BLE001 - report, do not fail the table
                print(f"torch.compile failed on {shape}: {type(e).__name__}: {e}", file=sys.stderr)
        times = interleaved(peers, device, warmup, reps)
        ours = times["ours"]
        t_svd, t_gesvda, t_gram, t_comp = (times.get(k) for k in ("svd", "gesvda", "gram", "compile"))
        err_ours = rel_err(ops.svt(x, tau), ref)
        err_gram = rel_err(gram_eigh_composite(x, tau), ref)

        def ratio(v):
            return "n/a" if v is None else v / ours

        def ms(v):
            return "n/a" if v is None else v * 1e3

        label = "median s" if tau_kind == "median" else "1e-3 s_max"
        rows.append([
            "x".join(map(str, shape)), label, ours * 1e3,
            ms(t_svd), ratio(t_svd), ms(t_gesvda), ratio(t_gesvda),
            ms(t_gram), ratio(t_gram), ms(t_comp), ratio(t_comp),
            err_ours, err_gram, route_summary(x, tau),
        ])
        print(rows[-1], flush=True)
        del x, xd, ref, x64
        if is_cuda:
            torch.cuda.empty_cache()

    columns = ["shape (B x m x n)", "tau", "ours ms", "svd ms", "svd / ours", "gesvda ms", "gesvda / ours",
               "gram+eigh ms", "gram+eigh / ours", "compile(svd) ms", "compile / ours",
               "rel err ours", "rel err gram+eigh", "routes"]
    cmd = "cd python_tests && ../.venv/bin/python ../benchmarks/bench_svt.py" + (
        f" --device {args.device}" if args.device else "") + (" --quick" if args.quick else "") + (
        f" --reps {args.reps}" if args.reps else "") + (" --no-compile" if args.no_compile else "") + (
        f" --threads {args.threads}" if args.threads else "")
    notes = (f"float32; median of {reps} timed runs after {warmup} warm-up, the peers timed in turn (ABCABC) so that "
             "load changes hit all alike (a case stops after 90 s once each peer has 3 runs); "
             f"torch.set_num_threads({torch.get_num_threads()}); compile = torch.compile(dynamic=True) of the svd "
             "composite (tau passed as a tensor); "
             "ratio = peer time / our time; rel err = ||out - ref||_F / ||ref||_F against the float64 svd composite "
             "on the same input; routes: how many matrices took each route of ops.svt")
    name = "svt" + (f"_threads{args.threads}" if args.threads else "") + ("_quick" if args.quick else "")
    write_table(name, device, columns, rows, cmd, notes + load_note())


if __name__ == "__main__":
    main()
