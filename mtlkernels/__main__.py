"""Command line: `mtlkernels COMMAND` or `python -m mtlkernels COMMAND`.

Commands:
  info               how the native extension was built (JSON)
  demo               every method and its baselines on bundled offline data, one results table
  run METHOD         one experiment (see `mtlkernels run --help` for the names)

Options of demo and run: ``--out DIR`` (one JSON per method, written before its plots; the
demo also writes ``results.json``), ``--full``, ``--seed``, ``--device`` (for the experiments
that take one), ``--threads`` (torch intra-op threads), ``-v`` (log training progress; before
or after the command). ``--version`` prints the package version.

Across processes: `torchrun --nproc_per_node=4 -m mtlkernels run joint-irls --distributed`.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("mtlkernels")
    except PackageNotFoundError:  # a source checkout without an install
        return "unknown (not installed)"


def _parser(experiments, aliases) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mtlkernels", description="mtlkernels command line")
    parser.add_argument("--version", action="version", version=f"mtlkernels {_version()}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log training progress")
    # -v after the command too (SUPPRESS: the command's default does not override the top level's -v)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS,
                        help="log training progress")
    work = argparse.ArgumentParser(add_help=False)
    work.add_argument("--out", default="mtlkernels-results",
                      help="folder for one JSON per method (written before its plots) and the PNG plots")
    work.add_argument("--full", action="store_true", help="the benchmark settings (>= 3 seeds; slower)")
    work.add_argument("--seed", type=int, default=0)
    work.add_argument("--device", default="cpu",
                      help="torch device for the experiments that take one (cpu, cuda, cuda:1, ...)")
    work.add_argument("--threads", type=int, default=1,
                      help="torch intra-op threads (default 1: the networks are tiny and one thread is fastest)")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("info", help="print build_info() as JSON", parents=[common])
    sub.add_parser("demo", help="run every method on bundled offline data and print one results table",
                   parents=[common, work])
    run = sub.add_parser("run", help="run one method's experiment", parents=[common, work],
                         description="methods: " + "; ".join(f"{k} ({v[2]})" for k, v in experiments.items()))
    run.add_argument("method", choices=list(experiments) + list(aliases), metavar="METHOD",
                     help="one of: " + ", ".join(experiments))
    run.add_argument("--distributed", action="store_true",
                     help="under torchrun: spread the networks over the processes (joint-irls; gloo, Jacobi schedule)")
    return parser


def main(argv: list[str] | None = None) -> int:
    from mtlkernels.experiments.registry import ALIASES, EXPERIMENTS

    parser = _parser(EXPERIMENTS, ALIASES)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(name)s: %(message)s")

    import mtlkernels

    if args.command == "info":
        print(json.dumps(mtlkernels.build_info(), indent=1))
        return 0
    from mtlkernels import demo as demo_mod
    from mtlkernels.linear._base import check_device

    if args.threads < 1:
        parser.error(f"--threads must be a positive integer, got {args.threads}")
    try:
        check_device(args.device)
        if not getattr(args, "distributed", False) or _rank() == 0:
            demo_mod.check_out_dir(args.out)
    except ValueError as e:
        parser.error(str(e).replace("device=", "--device ", 1))
    methods = [ALIASES.get(args.method, args.method)] if args.command == "run" else None
    try:
        demo_mod.main(out=args.out, full=args.full, methods=methods, seed=args.seed, threads=args.threads,
                      distributed=getattr(args, "distributed", False), device=args.device)
    except ValueError as e:
        if "--distributed" not in str(e):
            raise
        parser.error(str(e))
    return 0


def _rank() -> int:
    import os

    return int(os.environ.get("RANK", "0"))


if __name__ == "__main__":
    sys.exit(main())
