"""Named size presets: ``tiny`` (CPU default) and ``groot-n1.5`` (the full GR00T N1.5 shapes).

``groot-n1.5`` is the reference architecture exactly (what ``vla-policy import`` loads GR00T N1.5
checkpoints into) and ``tiny`` is its small twin: attention biases, no VL attention mask, DiT eps 1e-5,
the single decoder over all 32 padded action dims, Eagle's pixel-shuffle projector, Eagle's image resize,
dropout 0.2 and N(0, 0.02) initialisation. The other presets keep the seed's
architecture (:func:`seed_architecture`): split left/right/claw decoder, linear projector.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

from vla_policy.model.cogvla.config import CogVLAConfig, DinoV2Config
from vla_policy.model.config import (
    ActionHeadConfig,
    BackboneConfig,
    DecoderConfig,
    DiTConfig,
    FusionExpertConfig,
    LanguageConfig,
    ModelConfig,
    VisionConfig,
)
from vla_policy.strict_config import ConfigError, nearest_name


def reference_architecture(config: ModelConfig) -> ModelConfig:
    """``config`` with GR00T N1.5's architecture (see the module docstring); sizes unchanged."""
    h = config.action_head
    return dataclasses.replace(
        config,
        backbone=dataclasses.replace(
            config.backbone,
            projector="eagle",
            pixel_shuffle=True,
            projector_layers=2,
            image_preprocessing="eagle",
        ),
        action_head=dataclasses.replace(
            h,
            action_dim=h.max_action_dim,
            attention_bias=True,
            use_vl_mask=False,
            dropout=0.2,
            init_std=0.02,
            dit=dataclasses.replace(h.dit, norm_eps=1e-5),
        ),
        decoder=dataclasses.replace(config.decoder, layout="reference", hidden_size=h.hidden_size),
    )


def seed_architecture(config: ModelConfig) -> ModelConfig:
    """``config`` with the seed's architecture: the state of a config.json without the reference keys."""
    defaults = (BackboneConfig(), ActionHeadConfig(), DecoderConfig())
    b, h, d = defaults
    return dataclasses.replace(
        config,
        backbone=dataclasses.replace(
            config.backbone,
            projector=b.projector,
            pixel_shuffle=b.pixel_shuffle,
            projector_layers=b.projector_layers,
            prompt=b.prompt,
            image_preprocessing=b.image_preprocessing,
        ),
        action_head=dataclasses.replace(
            config.action_head,
            action_dim=d.output_dim,
            attention_bias=h.attention_bias,
            use_vl_mask=h.use_vl_mask,
            dropout=h.dropout,
            init_std=h.init_std,
        ),
        decoder=dataclasses.replace(config.decoder, layout=d.layout, group_spans=d.group_spans),
    )


def _tiny_sizes() -> ModelConfig:
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


def tiny() -> ModelConfig:
    """CPU default, the small twin of groot-n1.5: 4 image tokens per camera (16 patches, pixel shuffle),
    2-layer SigLIP/Qwen3 at width 64, 4-block DiT at width 64, the reference decoder over 32 dims."""
    return reference_architecture(_tiny_sizes())


def tiny_seed() -> ModelConfig:
    """``tiny`` with the seed's architecture (split decoder, 16 actions): what older checkpoints hold."""
    return seed_architecture(_tiny_sizes())


def groot_n15() -> ModelConfig:
    """GR00T N1.5 exactly: SigLIP so400m at 224/14 with Eagle's pixel-shuffle projector (64 tokens per
    image), Qwen3-1.7B cut at layer 12, DiT 16 x 1536, one 1024 -> 1024 -> 32 decoder."""
    return reference_architecture(_groot_n15_sizes())


def _groot_n15_sizes() -> ModelConfig:
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
            dit=DiTConfig(num_layers=16, num_attention_heads=32, attention_head_dim=48, output_dim=1024),
        ),
        decoder=DecoderConfig(hidden_size=1024, cross_attention_heads=4),
    )


def pi0_tiny() -> ModelConfig:
    """``deep_fusion`` (PI0) on the tiny backbone: expert width 32 (half the LLM's), 10 PI0 steps."""
    return dataclasses.replace(
        tiny_seed(),
        name="pi0-tiny",
        expert="deep_fusion",
        fusion_expert=FusionExpertConfig(hidden_size=32, intermediate_size=64, time_features=32),
        num_inference_steps=10,
    )


def pi0() -> ModelConfig:
    """PI0 shapes (``describe`` on the meta device): PaliGemma-like prefix (SigLIP so400m 224/14, a 2B
    LM with 18 layers, width 2048, 8 heads, 1 KV head, head_dim 256; built as Qwen3 layers) and a
    Gemma-300M-like expert (width 1024, MLP 4096) sharing its head space; horizon 50, 10 steps."""
    base = seed_architecture(_groot_n15_sizes())
    return dataclasses.replace(
        base,
        name="pi0",
        expert="deep_fusion",
        backbone=dataclasses.replace(
            base.backbone,
            language=LanguageConfig(
                vocab_size=257152,
                hidden_size=2048,
                intermediate_size=16384,
                num_hidden_layers=18,
                select_layer=18,
                num_attention_heads=8,
                num_key_value_heads=1,
                head_dim=256,
                max_position_embeddings=8192,
                rope_theta=10000.0,
            ),
            max_text_tokens=48,
        ),
        fusion_expert=FusionExpertConfig(hidden_size=1024, intermediate_size=4096, time_features=1024),
        action_horizon=50,
        num_inference_steps=10,
    )


