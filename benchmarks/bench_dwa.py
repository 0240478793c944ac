"""CETL DWA penalty (Chen et al. 2018, eq. 11) on ResNet-sized lists of parameters.

Three jobs, each against a Python loop over the parameters and against torch's
multi-tensor ``torch._foreach_*`` ops, on the same float32 inputs:

- ``penalty``: the value sum_i lam/2 * GFI_i (theta_i - theta*_i)^2 (no autograd);
- ``penalty+backward``: the value and its gradient through autograd;
- ``grad_``: adding lam * GFI * (theta - theta*) to existing gradients in place
  (``dwa_grad_``; the loop uses ``addcmul_``).

The lists are the parameter shapes of ResNet-18 (62 tensors, 11.7M values) and
ResNet-50 (161 tensors, 25.6M values: three CUDA launches of at most 64 tensors).
GB/s counts the bytes each job must move at least (penalty: 3 reads; grad_: 4
reads and 1 write; penalty+backward: penalty, then 3 reads and 1 write), against
the device's measured copy bandwidth.

Usage (from python_tests/, after `make install`):
    python ../benchmarks/bench_dwa.py [--device cpu|cuda] [--quick]
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import bench_parser, bench_setup, copy_bandwidth, time_fn, write_table  # noqa: E402

from mtlkernels import ops  # noqa: E402
from mtlkernels import reference as ref  # noqa: E402

LAM = 0.5


def resnet18_shapes():
    shapes = [(64, 3, 7, 7), (64,), (64,)]
    cin = 64
    for width, stride in [(64, 1), (128, 2), (256, 2), (512, 2)]:
        for block in range(2):
            s = stride if block == 0 else 1
            shapes += [(width, cin, 3, 3), (width,), (width,), (width, width, 3, 3), (width,), (width,)]
            if block == 0 and (s != 1 or cin != width):
                shapes += [(width, cin, 1, 1), (width,), (width,)]
            cin = width
    return shapes + [(1000, 512), (1000,)]


def resnet50_shapes():
    shapes = [(64, 3, 7, 7), (64,), (64,)]
    cin = 64
    for width, blocks in [(64, 3), (128, 4), (256, 6), (512, 3)]:
        for block in range(blocks):
            out = 4 * width
            shapes += [(width, cin, 1, 1), (width,), (width,), (width, width, 3, 3), (width,), (width,)]
            shapes += [(out, width, 1, 1), (out,), (out,)]
            if block == 0:
                shapes += [(out, cin, 1, 1), (out,), (out,)]
            cin = out
    return shapes + [(1000, 2048), (1000,)]


def make(shapes, device, seed=0):
    g = torch.Generator().manual_seed(seed)
    params = [torch.randn(s, generator=g).to(device) for s in shapes]
    anchors = [p + 0.01 * torch.randn(p.shape, generator=g).to(device) for p in params]
    importance = [torch.rand(s, generator=g).to(device) for s in shapes]
    grads = [torch.randn(s, generator=g).to(device) for s in shapes]
    return params, anchors, importance, grads


# ---- the peers ------------------------------------------------------------------


def loop_penalty(params, anchors, importance):
    return ref.dwa_penalty(params, anchors, importance, LAM)


def foreach_penalty(params, anchors, importance):
    d = torch._foreach_sub(params, anchors)
    w = torch._foreach_mul(d, importance)
    torch._foreach_mul_(w, d)  # F d^2 >= 0, so its l1 norm is its sum
    return torch.stack(torch._foreach_norm(w, 1)).sum() * (LAM / 2)


def ours_penalty(params, anchors, importance):
    return ops.dwa_penalty(params, anchors, importance, LAM, check=False)


def loop_grad_(grads, params, anchors, importance):
    for g, p, a, f in zip(grads, params, anchors, importance):
        g.addcmul_(f, p - a, value=LAM)


def foreach_grad_(grads, params, anchors, importance):
    d = torch._foreach_sub(params, anchors)
    torch._foreach_mul_(d, importance)
    torch._foreach_add_(grads, d, alpha=LAM)


def ours_grad_(grads, params, anchors, importance):
    ops.dwa_grad_(grads, params, anchors, importance, LAM, check=False)


def with_backward(penalty):
    def run(_, p_req, anchors, importance):
        for p in p_req:
            p.grad = None
        penalty(p_req, anchors, importance).backward()

    return run


def main(argv=None):
    ap = bench_parser(__doc__)
    ap.add_argument("--quick", action="store_true", help="ResNet-18 only, fewer repetitions")
    args = ap.parse_args(argv)
    device = bench_setup(args)
    load0 = os.getloadavg()[0]
    is_cuda = torch.device(device).type == "cuda"
    reps = 50 if is_cuda else (5 if args.quick else 20)
    bw = copy_bandwidth(device)
    models = [("ResNet-18", resnet18_shapes())]
    if not args.quick:
        models.append(("ResNet-50", resnet50_shapes()))

    rows = []
    for model, shapes in models:
        params, anchors, importance, grads = make(shapes, device)
        n = sum(p.numel() for p in params)
        p_req = [p.clone().requires_grad_() for p in params]
        # same values from all three (checked once, outside the timings); the float64
        # value is the yardstick: _foreach_norm sums in float32 and strays furthest
        exact = float(ref.dwa_penalty([p.double() for p in params], [a.double() for a in anchors],
                                      [f.double() for f in importance], LAM))
        vals = [float(f(params, anchors, importance)) for f in (ours_penalty, loop_penalty, foreach_penalty)]
        errs = [abs(v - exact) / abs(exact) for v in vals]
        assert max(errs) <= 1e-2, (exact, vals)
        jobs = {
            "penalty": (3, {"ours": ours_penalty, "loop": loop_penalty, "foreach": foreach_penalty}, False),
            "penalty+backward": (
                7,
                {
                    "ours": with_backward(ours_penalty),
                    "loop": with_backward(loop_penalty),
                    "foreach": with_backward(foreach_penalty),
                },
                True,
            ),
            "grad_": (5, {"ours": ours_grad_, "loop": loop_grad_, "foreach": foreach_grad_}, None),
        }
        for job, (passes, fns, kind) in jobs.items():
            times = {}
            for name, fn in fns.items():
                if kind is None:
                    call = lambda fn=fn: fn(grads, params, anchors, importance)  # noqa: E731
                elif kind:
                    call = lambda fn=fn: fn(None, p_req, anchors, importance)  # noqa: E731
                else:

                    def call(fn=fn):
                        with torch.no_grad():
                            return fn(params, anchors, importance)

                times[name] = time_fn(call, device, warmup=3, reps=reps)
            gbs = passes * n * 4 / times["ours"] / 1e9
            rows.append(
                [
                    model,
                    len(shapes),
                    f"{n / 1e6:.1f}M",
                    job,
                    1e3 * times["ours"],
                    1e3 * times["loop"],
                    1e3 * times["foreach"],
                    times["loop"] / times["ours"],
                    times["foreach"] / times["ours"],
                    gbs,
                    gbs / bw,
                    f"{errs[0]:.0e} / {errs[1]:.0e} / {errs[2]:.0e}" if job == "penalty" else "",
                ]
            )
            print(*rows[-1], flush=True)

    cols = [
        "model",
        "tensors",
        "values",
        "job",
        "ours ms",
        "loop ms",
        "foreach ms",
        "speedup vs loop",
        "speedup vs foreach",
        "ours GB/s",
        "of copy bw",
        "value rel. err ours / loop / foreach",
    ]
    cmd = "make install && cd python_tests && ../.venv/bin/python ../benchmarks/bench_dwa.py" + (
        f" --device {device}" if args.device else ""
    ) + (" --quick" if args.quick else "") + (f" --threads {args.threads}" if args.threads else "")
    notes = f"float32, lam = {LAM}, medians of up to {reps}; copy bandwidth {bw:.1f} GB/s; ours with check=False (see ops.dwa)"
    if not is_cuda:
        notes += f"; load average {load0:.1f} / {os.getloadavg()[0]:.1f} (start / end) on {os.cpu_count()} cores (a shared machine)"
    write_table("dwa_penalty", device, cols, rows, cmd, notes)


if __name__ == "__main__":
    main()
