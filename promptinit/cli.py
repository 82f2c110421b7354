"""The ``promptinit`` command. Each module in ``promptinit.commands`` adds one subcommand.

A module there defines ``register(subparsers)``, which adds its parser and sets
``func=run`` where ``run(args) -> int`` is the exit code. ``PromptinitError`` anywhere
becomes one line on stderr and exit code 2.

Commands that need the platform's libraries (``report``, ``export`` of a sweep: Optuna,
MLflow) live outside the core library and join through the entry-point group
``promptinit.commands`` (each entry point is a ``register`` function), so the core never
imports Ray, Optuna or MLflow.
"""
from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys
from importlib.metadata import entry_points

from promptinit.errors import PromptinitError


def build_parser() -> argparse.ArgumentParser:
    import promptinit.commands as commands

    parser = argparse.ArgumentParser(
        prog="promptinit", description="Search, evaluate and export meta-learned soft-prompt initialisations."
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for info in sorted(pkgutil.iter_modules(commands.__path__), key=lambda m: m.name):
        importlib.import_module(f"promptinit.commands.{info.name}").register(sub)
    for ep in sorted(entry_points(group="promptinit.commands"), key=lambda e: e.name):
        ep.load()(sub)
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
