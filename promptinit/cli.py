"""The ``promptinit`` command. Each module in ``promptinit.commands`` adds one subcommand.

A module there defines ``register(subparsers)``, which adds its parser and sets
``func=run`` where ``run(args) -> int`` is the exit code. ``PromptinitError`` anywhere
becomes one line on stderr and exit code 2.
"""
from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys

from promptinit.errors import PromptinitError


def build_parser() -> argparse.ArgumentParser:
    import promptinit.commands as commands

    parser = argparse.ArgumentParser(prog="promptinit", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for info in sorted(pkgutil.iter_modules(commands.__path__), key=lambda m: m.name):
        importlib.import_module(f"promptinit.commands.{info.name}").register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except PromptinitError as err:
        print(f"promptinit {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
