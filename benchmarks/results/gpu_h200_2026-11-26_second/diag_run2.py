"""One-off GPU diagnostics (issue 10): host syncs, side stream errors, IRLS/DWA overhead, eigensolver."""
import sys, time, traceback, warnings
sys.path.insert(0, "python_tests")
import torch
from mtlkernels import ops
from mtlkernels import reference as ref
from mtlkernels.testing import randn, rel_err, on_side_stream

def section(t): print(f"\n===== {t}", flush=True)

section("host syncs")
def syncs(name, fn):
    torch.cuda.synchronize()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            fn()
        finally:
            torch.cuda.set_sync_debug_mode("default")
    print(f"{name}: {len(caught)} warnings")
    for w in caught:
        print(f"   {w.category.__name__} {w.filename}:{w.lineno}: {str(w.message)[:160]}")
x = randn(64, 256, seed=90, dtype=torch.float32, device="cuda")
small = randn(5, 20, 9, seed=91, device="cuda")
gram = randn(4, 90, 70, seed=92, device="cuda")
for rep in range(2):
    syncs(f"soft_threshold rep{rep}", lambda: ops.soft_threshold(x, 0.5))
    syncs(f"svt small rep{rep}", lambda: ops.svt(small, 1.0))
    syncs(f"svt gram rep{rep}", lambda: ops.svt(gram, 1.0))
    syncs(f"torch add rep{rep}", lambda: x + 1)
    syncs(f"torch.tensor(0.5) rep{rep}", lambda: torch.tensor(0.5, dtype=torch.float64))
    syncs(f"raw op soft_threshold rep{rep}", lambda: torch.ops.mtlkernels.soft_threshold(x, torch.tensor(0.5, dtype=torch.float64)))

section("side stream")
from test_nuclear import _route_cases, _every_op, _every_ref
for c, (xx, tau) in enumerate(_route_cases("cuda")):
    side = on_side_stream(lambda: _every_op(xx, tau))
    main = [t.cpu() for t in _every_op(xx, tau)]
    refs = _every_ref(xx, tau)
    for i in range(4):
        print(f"case {c} {xx.dtype} shape {tuple(xx.shape)} op {i}: side-main {rel_err(side[i], main[i]):.2e}"
              f" main-ref {rel_err(main[i], refs[i]):.2e} side-ref {rel_err(side[i], refs[i]):.2e}", flush=True)

def prof(name, fn, n=3):
    fn(); torch.cuda.synchronize()
    from torch.profiler import profile, ProfilerActivity
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as p:
        for _ in range(n):
            fn()
        torch.cuda.synchronize()
    print(p.key_averages().table(sort_by="cpu_time_total", row_limit=14, max_name_column_width=60))
    t0 = time.perf_counter()
    for _ in range(20): fn()
    torch.cuda.synchronize()
    print(f"{name}: {(time.perf_counter() - t0) / 20 * 1e3:.3f} ms per call (wall, 20 calls)", flush=True)

section("irls pairwise_sq_dists")
P = 100000
params = torch.randn(4, P, device="cuda")
off = [0, P // 2, P * 8 // 10, P * 95 // 100, P]
prof("pairwise_sq_dists", lambda: ops.pairwise_sq_dists(params, off))
section("dwa penalty + backward")
ps = [torch.randn(256, 256, device="cuda", requires_grad=True) for _ in range(8)]
an = [p.detach().clone() + 0.1 for p in ps]
imp = [torch.rand_like(a) for a in an]
def dwa_fb():
    ops.dwa_penalty(ps, an, imp, 0.5, check=False).backward()
prof("dwa penalty+backward", dwa_fb)

section("eigensolver: ops.svt Gram route vs cuSOLVER")
def t(fn, n=5):
    fn(); torch.cuda.synchronize(); t0 = time.perf_counter()
    for _ in range(n): fn()
    torch.cuda.synchronize(); return (time.perf_counter() - t0) / n * 1e3
for dt in (torch.float32, torch.float64):
    for b, m, k in [(8, 300, 100), (2, 230, 200), (1, 600, 400), (64, 200, 128)]:
        a = torch.randn(b, m, k, device="cuda", dtype=dt)
        tau = 1.0
        route = ops.spectral_route(a, "svt", tau).tolist()
        g = a.mT @ a
        print(f"{dt} b={b} m={m} k={k} route={set(route)}: svt {t(lambda: ops.svt(a, tau)):.2f} ms, "
              f"eigh(Gram) {t(lambda: torch.linalg.eigh(g)):.2f} ms, svd {t(lambda: torch.linalg.svd(a, full_matrices=False)):.2f} ms",
              flush=True)
