"""Shrinkage ops against the eager torch composite, torch.compile of it, and F.softshrink.

Usage (from python_tests/ or anywhere the package is installed):
    python benchmarks/bench_shrinkage.py [--device cpu|cuda] [--quick]

Reports the median time, the achieved bandwidth (bytes read + written, each once),
its fraction of the measured device copy bandwidth, and the ratio of each peer's
time to ours (> 1: we are faster). Writes benchmarks/results/shrinkage_<device>.md.
"""

from __future__ import annotations

import sys

import torch
import torch.nn.functional as F

from common import bench_parser, bench_setup, copy_bandwidth, time_fn, write_table

from mtlkernels import ops
from mtlkernels import reference as ref


def main() -> None:
    p = bench_parser(__doc__)
    p.add_argument("--quick", action="store_true", help="one small size (a smoke run)")
    args = p.parse_args()
    device = bench_setup(args)
    cuda = device.startswith("cuda")
    if args.quick:
        sizes = [1 << 20]
    else:
        sizes = [1 << 20, 1 << 24, 1 << 26, 1 << 28] if cuda else [1 << 20, 1 << 22, 1 << 24]
    dtype = torch.float32
    esize = 4
    copy_gbs = copy_bandwidth(device)
    compiled = {}

    def comp(name, fn):
        if name not in compiled:
            compiled[name] = torch.compile(fn, dynamic=True)
        return compiled[name]

    rows = []
    for n in sizes:
        x = torch.randn(n, device=device, dtype=dtype)
        g = torch.randn(n, device=device, dtype=dtype)
        cols = 256
        xm, gm = x.view(-1, cols), g.view(-1, cols)
        labels = (torch.arange(cols, device=device) % 8)
        def inplace_ref(x, g):
            return x.copy_(ref.prox_grad_step(x, g, 1e-9, 0.0))

        cases = [
            # name, ours, reference (eager peer, compiled too), its inputs, elements moved, softshrink peer
            ("soft_threshold", lambda: ops.soft_threshold(x, 0.5), lambda x: ref.soft_threshold(x, 0.5), (x,),
             2 * n, lambda: F.softshrink(x, 0.5)),
            ("prox_grad_step (fused l1)", lambda: ops.prox_grad_step(x, g, 0.1, 0.5),
             lambda x, g: ref.prox_grad_step(x, g, 0.1, 0.5), (x, g), 3 * n, None),
            ("prox_grad_step_ (in place)", lambda: ops.prox_grad_step_(x, g, 1e-9, 0.0), inplace_ref, (x, g),
             3 * n, None),
            (f"group rows (n/{cols} x {cols})", lambda: ops.group_soft_threshold(xm, 8.0, 1),
             lambda x: ref.group_soft_threshold(x, 8.0, 1), (xm,), 2 * n, None),
            (f"group cols (n/{cols} x {cols})", lambda: ops.group_soft_threshold(xm, 8.0, 0),
             lambda x: ref.group_soft_threshold(x, 8.0, 0), (xm,), 2 * n, None),
            ("group labels (8 groups/row)", lambda: ops.group_soft_threshold(xm, 3.0, 1, labels),
             lambda x, lab: ref.group_soft_threshold(x, 3.0, 1, lab, num_groups=8), (xm, labels), 2 * n, None),
        ]
        for name, ours, eager, inputs, elems, softshrink in cases:
            t_ours = time_fn(ours, device)
            t_eager = time_fn(lambda: eager(*inputs), device)
            c = comp(name, eager)
            try:
                t_comp = time_fn(lambda: c(*inputs), device)
            except Exception as exc:  # noqa: BLE001  (report, do not hide)
                print(f"torch.compile failed for {name}: {exc}", file=sys.stderr)
                t_comp = float("nan")
            t_soft = time_fn(softshrink, device) if softshrink else float("nan")
            gbs = elems * esize / t_ours / 1e9
            rows.append([name, n, t_ours * 1e3, gbs, 100 * gbs / copy_gbs, t_eager * 1e3, t_comp * 1e3,
                         t_soft * 1e3, t_eager / t_ours, t_comp / t_ours, t_soft / t_ours])
            print(f"{name:30s} n={n:>10d} ours {t_ours*1e3:8.3f} ms  eager/ours {t_eager/t_ours:5.2f}", flush=True)
    write_table(
        "shrinkage",
        device,
        ["op", "elements", "ours ms", "ours GB/s", "% of copy", "eager ms", "compile ms", "softshrink ms",
         "eager/ours", "compile/ours", "softshrink/ours"],
        rows,
        command=f"python benchmarks/bench_shrinkage.py --device {device}" + (" --quick" if args.quick else "")
        + (f" --threads {args.threads}" if args.threads else ""),
        notes=f"float32, medians; copy bandwidth measured {copy_gbs:.1f} GB/s (read + write); "
        "GB/s counts each input read once and the output written once",
    )


if __name__ == "__main__":
    main()
