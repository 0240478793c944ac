"""Results of the feature-based methods (issue: linear methods), committed under benchmarks/results/.

Usage: python benchmarks/methods_linear.py [--quick] [--threads N]

- amtfl_synthetic (Lee et al. 2018 (Deep-AMTFL), sec. 4.1), 5 random splits: test RMSE of
  STL, Go-MTL, AMTL and AMTFL on easy, hard and all tasks (mean ± std over splits), with
  which of the paper's orderings hold and which chosen hyper-parameters sit on a grid edge;
- digits one-vs-all, balanced and imbalanced, 3 seeds: multi-class accuracy and mean AP
  of STL, AdaptiveSharing and LatentTaskMTL (without / with attribute groups).
Hyper-parameters are chosen on the validation split of each run.
"""

import argparse
import json

import torch
from common import RESULTS, write_table

from mtlkernels.experiments.linear import (digits_experiment, digits_ordering_note, digits_table, edge_note,
                                          ordering_note, synthetic_experiment, synthetic_table)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--quick", action="store_true")
    p.add_argument("--threads", type=int, default=1,
                   help="intra-op threads (default 1: small problems, and two threads stall on a busy 2-core machine)")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    splits = range(2) if args.quick else range(5)
    seeds = range(1) if args.quick else range(3)
    cmd = "python benchmarks/methods_linear.py" + (" --quick" if args.quick else "") + f" --threads {args.threads}"
    syn = synthetic_experiment(splits, quick=args.quick)
    write_table("methods_linear_synthetic", "cpu", ["method", "RMSE easy", "RMSE hard", "RMSE all", "s per split"],
                synthetic_table(syn), cmd,
                notes=f"amtfl_synthetic (task parameters with noise, Lee, Yang and Hwang (2018), sec. 4.1), "
                      f"{len(splits)} splits, mean ± std; hyper-parameters by validation RMSE; l1 on L for Go-MTL and "
                      f"AMTFL; {ordering_note(syn)} {edge_note(syn)}")
    out = {"synthetic": syn}
    for imb in (False, True):
        res = digits_experiment(imb, seeds, quick=args.quick)
        name = "digits_imbalanced" if imb else "digits"
        write_table(f"methods_linear_{name}", "cpu", ["method", "multi-class acc", "mean AP", "s per seed"],
                    digits_table(res), cmd, notes=f"{name}, one-vs-all, {len(seeds)} seeds, mean ± std; hyper-parameters by validation accuracy; "
                          f"{digits_ordering_note(res)}")
        out[name] = res
    (RESULTS / "methods_linear_cpu_full.json").write_text(json.dumps(out, indent=1, default=str))


if __name__ == "__main__":
    main()
