"""Progress bars under promptinit's verbosity, and Hugging Face's bars quiet only where we ask.

``progress_bar`` is the one way promptinit shows a bar: it is off under ``-q`` (the
``promptinit`` logger set above INFO, ``promptinit.logs.setup_logging``) and, as tqdm decides,
when stderr is not a terminal. ``quiet_hf_progress`` hides the bars transformers and datasets
draw while promptinit loads a model or a dataset, and gives the switch back as it found it:
a user who imports those libraries next to promptinit keeps their bars.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from contextlib import ExitStack, contextmanager
from typing import Any

from tqdm.auto import tqdm

LOGGER = "promptinit"  # the package logger whose level decides
HF_LIBRARIES = ("transformers", "datasets")


def bars_enabled() -> bool:
    """Whether promptinit's progress bars may show: not when its logger is set above INFO.

    Returns:
        False under ``-q`` (or any level above INFO set on the ``promptinit`` logger); True when
        that logger is left unset, since the root logger's default WARNING is no request for
        quiet from a library user who configured nothing.
    """
    return logging.getLogger(LOGGER).level <= logging.INFO


def progress_bar(
    iterable: Iterable | None = None,
    *,
    total: float | None = None,
    desc: str | None = None,
    unit: str = "it",
    disable: bool = False,
    **tqdm_kwargs: Any,
) -> tqdm:
    """A tqdm progress bar that keeps quiet under ``-q``.

    Args:
        iterable: what to iterate over; None for a bar updated by hand (``bar.update(n)``).
        total: the expected number of iterations (default: ``len(iterable)`` when it has one).
        desc: the label before the bar.
        unit: what one iteration is (``"step"``, ``"it"``).
        disable: the caller's own switch (its ``progress=False`` argument).
        **tqdm_kwargs: further tqdm arguments (``leave``, ``initial``, ...).

    Returns:
        The bar; disabled when ``disable`` is set, when ``bars_enabled()`` is False, or when
        stderr is not a terminal (tqdm's ``disable=None``).
    """
    off = disable or not bars_enabled()
    return tqdm(iterable, total=total, desc=desc, unit=unit, disable=True if off else None, **tqdm_kwargs)


@contextmanager
def quiet_hf_progress(*libraries: str) -> Iterator[None]:
    """Hugging Face's own progress bars off inside the block, and as they were after it.

    Args:
        *libraries: ``"transformers"`` (its bars and huggingface_hub's, which it switches
            together) and/or ``"datasets"``; none given: both.

    Returns:
        A context manager.
    """
    unknown = sorted(set(libraries) - set(HF_LIBRARIES))
    if unknown:
        raise ValueError(f"quiet_hf_progress: {unknown} not among {list(HF_LIBRARIES)}")
    switches = {"transformers": _quiet_transformers, "datasets": _quiet_datasets}
    with ExitStack() as stack:
        for name in libraries or HF_LIBRARIES:
            stack.enter_context(switches[name]())
        yield


@contextmanager
def _quiet_transformers() -> Iterator[None]:
    import huggingface_hub.utils as hub_utils
    from transformers.utils import logging as hf_logging

    was_enabled = hf_logging.is_progress_bar_enabled()
    hub_was_disabled = hub_utils.are_progress_bars_disabled()
    if was_enabled:
        hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            hf_logging.enable_progress_bar()  # switches huggingface_hub's bars on as well
            if hub_was_disabled:
                hub_utils.disable_progress_bars()


@contextmanager
def _quiet_datasets() -> Iterator[None]:
    from datasets import utils as ds_utils

    was_disabled = ds_utils.are_progress_bars_disabled()
    if not was_disabled:
        ds_utils.disable_progress_bars()
    try:
        yield
    finally:
        if not was_disabled:
            ds_utils.enable_progress_bars()
