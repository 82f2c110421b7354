"""The ``promptinit`` command. Each module in ``promptinit.commands`` adds one subcommand.

A module there defines ``register(subparsers)``, which adds its parser and sets
``func=run`` where ``run(args) -> int`` is the exit code. ``PromptinitError`` anywhere
becomes one line on stderr and exit code 2. Every parser, the main one and each
subcommand's, takes ``-q`` / ``-v`` (``promptinit.logs``): results go to stdout, status and
progress to stderr through the ``promptinit`` logger.

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
from promptinit.logs import add_verbosity_flags, setup_logging, verbosity


class CommandParser(argparse.ArgumentParser):
    """An ``ArgumentParser`` with ``-q`` / ``-v``: the class of the main parser and of every
    subcommand's, those added through entry points included (``add_subparsers(parser_class=...)``)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        add_verbosity_flags(self)


def build_parser() -> argparse.ArgumentParser:
    import promptinit.commands as commands

    parser = CommandParser(
        prog="promptinit", description="Search, evaluate and export meta-learned soft-prompt initialisations."
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=CommandParser)
    for info in sorted(pkgutil.iter_modules(commands.__path__), key=lambda m: m.name):
        importlib.import_module(f"promptinit.commands.{info.name}").register(sub)
    for ep in sorted(entry_points(group="promptinit.commands"), key=lambda e: e.name):
        ep.load()(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(verbosity(args))
    try:
        return int(args.func(args) or 0)
    except PromptinitError as err:
        print(f"promptinit {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
