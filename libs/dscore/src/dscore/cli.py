"""The `dscore` command line: `dscore demo | check | sim | bench ...`.

Each subcommand lives beside the code it drives and is imported only when chosen, so `dscore check` does
not pay for importing the runtime.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

Runner = Callable[[argparse.Namespace], int]


def _build_parser() -> argparse.ArgumentParser:
    from dscore.codec_bench import add_bench_codec_parser, run_bench_codec

    parser = argparse.ArgumentParser(prog="dscore", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)

    bench = commands.add_parser("bench", help="benchmarks; each prints ratios against a same-run baseline")
    benches = bench.add_subparsers(dest="bench", required=True)
    add_bench_codec_parser(benches).set_defaults(func=run_bench_codec)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = _build_parser()
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    func: Runner = args.func
    return func(args)


if __name__ == "__main__":
    raise SystemExit(main())
