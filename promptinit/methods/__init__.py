"""Upstream methods that learn a prompt initialisation (see ``promptinit.methods.base``).

Importing this package registers every method; build one by name with ``build_method``.
"""

from promptinit.methods.base import REGISTRY, Method, UpstreamMethod, build_method, make_config, register
from promptinit.methods.checkpoint import load_checkpoint, save_checkpoint

# Each import below registers its method(s) in REGISTRY, in this order (REGISTRY's order, which
# isort would change); a new method adds one line.
# isort: off
from promptinit.methods import pt  # noqa: F401 - imported to register the method
from promptinit.methods import mtl  # noqa: F401 - imported to register the method
from promptinit.methods import maml  # noqa: F401 - imported to register the method
from promptinit.methods import reptile  # noqa: F401 - imported to register the method
from promptinit.methods import supmer  # noqa: F401 - imported to register the method
from promptinit.methods import metapt  # noqa: F401 - imported to register the method
# isort: on

__all__ = [
    "REGISTRY",
    "Method",
    "UpstreamMethod",
    "build_method",
    "make_config",
    "register",
    "save_checkpoint",
    "load_checkpoint",
]
