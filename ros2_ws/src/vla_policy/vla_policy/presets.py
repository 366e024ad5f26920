"""Named size presets: ``tiny`` (CPU default) and ``groot-n1.5`` (the full seed-000 shapes)."""

from __future__ import annotations

from collections.abc import Callable

from vla_policy.config import (
    ActionHeadConfig,
    BackboneConfig,
    DecoderConfig,
    DiTConfig,
    LanguageConfig,
    ModelConfig,
    VisionConfig,
)
from vla_policy.strict_config import ConfigError, nearest_name


def tiny() -> ModelConfig:
    """CPU default: 16 patches per camera, 2-layer SigLIP/Qwen3 at width 64, 4-block DiT at width 64."""
    return ModelConfig(
        name="tiny",
        backbone=BackboneConfig(
            vision=VisionConfig(
                hidden_size=64,
                intermediate_size=128,
                num_hidden_layers=2,
                num_attention_heads=2,
                image_size=64,
                patch_size=16,
            ),
            language=LanguageConfig(
                vocab_size=512,
                hidden_size=64,
                intermediate_size=128,
                num_hidden_layers=2,
                select_layer=2,
                num_attention_heads=4,
                num_key_value_heads=2,
                head_dim=16,
            ),
        ),
        action_head=ActionHeadConfig(
            input_embedding_dim=64,
            hidden_size=64,
            vl_self_attention_layers=2,
            vl_self_attention_heads=4,
            dit=DiTConfig(num_layers=4, num_attention_heads=4, attention_head_dim=16, output_dim=64),
        ),
        decoder=DecoderConfig(hidden_size=64, cross_attention_heads=4),
    )


def groot_n15() -> ModelConfig:
    """GR00T N1.5 shapes (seed 000): SigLIP so400m at 224/14, Qwen3-1.7B cut at layer 12, DiT 16 x 1536."""
    return ModelConfig(
        name="groot-n1.5",
        backbone=BackboneConfig(
            vision=VisionConfig(
                hidden_size=1152,
                intermediate_size=4304,
                num_hidden_layers=27,
                num_attention_heads=16,
                image_size=224,
                patch_size=14,
            ),
            language=LanguageConfig(
                vocab_size=151680,
                hidden_size=2048,
                intermediate_size=6144,
                num_hidden_layers=28,
                select_layer=12,
                num_attention_heads=16,
                num_key_value_heads=8,
                head_dim=128,
                max_position_embeddings=40960,
            ),
            max_text_tokens=128,
        ),
        action_head=ActionHeadConfig(
            input_embedding_dim=1536,
            hidden_size=1024,
            vl_self_attention_layers=4,
            vl_self_attention_heads=32,
            num_embodiments=32,  # GR00T's max_num_embodiments
            dit=DiTConfig(
                num_layers=16, num_attention_heads=32, attention_head_dim=48, output_dim=1024, norm_eps=1e-6
            ),
        ),
        decoder=DecoderConfig(hidden_size=1024, cross_attention_heads=4),
    )


PRESETS: dict[str, Callable[[], ModelConfig]] = {"tiny": tiny, "groot-n1.5": groot_n15}


def get_preset(name: str) -> ModelConfig:
    """The preset called ``name``; an unknown name raises ConfigError naming the nearest one."""
    if name not in PRESETS:
        hint = nearest_name(name, PRESETS)
        suggestion = f"; did you mean '{hint}'?" if hint else f"; valid presets: {', '.join(PRESETS)}"
        raise ConfigError(f"unknown preset '{name}'{suggestion}")
    return PRESETS[name]()
