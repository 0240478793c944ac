"""Results of the deep methods (issue: deep methods and trainers), committed under benchmarks/results/.

Usage: python benchmarks/methods_deep.py [--quick] [--only NAME ...]

Runs each deep experiment of mtlkernels.experiments.registry with its full settings
(>= 3 seeds, mean ± std), writes one markdown table per experiment
(benchmarks/results/methods_deep_<name>_cpu.md) and the plots next to them.
"""

import argparse
import json

from common import RESULTS, write_table

from mtlkernels.experiments.common import COMPARISON_COLUMNS
from mtlkernels.experiments.registry import EXPERIMENTS, get

DEEP = ["adaptive-sharing", "attribute-mtl", "amtfl", "joint-irls", "cetl"]


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--quick", action="store_true")
    p.add_argument("--only", nargs="*", default=None)
    args = p.parse_args()
    names = args.only or DEEP
    plots_dir = RESULTS / "plots"
    for name in names:
        res = get(name)(quick=args.quick, out_dir=plots_dir, **({"seeds": (0,)} if args.quick else {}))
        cmd = f"python benchmarks/methods_deep.py --only {name}" + (" --quick" if args.quick else "")
        notes = res.get("notes", "")
        if res.get("plots"):
            notes += " Plots: " + ", ".join(f"plots/{p.split('/')[-1]}" for p in map(str, res["plots"]))
        extra = []
        if res.get("comparisons"):
            extra.append(("Paired differences over seeds and the paper's direction", COMPARISON_COLUMNS,
                          res["comparisons"]))
        extra += [tuple(t) for t in res.get("extra_tables", [])]
        write_table(f"methods_deep_{name.replace('-', '_')}", "cpu", res["columns"], res["rows"], cmd, notes=notes,
                    extra=extra)
        (RESULTS / f"methods_deep_{name.replace('-', '_')}_raw.json").write_text(json.dumps(res.get("raw", {}), indent=1, default=str))


if __name__ == "__main__":
    main()
