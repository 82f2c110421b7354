"""Subcommands of the ``promptinit`` CLI, one module each (see ``promptinit.cli``)."""
