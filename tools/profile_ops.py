"""Profile the op calls whose GPU timings were not understood (a gpu-check stage).

On the H200 (benchmarks/results/gpu_h200_2026-11-26) labelled group shrinkage took
4.85 ms for 1M floats where the eager composite took 0.046 ms, with a kernel that should
take microseconds. This runs such calls under torch.profiler and prints, per call, the
operators and kernels by total time, so that one run shows where the time goes.

Usage: python tools/profile_ops.py [--device cuda|cpu] [--rows 12]
"""

from __future__ import annotations

import argparse
import sys

import torch


def cases(dev: str):
    from mtlkernels import ops

    x = torch.randn(4096, 256, device=dev)
    labels = torch.arange(256, device=dev) % 8
    contiguous_labels = torch.arange(256, device=dev) // 32
    g = torch.randn(16, 1024, 200, device=dev)
    g_many = torch.randn(64, 256, 130, device=dev)
    return [
        ("group_soft_threshold, 8 interleaved labels", lambda: ops.group_soft_threshold(x, 3.0, 1, labels)),
        ("group_soft_threshold, 8 contiguous labels", lambda: ops.group_soft_threshold(x, 3.0, 1, contiguous_labels)),
        ("group_soft_threshold, rows", lambda: ops.group_soft_threshold(x, 3.0, 1)),
        ("svt, Gram route k = 200, 16 matrices (cuSOLVER eigh)", lambda: ops.svt(g, 30.0)),
        ("svt, Gram route k = 130, 64 matrices (global-memory Jacobi)", lambda: ops.svt(g_many, 15.0)),
    ]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--rows", type=int, default=12)
    args = ap.parse_args()
    from torch.profiler import ProfilerActivity, profile

    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if args.device == "cuda" else [])
    sort = "cuda_time_total" if args.device == "cuda" else "cpu_time_total"
    for name, fn in cases(args.device):
        for _ in range(3):
            fn()
        if args.device == "cuda":
            torch.cuda.synchronize()
        with profile(activities=acts) as prof:
            for _ in range(5):
                fn()
            if args.device == "cuda":
                torch.cuda.synchronize()
        print(f"==== {name} (5 calls)")
        print(prof.key_averages().table(sort_by=sort, row_limit=args.rows, max_name_column_width=60))
    return 0


if __name__ == "__main__":
    sys.exit(main())
