"""promptinit quiets Hugging Face's progress bars only around its own loads (STYLE 21)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import huggingface_hub.utils as hub_utils
import pytest
from transformers.utils import logging as hf_logging

from promptinit.progress import quiet_hf_progress

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def hf_bars():
    """transformers' and huggingface_hub's switches as this test found them, restored after."""
    before = hf_logging.is_progress_bar_enabled(), hub_utils.are_progress_bars_disabled()
    yield
    hf_logging.enable_progress_bar() if before[0] else hf_logging.disable_progress_bar()
    hub_utils.disable_progress_bars() if before[1] else hub_utils.enable_progress_bars()


@pytest.mark.parametrize("enabled", [True, False])
def test_quiet_hf_progress_restores_the_switch_it_found(hf_bars, enabled):
    hf_logging.enable_progress_bar() if enabled else hf_logging.disable_progress_bar()
    with quiet_hf_progress("transformers"):
        assert not hf_logging.is_progress_bar_enabled()
    assert hf_logging.is_progress_bar_enabled() is enabled


def test_quiet_hf_progress_restores_after_an_error_and_keeps_hub_bars_off_if_they_were(hf_bars):
    hf_logging.enable_progress_bar()
    hub_utils.disable_progress_bars()  # a user who switched off only huggingface_hub's bars
    with pytest.raises(RuntimeError), quiet_hf_progress("transformers"):
        raise RuntimeError("load failed")
    assert hf_logging.is_progress_bar_enabled() and hub_utils.are_progress_bars_disabled()


def test_quiet_hf_progress_names_unknown_libraries():
    with pytest.raises(ValueError, match="torch"), quiet_hf_progress("torch"):
        pass


def test_loading_a_backbone_leaves_transformers_bars_on_and_shows_none_of_its_own():
    """In a fresh process, as a user's script: importing promptinit and loading a model must not
    switch off the bars of the user's own transformers calls."""
    script = ("from transformers.utils import logging as hf_logging\n"
              "from promptinit.backbones import Backbone, BackboneConfig\n"
              "assert hf_logging.is_progress_bar_enabled()\n"
              "Backbone(BackboneConfig('tiny-llama', device='cpu'))\n"
              "print(hf_logging.is_progress_bar_enabled())\n")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "True"
    assert "Loading weights" not in proc.stderr, proc.stderr
