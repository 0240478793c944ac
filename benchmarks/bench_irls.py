"""pairwise_sq_dists (Zhang et al. 2019, the primitive of eqs. 3-8) against torch.cdist and the
Gram-GEMM composite, per layer, in one run.

For each n (networks) and P (parameters per network, cut into 4 layers of 50%, 30%,
15% and 5%): median time of our op (float32, default accumulation and
fp64_accumulate=True), of torch.cdist(x_l, x_l)**2 per layer and of the Gram composite
||x_i||^2 + ||x_j||^2 - 2 x_i.x_j per layer; GB/s counts one read of params, and
"% copy" compares it with the measured device copy bandwidth (bytes read + written
per second of a plain copy). On the CPU the table also gives the process CPU time
per call and its ratios, which other jobs on a shared machine do not inflate. The
peers get each layer as a contiguous tensor made
before timing (their best case) when memory allows. A second measurement reports
the accuracy of each method on near-identical networks, where the Gram form cancels.

Usage (after `make install`, from python_tests/):
    ../.venv/bin/python ../benchmarks/bench_irls.py [--device cpu|cuda] [--quick] [--threads N]
"""

from __future__ import annotations

import os
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import bench_parser, bench_setup, copy_bandwidth, time_fn, write_table  # noqa: E402

from mtlkernels import ops  # noqa: E402
from mtlkernels import reference as ref  # noqa: E402

FRACTIONS = (0.5, 0.3, 0.15)


def layer_offsets(P: int) -> list[int]:
    sizes = [int(P * f) for f in FRACTIONS]
    sizes.append(P - sum(sizes))
    return ops.layer_offsets(sizes)


def peers(x: torch.Tensor, off: list[int], contiguous: bool):
    layers = [x[:, a:b] for a, b in zip(off[:-1], off[1:])]
    if contiguous:
        layers = [v.contiguous() for v in layers]

    def cdist():
        return torch.stack([torch.cdist(v, v).square_() for v in layers])

    def gram():
        out = []
        for v in layers:
            g = v @ v.T
            sq = g.diagonal()
            out.append((sq[:, None] + sq[None, :] - 2 * g).clamp_min_(0))
        return torch.stack(out)

    return cdist, gram


def cpu_time(fn, reps: int = 7, max_seconds: float = 4.0) -> float:
    """Median process CPU time of fn() in seconds (all threads; excludes time spent waiting for a core)."""
    fn()
    times = []
    start = time.perf_counter()
    for _ in range(reps):
        t0 = time.process_time()
        fn()
        times.append(time.process_time() - t0)
        if time.perf_counter() - start > max_seconds and len(times) >= 3:
            break
    return statistics.median(times)


def accuracy(device) -> str:
    """Relative error against float64 on 32 networks equal up to 1e-4 relative."""
    n, P = 32, 100_000
    g = torch.Generator().manual_seed(0)
    base = 3 + torch.randn(1, P, generator=g, dtype=torch.float64)
    x = (base + 1e-4 * torch.randn(n, P, generator=g, dtype=torch.float64)).float()
    off = layer_offsets(P)
    want = ref.pairwise_sq_dists(x.double(), off)
    xd = x.to(device)
    cdist, gram = peers(xd, off, True)

    def err(out):
        return float((out.double().cpu() - want).norm() / want.norm())

    return (
        f"accuracy on {n} networks equal up to 1e-4 relative (P = {P}, float32 input), relative error vs "
        f"float64: ours {err(ops.pairwise_sq_dists(xd, off)):.1e}, ours fp64_accumulate "
        f"{err(ops.pairwise_sq_dists(xd, off, True)):.1e}, torch.cdist {err(cdist()):.1e}, "
        f"Gram composite {err(gram()):.1e}"
    )


def main() -> None:
    parser = bench_parser(__doc__)
    parser.add_argument("--quick", action="store_true", help="a few small sizes only")
    args = parser.parse_args()
    device = bench_setup(args)
    is_cuda = torch.device(device).type == "cuda"

    if is_cuda:
        sizes = [100_000, 1_000_000, 10_000_000, 100_000_000]
        free, total = torch.cuda.mem_get_info()
        cap = int(0.4 * total)  # params; the peers' copies and workspaces need the rest
    else:
        sizes = [100_000, 1_000_000, 4_000_000, 10_000_000]
        cap = 320 * 2**20  # a few hundred MB on this shared machine
    ns = [4, 8, 16, 64]
    if args.quick:
        sizes, ns = sizes[:2], [4, 16]

    copy_gbs = copy_bandwidth(device)
    reps = dict(warmup=1, reps=11, max_seconds=4.0)
    rows = []
    views = []  # configurations where the peers read layer views instead of copies
    for n in ns:
        for P in sizes:
            nbytes = n * P * 4
            if nbytes > cap:
                continue
            x = torch.randn(n, P, device=device)
            off = layer_offsets(P)
            free = torch.cuda.mem_get_info()[0] if is_cuda else None
            contiguous = not is_cuda or free > 2.5 * nbytes
            if not contiguous:
                views.append(f"n={n} P={P:.0e}")
            cdist, gram = peers(x, off, contiguous)
            t_ours = time_fn(lambda: ops.pairwise_sq_dists(x, off), device, **reps)
            t_f64 = time_fn(lambda: ops.pairwise_sq_dists(x, off, True), device, **reps)
            t_cdist = time_fn(cdist, device, **reps)
            t_gram = time_fn(gram, device, **reps)
            gbs = nbytes / t_ours / 1e9
            row = [
                n,
                f"{P:.0e}",
                t_ours * 1e3,
                gbs,
                100 * gbs / copy_gbs,
                t_f64 * 1e3,
                t_cdist * 1e3,
                t_gram * 1e3,
                t_cdist / t_ours,
                t_gram / t_ours,
            ]
            if not is_cuda:  # CPU time used, which other jobs on a shared machine do not inflate
                c_ours = cpu_time(lambda: ops.pairwise_sq_dists(x, off))
                row += [c_ours * 1e3, cpu_time(cdist) / c_ours, cpu_time(gram) / c_ours]
            rows.append(row)
            print(rows[-1], flush=True)
            del x, cdist, gram
            if is_cuda:
                torch.cuda.empty_cache()

    load = f"; load average {os.getloadavg()[0]:.1f} at the end (a shared machine)" if not is_cuda else ""
    notes = (
        f"measured copy bandwidth {copy_gbs:.1f} GB/s (read + write); float32 params, 4 layers "
        f"(50/30/15/5 %); GB/s = one read of params / time (above the copy bandwidth, which is measured on "
        f"256 MiB, the data sits in cache); peers get contiguous per-layer tensors"
        f"{' (layer views for ' + ', '.join(views) + ')' if views else ''}; medians of up to 11 runs{load}. "
        f"{accuracy(device)}"
    )
    cmd = "cd python_tests && ../.venv/bin/python ../benchmarks/bench_irls.py --device " + device
    if args.quick:
        cmd += " --quick"
    if args.threads:
        cmd += f" --threads {args.threads}"
    write_table(
        "irls_pairwise_sq_dists",
        device,
        [
            "n",
            "P",
            "ours ms",
            "ours GB/s",
            "% copy",
            "ours fp64-acc ms",
            "cdist ms",
            "Gram ms",
            "cdist / ours",
            "Gram / ours",
        ]
        + ([] if is_cuda else ["ours CPU ms", "cdist / ours CPU", "Gram / ours CPU"]),
        rows,
        cmd,
        notes,
    )


if __name__ == "__main__":
    main()
