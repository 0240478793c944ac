import sys, time
import torch
from mtlkernels import ops

def section(t): print(f"\n===== {t}", flush=True)

section("eigensolver after the cuSOLVER switch")
def t(fn, n=3):
    fn(); torch.cuda.synchronize(); t0 = time.perf_counter()
    for _ in range(n): fn()
    torch.cuda.synchronize(); return (time.perf_counter() - t0) / n * 1e3
for dt in (torch.float32, torch.float64):
    for b, m, k in [(2, 230, 200), (1, 600, 400), (16, 200, 128), (64, 200, 128)]:
        a = torch.randn(b, m, k, device="cuda", dtype=dt)
        g = a.mT @ a
        print(f"{dt} b={b} m={m} k={k}: svt {t(lambda: ops.svt(a, 1.0)):.2f} ms, nuclear_norm {t(lambda: ops.nuclear_norm(a)):.2f} ms, "
              f"eigh(Gram) {t(lambda: torch.linalg.eigh(g)):.2f} ms", flush=True)

section("one synchronised call (as benchmarks/common.time_fn)")
P = 100000
x = torch.randn(4, P, device="cuda")
off = [0, P // 2, P * 8 // 10, P * 95 // 100, P]
ps = [torch.randn(256, 256, device="cuda") for _ in range(62)]
an = [p + 0.1 for p in ps]
imp = [torch.rand_like(a) for a in an]
cases = {"pairwise_sq_dists": lambda: ops.pairwise_sq_dists(x, off),
         "cdist": lambda: torch.cdist(x, x),
         "dwa_penalty": lambda: ops.dwa_penalty(ps, an, imp, 0.5, check=False)}
for name, fn in cases.items():
    for _ in range(3): fn()
    torch.cuda.synchronize()
    res = []
    for _ in range(5):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        c0 = time.perf_counter(); a.record(); fn(); b.record(); c1 = time.perf_counter(); b.synchronize()
        res.append(f"{a.elapsed_time(b):.3f}/{(c1 - c0) * 1e3:.3f}")
    print(f"{name}: event ms / host ms per call: {' '.join(res)}", flush=True)
from torch.profiler import profile, ProfilerActivity
for name in ("pairwise_sq_dists", "dwa_penalty"):
    fn = cases[name]
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as p:
        for _ in range(3):
            torch.cuda.synchronize(); fn()
    print(name)
    print(p.key_averages().table(sort_by="self_cpu_time_total", row_limit=12, max_name_column_width=50))
