"""CogVLAConfig validation, strict construction and the CogVLA presets."""

from __future__ import annotations

import pytest
import torch
from vla_policy.model.cogvla.config import CogVLAConfig
from vla_policy.model.config import BackboneConfig
from vla_policy.model.policy import VLAModel
from vla_policy.model.presets import get_preset
from vla_policy.strict_config import ConfigError, from_dict, replace, to_dict


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"prune_layers": (1,), "prune_keep_ratios": ()}, "same length"),
        ({"prune_layers": (1, 0), "prune_keep_ratios": (0.5, 0.5)}, "strictly increasing"),
        ({"prune_layers": (0, 1), "prune_keep_ratios": (0.5, 0.7)}, "must not increase"),
        ({"prune_layers": (0,), "prune_keep_ratios": (0.0,)}, r"\(0, 1\]"),
        ({"parallel_action_chunking": False}, "causal action decoding"),
        ({"lora_targets": ("vit",)}, "lora_targets"),
        ({"aggregation_tokens": -1}, "aggregation_tokens"),
    ],
)
def test_invalid_values_rejected(options: dict[str, object], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        CogVLAConfig(**options)  # type: ignore[arg-type]


def test_prune_layer_beyond_select_layer_rejected() -> None:
    with pytest.raises(ConfigError, match="select_layer"):
        from_dict(BackboneConfig, {"cogvla": {"prune_layers": [2], "prune_keep_ratios": [0.5]}})


def test_from_dict_strict_and_round_trip() -> None:
    with pytest.raises(ConfigError, match="did you mean 'aggregation_tokens'"):
        from_dict(BackboneConfig, {"cogvla": {"aggregation_token": 4}})
    cfg = get_preset("tiny-cogvla").backbone
    assert from_dict(BackboneConfig, to_dict(cfg)) == cfg


def test_full_size_cogvla_preset_builds_on_meta() -> None:
    with torch.device("meta"):
        model = VLAModel(get_preset("groot-n1.5-cogvla"))
    parts = model.backbone.cogvla
    assert parts.aggregation.tokens.shape == (1, 64, 1152)
    assert parts.dino.model.config.hidden_size == 1024
    assert parts.pruner.kept == (144, 96, 48)


def test_pruning_with_a_layer_kv_expert_is_refused() -> None:
    cogvla = get_preset("tiny-cogvla")
    assert cogvla.backbone.cogvla is not None and cogvla.backbone.cogvla.prune_layers
    pi0 = get_preset("pi0-tiny")
    with pytest.raises(ConfigError, match="prune_layers needs the dit_cross_attention expert"):
        replace(pi0, backbone=replace(pi0.backbone, cogvla=cogvla.backbone.cogvla))
