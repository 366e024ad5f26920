"""Language-guided token pruning: static top-k over image tokens; BOS and text always survive."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from cogvla_helpers import cog_config, cog_policy, observation
from vla_policy.model.backbone import EagleBackbone
from vla_policy.model.cogvla.token_pruning import attention_mask_4d, select_tokens
from vla_policy.model.policy import VLAPolicy


def test_select_tokens_keeps_required_tokens_even_with_lowest_scores() -> None:
    # row: [pad, BOS, img x 6, text x 3]; the non-image tokens get the worst scores
    is_image = torch.zeros(2, 11, dtype=torch.bool)
    is_image[:, 2:8] = True
    scores = torch.rand(2, 11) * 0.5 + 0.5
    scores[~is_image] = 0.0
    scores[0, 2:8] = torch.tensor([0.9, 0.1, 0.8, 0.2, 0.7, 0.3])
    keep = select_tokens(scores, is_image, num_image=6, k=3)
    assert keep.shape == (2, 11 - 6 + 3)
    assert torch.equal(keep, keep.sort(dim=1).values)  # order (causality, RoPE) preserved
    for row in keep:
        kept = set(row.tolist())
        assert {0, 1, 8, 9, 10} <= kept  # pad, BOS and text survive
        assert sum(2 <= i < 8 for i in kept) == 3
    assert set(keep[0].tolist()) & set(range(2, 8)) == {2, 4, 6}  # the top-3 scored image tokens


def test_attention_mask_is_causal_on_original_indices() -> None:
    seq = torch.tensor([[0, 2, 5]])
    valid = torch.tensor([[False, True, True]])
    m = attention_mask_4d(seq, valid)[0, 0]
    assert m.tolist() == [[True, False, False], [False, True, False], [False, True, True]]


@pytest.mark.parametrize("side", ["left", "right"])
def test_keep_ratio_one_equals_unpruned(side: str) -> None:
    """Pruning with keep ratio 1 (explicit layer loop, gather/scatter) gives the plain LLM's output."""
    cfg = cog_config(prune_layers=(1,), prune_keep_ratios=(1.0,))
    policy = VLAPolicy(
        dataclasses.replace(cfg, backbone=dataclasses.replace(cfg.backbone, padding_side=side))
    )
    bb = policy.model.backbone
    obs = [observation(policy, 0, "go"), observation(policy, 1, "pick up the red cube and place it")]
    inputs = policy.prepare_inputs(obs)
    with torch.inference_mode():
        vit = bb.encode_images(inputs["pixel_values"])
        ref = EagleBackbone.llm_hidden(bb, inputs["input_ids"], inputs["attention_mask"], vit)
        out = bb.llm_hidden(inputs["input_ids"], inputs["attention_mask"], vit)
    mask = inputs["attention_mask"]
    torch.testing.assert_close(out[mask], ref[mask], atol=1e-5, rtol=1e-5)


def test_pruning_token_counts_and_shapes() -> None:
    """tiny: 1 BOS + 48 image + text tokens; keeping 1/4 of the images before layer 1 drops 36."""
    policy = cog_policy(prune_layers=(1,), prune_keep_ratios=(0.25,))
    obs = observation(policy)
    inputs = policy.prepare_inputs([obs])
    length = inputs["input_ids"].shape[1]
    with torch.inference_mode():
        prefix = policy.encode_prefix(obs)
    assert prefix.features.shape == (1, length, 64)  # length kept: pruned tokens exit early
    assert policy.model.backbone.last_llm_tokens == [length, length - 36]
    assert torch.isfinite(prefix.features).all()


def test_pruned_tokens_do_not_change_required_token_count_in_batch() -> None:
    policy = cog_policy(aggregation_tokens=4, prune_layers=(0, 1), prune_keep_ratios=(0.5, 0.25))
    obs = [observation(policy, 0, "go"), observation(policy, 1, "a much longer instruction here")]
    with torch.inference_mode():
        result = policy.predict_chunk(obs[1], seed=0)
        batched = policy.encode_prefix(obs)
    assert result.actions.shape == (16, 16)
    length = batched.features.shape[1]
    assert policy.model.backbone.last_llm_tokens == [length - 6, length - 9]
    assert torch.isfinite(batched.features[batched.attention_mask]).all()


def test_router_gets_gradient_in_training() -> None:
    policy = cog_policy(prune_layers=(1,), prune_keep_ratios=(0.5,))
    bb = policy.model.backbone.train()
    inputs = policy.prepare_inputs([observation(policy)])
    vit = bb.encode_images(inputs["pixel_values"])
    bb.llm_hidden(inputs["input_ids"], inputs["attention_mask"], vit).sum().backward()
    grad = bb.cogvla.pruner.routers[0].proj.weight.grad
    assert grad is not None and grad.abs().sum() > 0
