"""Run every microbenchmark (benchmarks/bench_*.py) on the device at hand.

Usage: python benchmarks/run_all.py [--device cpu|cuda] [--quick]
"""

import runpy
import sys
from pathlib import Path

here = Path(__file__).resolve().parent
sys.path.insert(0, str(here))
for script in sorted(here.glob("bench_*.py")):
    print(f"==== {script.name}", flush=True)
    sys.argv = [str(script), *sys.argv[1:]]
    runpy.run_path(str(script), run_name="__main__")
