"""Calls every CUDA kernel of mtlkernels once or a few times on small, odd sizes: the
script that `compute-sanitizer --tool memcheck` (and `--tool racecheck`) runs.

    compute-sanitizer --tool memcheck --error-exitcode 1 python tools/cuda_smoke.py
    python tools/cuda_smoke.py --only shrinkage nuclear   # some families only
    python tools/cuda_smoke.py --device cpu               # the same calls on the CPU

It covers all 24 native ops (torch.ops.mtlkernels), forward and backward where they are
differentiable, float32 and float64, the in-place variants, and the kernels' paths:
vectorised / unaligned / threshold-tensor shrinkage, the three group modes (row groups
in the warp and the block kernel, column groups over several row chunks, labelled
groups in shared memory and beyond it, more than 6,144 groups); every nuclear route (the
fused small kernel below and above 48 KiB of shared memory, the Gram route with its
eigensolver in shared and in global memory, the float64 Gram tier, the exact SVD, NaN);
pairwise distances over several 64-row tiles in every accumulation mode; the AMTFL
reconstruction with a bias over several row chunks; the DWA ops over more than one
64-tensor launch. It prints one line per call, synchronises at the end, checks that
every native op was called (unless --only), and exits 0. A call that raises is reported
and the others still run; the exit status is then 1. Results are not checked against a
reference (the test suite does that): this is about memory accesses and races.

Memory: on CUDA it sets PYTORCH_NO_CUDA_MEMORY_CACHING=1 (unless --caching or already
set), so that every tensor is its own allocation and memcheck sees an access past its end.

Without a CUDA device (and without --device cpu) it prints "no CUDA device" and exits 0.
--device cpu runs the same calls on the CPU: a check of every call's arguments on a
machine without a GPU.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
import traceback

import torch

FAMILIES = ("shrinkage", "nuclear", "irls", "amtfl", "dwa")
DTYPES = (torch.float32, torch.float64)
# --light (for racecheck, which is slow on shared memory): the nuclear family's cheap
# shapes only (the small route at a few columns; the Gram route's eigensolver at k = 34 in
# shared memory, one float32 matrix), the other families as they are.
LIGHT = False


class Runner:
    """Runs the calls, prints one line each, records failures and the native ops called."""

    def __init__(self, device: str):
        self.device = device
        self.calls = 0
        self.failed: list[str] = []
        self.seen: set[str] = set()

    def __call__(self, family: str, what: str, fn) -> None:
        self.calls += 1
        t0 = time.perf_counter()
        try:
            with _Recorder(self.seen):
                fn()
            status = "ok"
        except Exception as e:  # noqa: BLE001 - report and go on with the next call
            status = f"FAILED: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
            self.failed.append(f"{family} {what}")
            traceback.print_exc(file=sys.stdout)
        print(f"{family:9s} {what:70s} {1e3 * (time.perf_counter() - t0):8.1f} ms  {status}", flush=True)


def _Recorder(seen: set[str]):
    """A dispatch mode that records the mtlkernels ops it sees (and changes nothing)."""
    from torch.utils._python_dispatch import TorchDispatchMode

    class Recorder(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            if func.namespace == "mtlkernels":
                seen.add(func._schema.name)
            return func(*args, **(kwargs or {}))

    return Recorder()


def rnd(*shape, seed: int, dtype=torch.float64, device="cpu") -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g, dtype=torch.float64).to(dtype=dtype, device=device)


def name(dtype) -> str:
    return str(dtype).replace("torch.", "")


# ---- shrinkage -----------------------------------------------------------------------------


def shrinkage(run: Runner, dev: str) -> None:
    from mtlkernels import ops

    for dt in DTYPES:
        d = name(dt)
        # elementwise: uniform threshold (vectorised), unaligned views (scalar loop), tensors
        x = rnd(37, 131, seed=1, dtype=dt, device=dev)
        g = rnd(37, 131, seed=2, dtype=dt, device=dev)
        xu = rnd(1 + 1001, seed=3, dtype=dt, device=dev)[1:]  # 4 or 8 bytes off 16
        gu = rnd(1 + 1001, seed=4, dtype=dt, device=dev)[1:]
        col = rnd(131, seed=5, dtype=dt, device=dev).abs()
        full = rnd(37, 131, seed=6, dtype=dt, device=dev).abs()
        run("shrinkage", f"soft_threshold {d} (37, 131) scalar / column / full tau", lambda: (
            ops.soft_threshold(x, 0.4), ops.soft_threshold(x, col), ops.soft_threshold(x, full)))
        run("shrinkage", f"soft_threshold {d} unaligned (1001,)", lambda: ops.soft_threshold(xu, 0.4))
        run("shrinkage", f"soft_threshold_ {d} (37, 131) and unaligned", lambda: (
            ops.soft_threshold_(x.clone(), 0.4), ops.soft_threshold_(x.clone(), col),
            ops.soft_threshold_(rnd(1002, seed=7, dtype=dt, device=dev)[1:], 0.3)))
        run("shrinkage", f"elastic_net_prox(_) {d}", lambda: (
            ops.elastic_net_prox(x, 0.4, 0.5), ops.elastic_net_prox(xu, col[:1].reshape(()), 0.5),
            ops.elastic_net_prox_(x.clone(), col, 0.5)))
        run("shrinkage", f"prox_grad_step(_) {d} aligned / unaligned / tensor tau", lambda: (
            ops.prox_grad_step(x, g, 0.3, 0.4, 0.2), ops.prox_grad_step(xu, gu, 0.3, 0.4),
            ops.prox_grad_step(x, g, 0.3, col), ops.prox_grad_step_(x.clone(), g, 0.3, 0.4, 0.2),
            ops.prox_grad_step_(rnd(1002, seed=8, dtype=dt, device=dev)[1:], gu, 0.3, 0.4)))
        run("shrinkage", f"soft_threshold / elastic_net_prox backward {d}", lambda: (
            ops.soft_threshold(x.clone().requires_grad_(), col).sum().backward(),
            ops.elastic_net_prox(x.clone().requires_grad_(), 0.4, 0.5).sum().backward()))
        # group modes
        lab = torch.arange(131, device=dev) % 5
        lab_col = torch.arange(37, device=dev) % 3
        wide = rnd(3, 1500, seed=9, dtype=dt, device=dev)  # rows longer than 1024: block kernel
        tall = rnd(700, 9, seed=10, dtype=dt, device=dev)  # column groups over several row chunks
        many = rnd(2, 6200 * 2 + 1, seed=11, dtype=dt, device=dev)  # more than 6,144 labelled groups
        many_lab = torch.arange(many.shape[1], device=dev) % 6200
        run("shrinkage", f"group_soft_threshold {d} rows (warp, block), cols, labels", lambda: (
            ops.group_soft_threshold(x, 1.5, 1, None, 0.1), ops.group_soft_threshold(wide, 10.0, 1),
            ops.group_soft_threshold(tall, 8.0, 0), ops.group_soft_threshold(x, 1.0, 1, lab, 0.1),
            ops.group_soft_threshold(x, rnd(5, seed=12, dtype=dt, device=dev).abs(), 1, lab)))
        run("shrinkage", f"group_soft_threshold {d} labels dim 0, and 6,200 labelled groups", lambda: (
            ops.group_soft_threshold(x, 1.0, 0, lab_col), ops.group_soft_threshold(many, 1.0, 1, many_lab)))
        run("shrinkage", f"group_soft_threshold_ {d} rows / cols / labels, non-contiguous", lambda: (
            ops.group_soft_threshold_(x.clone(), 1.5, 1), ops.group_soft_threshold_(tall.clone(), 8.0, 0, None, 0.1),
            ops.group_soft_threshold_(x.clone()[:, ::2], 1.0, 1, lab[::2])))
        run("shrinkage", f"group_prox_grad_step(_) {d} rows / cols / labels / 6,200 groups", lambda: (
            ops.group_prox_grad_step(x, g, 0.3, 1.5, 1), ops.group_prox_grad_step(x, g, 0.3, 1.5, 0, None, 0.1),
            ops.group_prox_grad_step(x, g, 0.3, 1.0, 1, lab), ops.group_prox_grad_step(many, many, 0.3, 1.0, 1, many_lab),
            ops.group_prox_grad_step_(x.clone(), g, 0.3, 1.0, 0, lab_col),
            ops.group_prox_grad_step_(tall.clone(), tall, 0.3, 8.0, 0)))
        run("shrinkage", f"group_soft_threshold backward {d}", lambda: (
            ops.group_soft_threshold(x.clone().requires_grad_(), 1.0, 1, lab, 0.1).sum().backward()))
        run("shrinkage", f"empty and one-element inputs {d}", lambda: (
            ops.soft_threshold(torch.empty(0, 3, dtype=dt, device=dev), 0.1),
            ops.prox_grad_step(x[:1, :1], g[:1, :1], 0.3, 0.1),
            ops.group_soft_threshold(torch.empty(0, 4, dtype=dt, device=dev), 0.1, 0),
            ops.group_soft_threshold(x[:1, :1], 0.1, 1, lab[:1])))


# ---- nuclear ---------------------------------------------------------------------------------


def with_spectrum(b, m, n, s, seed, dtype, dev):
    k = min(m, n)
    u, _ = torch.linalg.qr(rnd(b, m, k, seed=seed))
    v, _ = torch.linalg.qr(rnd(b, n, k, seed=seed + 1))
    return ((u * torch.as_tensor(s, dtype=torch.float64)) @ v.mT).to(dtype=dtype, device=dev)


def block_diagonal(b, k, seed, dtype, dev):
    """2 x 2 blocks diag(s) R: Jacobi converges in two sweeps (cheap under a sanitizer)."""
    g = torch.Generator().manual_seed(seed)
    s = 1 + torch.rand(b, k // 2, 2, 1, generator=g, dtype=torch.float64)
    a = torch.rand(b, k // 2, generator=g, dtype=torch.float64)
    rot = torch.stack([torch.stack([a.cos(), -a.sin()], -1), torch.stack([a.sin(), a.cos()], -1)], -2)
    x = torch.zeros(b, k // 2, 2, k // 2, 2, dtype=torch.float64)
    i = torch.arange(k // 2)
    x[:, i, :, i, :] = (s * rot).transpose(0, 1)
    return x.reshape(b, k, k).to(dtype=dtype, device=dev)


def nuclear(run: Runner, dev: str) -> None:
    from mtlkernels import ops

    def every_op(x, tau, eps=None):
        """svt with tau (a number or one per matrix); the smoothed ops with lam = 1 and eps
        (default: tau); the routes."""
        eps = tau if eps is None else eps
        return (ops.svt(x, tau), ops.nuclear_norm(x), ops.smoothed_nuclear_norm(x, 1.0, eps),
                ops.smoothed_nuclear_norm_grad(x, 1.0, eps), ops.spectral_route(x, "svt", tau),
                ops.spectral_route(x, "nuclear_norm"))

    for dt in DTYPES:
        d = name(dt)
        nb = 2 if dt == torch.float32 else 1
        cases = [
            ("small route (3, 7, 5)", rnd(3, 7, 5, seed=20, dtype=dt, device=dev), 1.0),
            ("small route, wide (2, 4, 9)", rnd(2, 4, 9, seed=21, dtype=dt, device=dev), 1.0),
            ("small route at 48 KiB: (1, 95, 64)", rnd(1, 95, 64, seed=22, dtype=dt, device=dev), 8.0),
            ("small route at 48 KiB: (1, 158, 32)", rnd(1, 158, 32, seed=23, dtype=dt, device=dev), 10.0),
            ("small route, norms above 48 KiB: (1, 300, 64)", rnd(1, 300, 64, seed=24, dtype=dt, device=dev), 15.0),
            ("gram, eigensolver in shared memory at 48 KiB: (1, 600, 55)",
             rnd(1, 600, 55, seed=25, dtype=dt, device=dev), 20.0),
            ("gram, shared memory: (2, 90, 70)", rnd(2, 90, 70, seed=26, dtype=dt, device=dev), 8.0),
            ("gram, global memory with vectors: (1, 130, 130) block-diagonal",
             block_diagonal(1, 130, 27, dt, dev), 1.5),
            ("gram, global memory without vectors: (1, 172, 172) block-diagonal",
             block_diagonal(1, 172, 28, dt, dev), 1.5),
            # float64 takes the exact route here (cuSOLVER's gesvd, 7-8 s a matrix under
            # memcheck on an H200): one matrix; "mixed routes" below has another
            (f"gram tier 2 / exact: ({nb}, 80, 70) singular values 1 .. 1e-7",
             with_spectrum(nb, 80, 70, torch.logspace(0, -7, 70), 29, dt, dev), 1e-5),
        ]
        if LIGHT:  # one Gram matrix, float32 only: the Jacobi kernel is one template for both dtypes
            # (run 1 of 2026-11-27: (2, 70, 66) in both dtypes did not finish in 40 s under racecheck;
            # (1, 70, 66), 512 threads, took 84 s with 0 hazards later that day: now k = 34, 256
            # threads, more than 512 rows so that the Gram route takes it)
            cases = cases[:2] + ([("gram, shared memory: (1, 520, 34)", rnd(1, 520, 34, seed=35, dtype=dt, device=dev),
                                   8.0)] if dt == torch.float32 else [])
        for what, x, tau in cases:
            run("nuclear", f"{what} {d}", lambda: every_op(x, tau))
        if LIGHT:
            continue
        nan = rnd(3, 80, 70, seed=30, dtype=dt, device=dev)
        # NaN and inf in one matrix: the exact route zeroes it and still runs the SVD (6.5 s a
        # matrix under memcheck on an H200, 2026-11-28: a second one cost 13 s in both dtypes)
        nan[1, 2, 3] = float("nan")
        nan[1, 0, 0] = float("inf")
        run("nuclear", f"NaN / inf on the gram route and the small route {d}", lambda: (
            every_op(nan, 5.0), every_op(nan[:, :9, :7].contiguous(), 1.0)))
        mixed = torch.stack([with_spectrum(1, 80, 70, torch.linspace(1, 2, 70), 31, dt, dev)[0],
                             with_spectrum(1, 80, 70, torch.logspace(0, -7, 70), 32, dt, dev)[0]])
        run("nuclear", f"mixed routes in one batch, per-matrix tau {d}", lambda: every_op(
            mixed, torch.tensor([1.5, 1e-5], dtype=torch.float64, device=dev), 1e-5))
        run("nuclear", f"empty shapes {d}", lambda: (
            every_op(torch.zeros(0, 3, 4, dtype=dt, device=dev), 0.5), every_op(torch.zeros(2, 0, 3, dtype=dt, device=dev), 0.5)))
        xs = rnd(2, 9, 6, seed=33, dtype=dt, device=dev)
        xg = rnd(1, 90, 70, seed=34, dtype=dt, device=dev)

        def backward():
            # the backward formulas are torch.linalg.svd composites (slow under a sanitizer),
            # except the smoothed norm's, which calls smoothed_nuclear_norm_grad: all four on
            # the small route, the smoothed norm's on the Gram route
            v = xs.clone().requires_grad_()
            (ops.svt(v, 1.0).sum() + ops.nuclear_norm(v).sum() + ops.smoothed_nuclear_norm(v, 1.0, 0.5).sum()
             + ops.smoothed_nuclear_norm_grad(v, 1.0, 0.5).sum()).backward()
            v = xg.clone().requires_grad_()
            ops.smoothed_nuclear_norm(v, 1.0, 0.5).sum().backward()

        run("nuclear", f"backward of the four ops (small route), smoothed norm (gram route) {d}", backward)


# ---- irls ------------------------------------------------------------------------------------


def irls(run: Runner, dev: str) -> None:
    from mtlkernels import ops

    for dt in DTYPES:
        d = name(dt)
        off = [0, 33, 34, 100]
        for n in (2, 5, 70):  # one tile; 70: two 64-row super-tiles (off-diagonal tile pairs)
            x = rnd(n, 100, seed=40 + n, dtype=dt, device=dev)
            c = torch.rand(3, n, n, generator=torch.Generator().manual_seed(n), dtype=torch.float64).to(dt).to(dev)
            sigma = torch.tensor([0.5, 0.0, math.inf], dtype=torch.float64, device=dev)
            run("irls", f"pairwise_sq_dists n={n} {d} (and fp64_accumulate), strided rows", lambda: (
                ops.pairwise_sq_dists(x, off), ops.pairwise_sq_dists(x, off, fp64_accumulate=True),
                ops.pairwise_sq_dists(torch.cat([x, x], 1)[:, :100], off)))
            D = ops.pairwise_sq_dists(x, off)
            run("irls", f"irls_weights n={n} {d}", lambda: (ops.irls_weights(D, sigma), ops.irls_weights(D, 1.5)))
            run("irls", f"robust_consistency n={n} {d} (sigma, weights)", lambda: (
                ops.robust_consistency(x, off, sigma), ops.robust_consistency(x, off, weights=c)))
            run("irls", f"irls_consensus n={n} {d}", lambda: ops.irls_consensus(c, x, off))
            run("irls", f"pairwise_mix n={n} {d} (and transposed)", lambda: (
                ops.pairwise_mix(x, off, c), ops.pairwise_mix(x, off, c, True)))

            def backward():
                v = x.clone().requires_grad_()
                (ops.pairwise_sq_dists(v, off).sum() + ops.robust_consistency(v, off, 1.0)
                 + ops.irls_consensus(c, v, off).sum() + ops.pairwise_mix(v, off, c).sum()
                 + ops.irls_weights(ops.pairwise_sq_dists(v, off), 2.0)[1].sum()).backward()

            run("irls", f"backward of every op n={n} {d}", backward)


# ---- amtfl -----------------------------------------------------------------------------------


def amtfl(run: Runner, dev: str) -> None:
    from mtlkernels import ops

    for dt in DTYPES:
        d = name(dt)
        # CUDA chunks of 2,048 rows when k + T >= 512: 2,051 rows are two chunks (2,048 + 3)
        for N, k, T in [(37, 13, 5), (2051, 500, 12)]:
            Z = rnd(N, k, seed=50, dtype=dt, device=dev).abs()
            W = rnd(k, T, seed=51, dtype=dt, device=dev) / k ** 0.5
            A = rnd(T, k, seed=52, dtype=dt, device=dev) / T ** 0.5
            b = rnd(k, seed=53, dtype=dt, device=dev) * 0.1

            def grads(bias, flags):
                ts = [t.clone().requires_grad_(f) for t, f in zip((Z, W, A), flags[:3])]
                bb = None if bias is None else bias.clone().requires_grad_(flags[3])
                loss = ops.amtfl_reconstruction_loss(*ts, bb)
                if loss.requires_grad:
                    loss.backward()

            run("amtfl", f"amtfl_reconstruction ({N}, {k}, {T}) {d} with bias, all gradients",
                lambda: grads(b, (True, True, True, True)))
            run("amtfl", f"amtfl_reconstruction ({N}, {k}, {T}) {d} no bias, W and A gradients",
                lambda: grads(None, (False, True, True, False)))
            run("amtfl", f"amtfl_reconstruction ({N}, {k}, {T}) {d} loss only", lambda: grads(b, (False,) * 4))
        run("amtfl", f"amtfl_reconstruction N=0 and non-contiguous {d}", lambda: (
            ops.amtfl_reconstruction_loss(torch.zeros(0, 5, dtype=dt, device=dev), rnd(5, 3, seed=54, dtype=dt, device=dev),
                                          rnd(3, 5, seed=55, dtype=dt, device=dev)),
            ops.amtfl_reconstruction_loss(rnd(9, 10, seed=56, dtype=dt, device=dev)[:, ::2],
                                          rnd(5, 3, seed=57, dtype=dt, device=dev), rnd(3, 5, seed=58, dtype=dt, device=dev))))


# ---- dwa -------------------------------------------------------------------------------------


def dwa(run: Runner, dev: str) -> None:
    from mtlkernels import ops

    shapes = [(), (1,), (0,), (7, 3), (33,), (3, 5, 7), (20003,)] + [(i % 5 + 1,) for i in range(70)]
    for dt in DTYPES:
        d = name(dt)
        p = [rnd(*s, seed=60 + i, dtype=dt, device=dev) if s else rnd(1, seed=60 + i, dtype=dt, device=dev)[0]
             for i, s in enumerate(shapes)]
        a = [t + 0.1 for t in p]
        f = [t.abs() for t in p]

        def penalty_backward():
            q = [t.clone().requires_grad_() for t in p]
            (ops.dwa_penalty(q, a, f, 0.7) * 1.3).backward()

        run("dwa", f"dwa_penalty {len(shapes)} tensors (two launches) {d}, checked and not", lambda: (
            ops.dwa_penalty(p, a, f, 0.7), ops.dwa_penalty(p, a, f, 0.7, check=False)))
        run("dwa", f"dwa_penalty backward (dwa_penalty_backward) {d}", penalty_backward)
        run("dwa", f"dwa_grad_ {d} checked, unchecked, non-contiguous grads", lambda: (
            ops.dwa_grad_([torch.zeros_like(t) for t in p], p, a, f, 0.7),
            ops.dwa_grad_([torch.ones_like(t) for t in p], p, a, f, 0.7, check=False),
            ops.dwa_grad_([torch.zeros(7, 6, dtype=dt, device=dev)[:, ::2]], [p[3]], [a[3]], [f[3]], 0.7)))


RUNS = {"shrinkage": shrinkage, "nuclear": nuclear, "irls": irls, "amtfl": amtfl, "dwa": dwa}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cuda", choices=["cuda", "cpu"],
                    help="cuda (default), or cpu to check every call's arguments without a GPU")
    ap.add_argument("--only", nargs="+", choices=FAMILIES, default=None, help="run these op families only")
    ap.add_argument("--light", action="store_true",
                    help="cheap nuclear shapes only (for compute-sanitizer --tool racecheck, slow on shared memory)")
    ap.add_argument("--caching", action="store_true",
                    help="keep torch's caching allocator (by default every tensor is its own cudaMalloc, so "
                         "that memcheck sees accesses past a tensor's end instead of inside a cached block)")
    args = ap.parse_args(argv)
    global LIGHT
    LIGHT = args.light
    if args.device == "cuda" and not torch.cuda.is_available():
        print("cuda_smoke: no CUDA device; nothing to run")
        return 0
    if args.device == "cuda" and not args.caching:
        # read when the CUDA allocator starts, i.e. at the first allocation (none yet)
        os.environ.setdefault("PYTORCH_NO_CUDA_MEMORY_CACHING", "1")
    import mtlkernels

    info = mtlkernels.build_info()
    if args.device == "cuda" and not info.get("cuda"):
        print("cuda_smoke: FAILED, mtlkernels was built without CUDA kernels")
        return 1
    dev = args.device
    where = torch.cuda.get_device_name() if dev == "cuda" else "CPU"
    alloc = "" if dev == "cpu" else f", PYTORCH_NO_CUDA_MEMORY_CACHING={os.environ.get('PYTORCH_NO_CUDA_MEMORY_CACHING', '')}"
    print(f"cuda_smoke: torch {torch.__version__}, mtlkernels {mtlkernels.__version__}, on {where}{alloc}", flush=True)
    run = Runner(dev)
    families = args.only or list(FAMILIES)
    for fam in families:
        try:
            RUNS[fam](run, dev)
        except Exception:  # an error outside the calls (building inputs): report, go on
            run.failed.append(f"{fam} (setting up)")
            traceback.print_exc(file=sys.stdout)
    if dev == "cuda":
        try:
            torch.cuda.synchronize()
        except Exception:
            run.failed.append("final synchronize")
            traceback.print_exc(file=sys.stdout)
    native = sorted(n for n in torch._C._dispatch_get_all_op_names() if n.startswith("mtlkernels::"))
    missing = [n for n in native if n not in run.seen]
    print(f"cuda_smoke: {run.calls} calls, {len(run.seen)} of {len(native)} native ops called")
    if missing and args.only is None and not args.light:
        print(f"cuda_smoke: FAILED, native ops never called: {', '.join(missing)}")
        run.failed.append("coverage")
    if run.failed:
        print(f"cuda_smoke: FAILED, {len(run.failed)}: {'; '.join(run.failed)}")
        return 1
    print("cuda_smoke: OK")
    return 0


if __name__ == "__main__":
    sys.exit(main())
