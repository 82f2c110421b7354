"""Verbosity of the ``promptinit`` command: ``-q`` / ``-v`` set the ``promptinit`` logger.

Library modules only log (``logging.getLogger(__name__)``); what reaches the terminal is
decided here, once, by the command line. Only the ``promptinit`` logger is configured: the
root logger and other libraries' loggers stay as the user set them.
"""

from __future__ import annotations

import argparse
import logging
import sys

LOGGER = "promptinit"
LEVELS = {-1: logging.WARNING, 0: logging.INFO, 1: logging.DEBUG}
FORMATS = {logging.INFO: "%(message)s", logging.DEBUG: "%(levelname)s %(name)s: %(message)s"}


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is when a record comes, as logging's own last-resort
    handler does: test runners and notebooks swap the stream after the handler is made.
    Its type marks the handler ``setup_logging`` installed, so a second call reuses it."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:
        pass  # always the current sys.stderr


def setup_logging(verbosity: int) -> None:
    """Point the ``promptinit`` logger at stderr at the level ``verbosity`` asks for.

    Calling it again changes the level and format; it never adds a second handler.

    Args:
        verbosity: -1 (``-q``): warnings and errors only, and no progress bars; 0: progress
            and status messages (INFO); 1 or more (``-v``): DEBUG, each line naming its
            level and logger.

    Returns:
        None.
    """
    level = LEVELS[max(-1, min(1, verbosity))]
    logger = logging.getLogger(LOGGER)
    handler = next((h for h in logger.handlers if isinstance(h, _StderrHandler)), None)
    if handler is None:
        handler = _StderrHandler()
        logger.addHandler(handler)
    handler.setFormatter(logging.Formatter(FORMATS.get(level, FORMATS[logging.INFO])))
    logger.setLevel(level)


def add_verbosity_flags(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add ``-q/--quiet`` and ``-v/--verbose`` (repeatable) to ``parser``.

    The flags default to ``argparse.SUPPRESS``, so a subcommand's parser that also has them
    (through a parent parser) does not reset what was given before the subcommand's name.

    Args:
        parser: a parser, or a parent parser (``add_help=False``) for subcommands.

    Returns:
        ``parser``.
    """
    group = parser.add_argument_group("output")
    group.add_argument(
        "-q", "--quiet", action="count", default=argparse.SUPPRESS, help="only warnings and errors; no progress bars"
    )
    group.add_argument(
        "-v", "--verbose", action="count", default=argparse.SUPPRESS, help="more detail (debug messages); repeatable"
    )
    return parser


def verbosity(args: argparse.Namespace) -> int:
    """The verbosity the flags ask for: ``-v`` count minus ``-q`` count (0 without flags).

    Args:
        args: parsed arguments of a parser with ``add_verbosity_flags``.

    Returns:
        An int: negative is quieter, positive more verbose (``setup_logging`` clamps it).
    """
    return getattr(args, "verbose", 0) - getattr(args, "quiet", 0)
