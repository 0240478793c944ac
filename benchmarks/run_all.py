"""Run every microbenchmark (benchmarks/bench_*.py) on the device at hand.

Usage: python benchmarks/run_all.py [--device cpu|cuda] [--quick] [--out DIR] [--threads N]

Each script runs in its own process, so that one failing benchmark neither hides the
others nor leaves state behind; the exit status is non-zero when any failed.
"""

import subprocess
import sys
import time
from pathlib import Path

here = Path(__file__).resolve().parent


def main() -> int:
    failed = []
    # The op microbenchmarks first, then those of whole steps and solvers (slower); the
    # torchrun one last (about 50 s, mostly process start-up; on one GPU only N = 1), so
    # that a time limit (tools/gpu_check.py) cuts it rather than the solvers.
    last = ("bench_regularizers.py", "bench_solvers.py", "bench_joint_irls_dist.py")
    scripts = sorted(here.glob("bench_*.py"), key=lambda p: (last.index(p.name) + 1 if p.name in last else 0, p.name))
    for script in scripts:
        print(f"==== {script.name}", flush=True)
        t0 = time.perf_counter()
        rc = subprocess.call([sys.executable, str(script), *sys.argv[1:]])
        print(f"==== {script.name}: {'ok' if rc == 0 else f'FAILED (exit {rc})'} in {time.perf_counter() - t0:.0f} s",
              flush=True)
        if rc != 0:
            failed.append(script.name)
    if failed:
        print(f"run_all: {len(failed)} benchmark(s) failed: {', '.join(failed)}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
