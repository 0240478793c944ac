"""Benchmark: mtlkernels.optim.gram_matrix (X^T X from the upper block triangle) against
``X.T @ X``, float64, for the Gram form of the squared loss that every linear estimator
forms once per fit (most of a large lasso fit's time: issue 11's solvers_large rows).

Rows: the default block (256 from d = 768, else 128) and the other blocks, each against
``X.T @ X`` in the same run on the same X. Ratios are peer time / ours (above 1: faster).
Errors: max |ours - X.T @ X| / max |X.T @ X|.

Usage: python benchmarks/bench_gram.py [--device cpu|cuda] [--threads N] [--quick]
Table: benchmarks/results/gram_<device>.md
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import bench_parser, bench_setup, time_fn, write_table  # noqa: E402

from mtlkernels.optim import gram_matrix  # noqa: E402

SIZES = [(20000, 512), (50000, 1024), (10000, 2048), (4000, 4096)]


def main():
    args = bench_parser(__doc__).parse_args()
    device = bench_setup(args)
    sizes = [(2000, 256), (2000, 1024)] if args.quick else SIZES
    rows = []
    for N, d in sizes:
        X = torch.randn(N, d, dtype=torch.float64, device=device)
        ref = X.T @ X
        t_peer = time_fn(lambda: X.T @ X, device, warmup=1, reps=5)
        for block in (None, 128, 256, 512):
            if block is not None and d < 3 * block:
                continue
            err = float((gram_matrix(X, block) - ref).abs().max() / ref.abs().max())
            t = time_fn(lambda b=block: gram_matrix(X, b), device, warmup=1, reps=5)
            rows.append([f"N={N} d={d}", "default" if block is None else block, t, t_peer, t_peer / t, err])
    cmd = "python benchmarks/bench_gram.py" + (f" --threads {args.threads}" if args.threads else "") + \
        (" --quick" if args.quick else "") + (f" --device {args.device}" if args.device else "")
    write_table("gram", device, ["X", "block", "ours s", "X.T @ X s", "peer/ours", "rel err"], rows, cmd,
                notes="median of 5 runs each; float64")


if __name__ == "__main__":
    main()
