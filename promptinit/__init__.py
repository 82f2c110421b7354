"""promptinit: search for meta-learned soft-prompt initialisations."""

from promptinit.errors import PromptinitError

__all__ = ["PromptinitError"]
__version__ = "0.1.0"
