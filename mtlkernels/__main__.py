"""Command line: `mtlkernels COMMAND` or `python -m mtlkernels COMMAND`.

Commands:
  info   how the native extension was built (JSON)
  demo   the main job on bundled offline data, printing a results table
"""

from __future__ import annotations

import argparse
import json
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="mtlkernels", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("info", help="print build_info() as JSON")
    demo = sub.add_parser("demo", help="run the main job on bundled offline data")
    demo.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    import mtlkernels

    if args.command == "info":
        print(json.dumps(mtlkernels.build_info(), indent=1))
    elif args.command == "demo":
        from mtlkernels import demo as demo_mod

        demo_mod.main(seed=args.seed)
    return 0


if __name__ == "__main__":
    sys.exit(main())
