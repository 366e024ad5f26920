"""Aggregation tokens: only the N learned tokens leave the ViT, and the prompt carries N per image."""

from __future__ import annotations

import torch
from cogvla_helpers import cog_config, cog_policy, observation
from vla_policy.model.cogvla.aggregation_tokens import AggregationTokens
from vla_policy.model.cogvla.backbone import token_counts
from vla_policy.model.presets import get_preset


def test_append_and_select_shapes() -> None:
    agg = AggregationTokens(4, 8)
    x = torch.randn(6, 16, 8)
    y = agg.append(x)
    assert y.shape == (6, 20, 8)
    assert torch.equal(agg.select(y), agg.tokens.expand(6, -1, -1))


def test_prompt_and_vision_token_counts() -> None:
    """tiny: 3 cameras x 16 patches = 48 image tokens; with 4 aggregation tokens, 3 x 4 = 12."""
    policy = cog_policy(aggregation_tokens=4)
    assert policy.config.backbone.num_image_tokens == 12
    inputs = policy.prepare_inputs([observation(policy)])
    assert int((inputs["input_ids"] == policy.tokenizer.image_id).sum()) == 12
    with torch.inference_mode():
        vit = policy.model.backbone.encode_images(inputs["pixel_values"])
        prefix = policy.encode_prefix(observation(policy))
    assert vit.shape == (3, 4, 64)
    assert prefix.features.shape == (1, inputs["input_ids"].shape[1], 64)


def test_full_size_counts_256_to_64() -> None:
    cfg = get_preset("groot-n1.5-cogvla").backbone
    counts = token_counts(cfg, text_tokens=20)
    assert counts["vit_tokens_per_image"] == 256 + 64
    assert counts["image_tokens_per_image"] == 64
    assert counts["image_tokens"] == 3 * 64
    assert counts["llm_tokens_per_layer"][:4] == [213, 213, 213, 1 + 144 + 20]
    # groot-n1.5 itself: Eagle's pixel shuffle already gives 64 tokens per image (256 patches / 4)
    assert token_counts(get_preset("groot-n1.5").backbone, 20)["llm_input_tokens"] == 1 + 192 + 20


def test_default_backbone_unchanged() -> None:
    assert cog_config().backbone.num_image_tokens == get_preset("tiny-seed").backbone.num_image_tokens == 48
