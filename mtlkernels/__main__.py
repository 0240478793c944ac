"""Command line: `mtlkernels COMMAND` or `python -m mtlkernels COMMAND`.

Commands:
  info               how the native extension was built (JSON)
  demo               every method and its baselines on bundled offline data, one results table
  run METHOD         one experiment (see `mtlkernels run --help` for the names)

Across processes: `torchrun --nproc_per_node=4 -m mtlkernels run joint-irls --distributed`.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys


def main(argv: list[str] | None = None) -> int:
    from mtlkernels.experiments.registry import ALIASES, EXPERIMENTS

    parser = argparse.ArgumentParser(prog="mtlkernels", description="mtlkernels command line")
    parser.add_argument("-v", "--verbose", action="store_true", help="log training progress")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("info", help="print build_info() as JSON")
    demo = sub.add_parser("demo", help="run every method on bundled offline data and print one results table")
    demo.add_argument("--out", default="mtlkernels-results", help="folder for results.json and the plots")
    demo.add_argument("--full", action="store_true", help="the benchmark settings (>= 3 seeds; slower)")
    demo.add_argument("--seed", type=int, default=0)
    run = sub.add_parser("run", help="run one method's experiment",
                         description="methods: " + "; ".join(f"{k} ({v[2]})" for k, v in EXPERIMENTS.items()))
    run.add_argument("method", choices=list(EXPERIMENTS) + list(ALIASES), metavar="METHOD",
                     help="one of: " + ", ".join(EXPERIMENTS))
    run.add_argument("--out", default="mtlkernels-results")
    run.add_argument("--full", action="store_true")
    run.add_argument("--seed", type=int, default=0)
    run.add_argument("--distributed", action="store_true",
                     help="under torchrun: spread the networks over the processes (joint-irls; gloo, Jacobi schedule)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(name)s: %(message)s")

    import mtlkernels

    if args.command == "info":
        print(json.dumps(mtlkernels.build_info(), indent=1))
    else:
        from mtlkernels import demo as demo_mod

        methods = [ALIASES.get(args.method, args.method)] if args.command == "run" else None
        try:
            demo_mod.main(out=args.out, full=args.full, methods=methods, seed=args.seed,
                          distributed=getattr(args, "distributed", False))
        except ValueError as e:
            if "--distributed" not in str(e):
                raise
            parser.error(str(e))
    return 0


if __name__ == "__main__":
    sys.exit(main())