def alpamayo_tiny() -> ModelConfig:
    """``kv_cache_expert`` (Alpamayo-R1) on the tiny backbone: the expert is configured like the LLM."""
    return dataclasses.replace(
        tiny_seed(),
        name="alpamayo-tiny",
        expert="kv_cache_expert",
        fusion_expert=FusionExpertConfig(time_features=32),
        num_inference_steps=10,
    )


def alpamayo() -> ModelConfig:
    """Alpamayo-R1 shapes (``describe`` on the meta device): a Qwen2.5-VL-7B-like LM (28 layers, width 3584,
    28 heads, 4 KV heads, head_dim 128) whose whole KV cache feeds an expert configured like it, with a
    narrower MLP (4864, about 2.3B parameters as reported); 4 frames of history per camera."""
    base = seed_architecture(_groot_n15_sizes())
    return dataclasses.replace(
        base,
        name="alpamayo",
        expert="kv_cache_expert",
        backbone=dataclasses.replace(
            base.backbone,
            language=LanguageConfig(
                vocab_size=152064,
                hidden_size=3584,
                intermediate_size=18944,
                num_hidden_layers=28,
                select_layer=28,
                num_attention_heads=28,
                num_key_value_heads=4,
                head_dim=128,
                max_position_embeddings=128000,
                rope_theta=1_000_000.0,
            ),
            history_frames=4,
        ),
        fusion_expert=FusionExpertConfig(intermediate_size=4864, time_features=256),
        num_inference_steps=10,
    )


def tiny_cogvla() -> ModelConfig:
    """``tiny`` with every CogVLA prefix option (CogVLA): FiLM, 4 aggregation tokens per image
    (16 -> 4, CogVLA's 256 -> 64 ratio), SigLIP + DINOv2 with a router, and pruning of the image tokens
    to 1/2 before LLM layer 1 (the tiny LLM has 2 layers)."""
    base = tiny_seed()
    cog = CogVLAConfig(
        film=True,
        aggregation_tokens=4,
        dual_encoder=True,
        dino=DinoV2Config(hidden_size=64, num_hidden_layers=2, num_attention_heads=2, patch_size=16),
        prune_layers=(1,),
        prune_keep_ratios=(0.5,),
    )
    return dataclasses.replace(
        base, name="tiny-cogvla", backbone=dataclasses.replace(base.backbone, cogvla=cog)
    )


def groot_n15_cogvla() -> ModelConfig:
    """``groot-n1.5`` with CogVLA's full-size options: 64 aggregation tokens per image (256 -> 64), FiLM,
    SigLIP + DINOv2-L/14 at 224 (256 patches, as SigLIP's grid) with a router, and pruning at LLM layers
    3/6/9 keeping 75/50/25 % of the image tokens."""
    base = seed_architecture(_groot_n15_sizes())
    cog = CogVLAConfig(
        film=True,
        aggregation_tokens=64,
        dual_encoder=True,
        dino=DinoV2Config(
            hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, mlp_ratio=4, patch_size=14
        ),
        router_hidden=2048,
        prune_layers=(3, 6, 9),
        prune_keep_ratios=(0.75, 0.5, 0.25),
    )
    return dataclasses.replace(
        base, name="groot-n1.5-cogvla", backbone=dataclasses.replace(base.backbone, cogvla=cog)
    )


def tiny_aloha() -> ModelConfig:
    """``tiny`` trained from scratch on the ALOHA simulation (models/tiny-aloha-transfer-cube): every part
    trainable, since a random frozen vision encoder cannot learn where the cube is. The seed's
    architecture (split decoder, 16 actions), as the shipped policy was trained."""
    base = tiny_seed()
    return dataclasses.replace(
        base,
        name="tiny-aloha",
        backbone=dataclasses.replace(base.backbone, tune_visual=True, tune_llm=True),
    )


def tiny_aloha_crop() -> ModelConfig:
    """``tiny-aloha`` with the head camera (the sim's ``top``) cut to the table: the middle half of its
    width and two thirds of its height, so that a 96x128 frame reaches the 64x64 input at its own
    resolution, not shrunk, and the cube covers about 3x3 pixels instead of 1.5 (the model card's
    experiments)."""
    base = tiny_aloha()
    return dataclasses.replace(
        base,
        name="tiny-aloha-crop",
        backbone=dataclasses.replace(base.backbone, crops=(("head", 1 / 6, 0.25, 2 / 3, 0.5),)),
    )


PRESETS: dict[str, Callable[[], ModelConfig]] = {
    "tiny": tiny,
    "tiny-seed": tiny_seed,
    "tiny-aloha": tiny_aloha,
    "tiny-aloha-crop": tiny_aloha_crop,
    "groot-n1.5": groot_n15,
    "pi0-tiny": pi0_tiny,
    "pi0": pi0,
    "alpamayo-tiny": alpamayo_tiny,
    "alpamayo": alpamayo,
    "tiny-cogvla": tiny_cogvla,
    "groot-n1.5-cogvla": groot_n15_cogvla,
}


def get_preset(name: str) -> ModelConfig:
    """The preset called ``name``; an unknown name raises ConfigError naming the nearest one."""
    if name not in PRESETS:
        hint = nearest_name(name, PRESETS)
        suggestion = f"; did you mean '{hint}'?" if hint else f"; valid presets: {', '.join(PRESETS)}"
        raise ConfigError(f"unknown preset '{name}'{suggestion}")
    return PRESETS[name]()
