"""``vista-data``: build, convert, partition and inspect FedNLP-format data files.

Each subcommand lives in its own module, which exposes ``register(subparsers)``; that
function adds its parser and sets ``func`` to a callable ``(args) -> int`` (exit code).
Expected user errors (DataFileError, FileExistsError, ValueError) print one line and exit 1.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# module names under vista.data that provide a subcommand
COMMAND_MODULES = ("partition_cmd", "convert", "stats", "importers")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vista-data", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(f"vista.data.{name}")
        except ModuleNotFoundError as err:
            if err.name != f"vista.data.{name}":
                raise
            continue
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    from vista.data.fednlp import DataFileError

    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (DataFileError, FileExistsError, FileNotFoundError, ValueError) as err:
        print(f"vista-data {args.command}: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
