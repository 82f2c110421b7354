"""Upstream methods that learn a prompt initialisation (see ``promptinit.methods.base``).

Importing this package registers every method; build one by name with ``build_method``.
"""
from promptinit.methods.base import REGISTRY, Method, UpstreamMethod, build_method, make_config, register
from promptinit.methods.checkpoint import load_checkpoint, save_checkpoint

__all__ = ["REGISTRY", "Method", "UpstreamMethod", "build_method", "make_config", "register",
           "save_checkpoint", "load_checkpoint"]

# Each import below registers its method(s) in REGISTRY; a new method adds one line.
from promptinit.methods import pt  # noqa: E402,F401
from promptinit.methods import mtl  # noqa: E402,F401
from promptinit.methods import maml  # noqa: E402,F401
from promptinit.methods import reptile  # noqa: E402,F401
from promptinit.methods import supmer  # noqa: E402,F401
from promptinit.methods import metapt  # noqa: E402,F401
