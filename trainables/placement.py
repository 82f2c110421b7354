"""Where a trial or a job runs: the facts a GPU cluster's placement is checked by.

A trial reports them with every result (``trainable.PLACEMENT``); a job of the phases after the
search keeps them with its result (``search.phases.jobs.Ran``). Ray assigns GPUs by setting
``CUDA_VISIBLE_DEVICES``; when torch nevertheless sees no CUDA device (a node that declares GPUs
it lacks, a CPU-only torch) the work runs on the CPU, and says so in one warning line.
"""

from __future__ import annotations

import logging
import os
from typing import Any

logger = logging.getLogger(__name__)


def placement(what: str) -> dict[str, Any]:
    """``{"node", "gpu_ids", "cuda_visible_devices", "device"}`` of the calling Ray worker.

    ``gpu_ids`` is a string (``"0,1"``; empty without GPUs) so Tune's loggers keep it as text;
    ``node`` is empty outside Ray (unit tests: ``ray.get_gpu_ids()`` would start a Ray there).
    Logs one warning naming ``what`` ("trial", "job") when Ray assigned a GPU torch cannot see.
    """
    import ray
    import torch

    on_ray = ray.is_initialized()
    gpus = ",".join(str(g) for g in ray.get_gpu_ids()) if on_ray else ""
    cuda = os.environ.get("CUDA_VISIBLE_DEVICES")
    device = "cuda" if torch.cuda.is_available() else "cpu"
    if gpus and device == "cpu":
        logger.warning(
            "Ray gave this %s GPU %s (CUDA_VISIBLE_DEVICES=%s) but torch sees no CUDA device: running on the CPU",
            what,
            gpus,
            cuda,
        )
    node = ray.get_runtime_context().get_node_id() if on_ray else ""
    return {"node": node, "gpu_ids": gpus, "cuda_visible_devices": cuda, "device": device}
