"""Frozen language models with a shallow soft prompt.

The core is a pure function ``Backbone.loss(prompt, batch)``: the model's weights are frozen
and never change, the prompt is an input tensor, so methods can pass adapted prompts (MAML)
and differentiate through them. Scoring ranks options by log-likelihood and computes only the
logits it needs; causal models run prompt + input once and share its key/value cache across
all options.
"""

from promptinit.backbones.backbone import Backbone, BackboneConfig, Batch, Family, init_prompt
from promptinit.backbones.prompts import PromptInit, load_prompt, save_prompt

__all__ = [
    "Backbone",
    "BackboneConfig",
    "Batch",
    "Family",
    "PromptInit",
    "init_prompt",
    "load_prompt",
    "save_prompt",
]
