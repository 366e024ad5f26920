"""Action experts by name: ``ModelConfig.expert`` picks one.

An expert is an nn.Module built from the ModelConfig, registered as ``action_head`` in the state dict,
with ``prepare_prefix(features, mask) -> PrefixOutput``, ``predict_chunk(prefix, state, noise=None,
rtc=None, **kw) -> [B, T, 16]`` (normalised) and ``compute_loss(prefix, state, actions, action_mask,
embodiment_id)``.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from vla_policy.model.action_head import FlowMatchingActionHead
from vla_policy.model.config import ModelConfig
from vla_policy.model.experts.deep_fusion_expert import DeepFusionExpert
from vla_policy.model.experts.kv_cache_expert import KVCacheExpert
from vla_policy.strict_config import ConfigError, nearest_name

ExpertFactory = Callable[[ModelConfig], nn.Module]
EXPERTS: dict[str, ExpertFactory] = {
    "dit_cross_attention": FlowMatchingActionHead,  # GR00T N1.5
    "deep_fusion": DeepFusionExpert,  # PI0
    "kv_cache_expert": KVCacheExpert,  # Alpamayo-R1
}


def build_expert(config: ModelConfig) -> nn.Module:
    """The expert ``config.expert`` names; ``ConfigError`` suggests the nearest name."""
    if config.expert not in EXPERTS:
        hint = nearest_name(config.expert, sorted(EXPERTS))
        raise ConfigError(
            f"unknown expert '{config.expert}'"
            + (f"; did you mean '{hint}'?" if hint else f"; known: {sorted(EXPERTS)}")
        )
    return EXPERTS[config.expert](config)
