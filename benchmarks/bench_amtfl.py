"""AMTFL reconstruction loss (Lee et al. 2018, Deep-AMTFL, eqs. 6-7): forward + backward time and peak memory.

Compares, on the same float32 inputs (with a bias), the fused op
``mtlkernels.ops.amtfl_reconstruction_loss`` against eager autograd of the reference
composite ``||relu(Z W A + b) - Z||_F^2`` and against ``torch.compile`` of it.

Time: median of forward + backward (gradients for Z, W, A and the bias).
Peak memory: the largest amount allocated above what was allocated before the call
(the inputs), during forward + backward, the final gradients included. CUDA: the
caching allocator's peak statistics. CPU: the profiler's allocation events.

Usage (from python_tests/, after `make install`):
    python ../benchmarks/bench_amtfl.py [--device cpu|cuda] [--quick]
The default sizes are the issue's (N in {1024, 16384, 131072}, k in {64, 512},
T in {10, 100, 1000}) on CUDA; on the CPU, N in {1024, 16384} and N = 131072 for the
smaller (k, T).
"""

from __future__ import annotations

import os
import itertools
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import bench_parser, bench_setup, time_fn, write_table  # noqa: E402

from mtlkernels import ops  # noqa: E402
from mtlkernels import reference as ref  # noqa: E402


def cpu_peak_bytes(fn) -> int:
    """Peak bytes allocated above the starting level while fn runs (CPU allocator events)."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    events = sorted(
        (e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]" and e.device_type() == torch.autograd.DeviceType.CPU),
        key=lambda e: e.start_ns(),
    )
    cur = peak = 0
    for e in events:
        cur += e.nbytes()
        peak = max(peak, cur)
    return peak


def cuda_peak_bytes(fn, device) -> int:
    torch.cuda.synchronize(device)
    base = torch.cuda.memory_allocated(device)
    torch.cuda.reset_peak_memory_stats(device)
    fn()
    torch.cuda.synchronize(device)
    return torch.cuda.max_memory_allocated(device) - base


def make_inputs(N, k, T, device, dtype=torch.float32):
    g = torch.Generator().manual_seed(N * 31 + k * 7 + T)
    Z = torch.rand(N, k, generator=g).to(device, dtype).requires_grad_()  # non-negative features
    W = (torch.randn(k, T, generator=g) / k**0.5).to(device, dtype).requires_grad_()
    A = (torch.randn(T, k, generator=g) / T**0.5).to(device, dtype).requires_grad_()
    b = (0.1 * torch.randn(k, generator=g)).to(device, dtype).requires_grad_()
    return [Z, W, A, b]


def fwd_bwd(fn, ts):
    def run():
        for t in ts:
            t.grad = None
        fn(*ts).backward()

    return run


def main(argv=None):
    ap = bench_parser(__doc__)
    ap.add_argument("--quick", action="store_true", help="a few small sizes only")
    ap.add_argument("--no-compile", action="store_true", help="skip the torch.compile peer")
    args = ap.parse_args(argv)
    device = bench_setup(args)
    load0 = os.getloadavg()[0]
    is_cuda = torch.device(device).type == "cuda"

    if args.quick:
        sizes = [(1024, 64, 10), (4096, 512, 100)]
    elif is_cuda:
        sizes = list(itertools.product([1024, 16384, 131072], [64, 512], [10, 100, 1000]))
    else:
        sizes = list(itertools.product([1024, 16384], [64, 512], [10, 100, 1000]))
        sizes += [(131072, 64, 10), (131072, 64, 100)]

    # One dynamic-shape compilation serves every size (static shapes would compile
    # once per size: minutes on the CPU, and too long for one GPU session command).
    compiled = None if args.no_compile else torch.compile(ref.amtfl_reconstruction_loss, dynamic=True)
    peers = [("ours", ops.amtfl_reconstruction_loss), ("eager", ref.amtfl_reconstruction_loss)]
    if compiled is not None:
        peers.append(("compile", compiled))

    rows = []
    for N, k, T in sizes:
        ts = make_inputs(N, k, T, device)
        flops = 6 * 2 * N * k * T
        reps = 10 if is_cuda else max(3, min(10, int(2e10 / flops)))
        # correctness of the fused op against eager on these inputs
        loss = ops.amtfl_reconstruction_loss(*ts).detach()
        loss_ref = ref.amtfl_reconstruction_loss(*ts).detach()
        err = float((loss.double() - loss_ref.double()).abs() / loss_ref.double().abs())
        res = {}
        for name, fn in peers:
            run = fwd_bwd(fn, ts)
            t = time_fn(run, device, warmup=2 if is_cuda or flops < 1e10 else 1, reps=reps, max_seconds=10.0)
            for x in ts:
                x.grad = None
            mem = cuda_peak_bytes(run, device) if is_cuda else cpu_peak_bytes(run)
            res[name] = (t, mem)
        t_o, m_o = res["ours"]
        t_e, m_e = res["eager"]
        row = [N, k, T, 1e3 * t_o, 1e3 * t_e]
        if compiled is not None:
            row.append(1e3 * res["compile"][0])
        row += [t_e / t_o]
        if compiled is not None:
            row.append(res["compile"][0] / t_o)
        row += [m_o / 2**20, m_e / 2**20]
        if compiled is not None:
            row.append(res["compile"][1] / 2**20)
        row += [m_o / m_e, f"{err:.1e}"]
        rows.append(row)
        print(*row, flush=True)
        del ts

    cols = ["N", "k", "T", "ours ms", "eager ms"]
    if compiled is not None:
        cols.append("compile ms")
    cols.append("speedup vs eager")
    if compiled is not None:
        cols.append("speedup vs compile")
    cols += ["ours peak MiB", "eager peak MiB"]
    if compiled is not None:
        cols.append("compile peak MiB")
    cols += ["mem ours/eager", "loss rel. err"]
    cmd = "make install && cd python_tests && ../.venv/bin/python ../benchmarks/bench_amtfl.py" + (
        f" --device {device}" if args.device else ""
    ) + (" --quick" if args.quick else "") + (f" --threads {args.threads}" if args.threads else "")
    notes = (
        "forward + backward of ||relu(Z W A + b) - Z||_F^2 (gradients for Z, W, A, b), float32, medians; "
        "peak memory above the inputs, final gradients included"
        + ("; torch.compile with dynamic shapes (one compilation for all sizes)" if compiled is not None else "")
        + ("; TF32 off (torch default for float32 matmul)" if is_cuda else "")
    )
    if not is_cuda:
        notes += f"; load average {load0:.1f} / {os.getloadavg()[0]:.1f} (start / end) on {os.cpu_count()} cores (a shared machine)"
    write_table("amtfl_reconstruction", device, cols, rows, cmd, notes)


if __name__ == "__main__":
    main()
