"""deep_fusion (PI0) on the pi0-tiny preset."""

from __future__ import annotations

import pytest
import torch
from layer_kv_expert_checks import (
    batch_prefix,
    check_action_tokens_see_each_other,
    check_cache_length_unchanged,
    check_cached_equals_recomputed,
    check_llm_kv_matches_backbone,
    check_rtc_and_training,
    check_save_load_round_trip,
    check_suffix_never_changes_prefix_kv,
    noise,
)
from vla_policy.model.experts.deep_fusion_expert import DeepFusionExpert, pi0_time_embedding
from vla_policy.model.llm_kv_cache import llm_prefix_kv, suffix_forward
from vla_policy.model.policy import VLAModel, VLAPolicy
from vla_policy.model.presets import get_preset


@pytest.fixture(scope="module")
def policy() -> VLAPolicy:
    return VLAPolicy(get_preset("pi0-tiny"), seed=0)


def test_expert_shapes(policy: VLAPolicy) -> None:
    expert = policy.expert
    assert isinstance(expert, DeepFusionExpert) and policy.config.num_inference_steps == 10
    lm = policy.config.backbone.language
    layer = expert.model.layers[0]
    assert len(expert.model.layers) == lm.select_layer
    # narrower than the LLM, same head space
    assert layer.self_attn.q_proj.in_features == 32 != lm.hidden_size
    assert layer.self_attn.q_proj.out_features == lm.num_attention_heads * lm.head_dim
    assert layer.self_attn.k_proj.out_features == lm.num_key_value_heads * lm.head_dim


def test_cached_equals_recomputed(policy: VLAPolicy) -> None:
    check_cached_equals_recomputed(policy)


def test_cache_length_unchanged(policy: VLAPolicy) -> None:
    check_cache_length_unchanged(policy)


def test_suffix_never_changes_prefix_kv(policy: VLAPolicy, monkeypatch: pytest.MonkeyPatch) -> None:
    check_suffix_never_changes_prefix_kv(policy, monkeypatch)


def test_action_tokens_see_each_other(policy: VLAPolicy) -> None:
    check_action_tokens_see_each_other(policy)


def test_prefix_is_bidirectional(policy: VLAPolicy) -> None:
    """PI0's prefix K/V differ from the causal VLM's: early tokens see later ones."""
    prefix, _ = batch_prefix(policy)
    with torch.no_grad():
        causal, _ = llm_prefix_kv(policy.expert.llm, prefix.features, prefix.attention_mask, True)
    # layer 0 K/V depend only on each token itself; layer 1 on attention, where the masks differ
    torch.testing.assert_close(causal[0][0], prefix.layer_kv[0][0])
    assert not torch.allclose(causal[1][0], prefix.layer_kv[1][0])


def test_state_token_does_not_see_actions(policy: VLAPolicy) -> None:
    """PI0 block mask: the state token's output ignores the noisy actions and the time."""
    expert = policy.expert
    blocks = expert.suffix_blocks(policy.config.action_horizon, torch.device("cpu"))
    assert blocks.tolist() == [1] + [2] * (policy.config.action_horizon + 1)
    prefix, state = batch_prefix(policy)
    ctx = expert.suffix_context(prefix, state, use_cache=True)
    captured = []
    with torch.no_grad():
        for seed, t in ((0, 0.2), (1, 0.9)):
            suffix = expert.embed_suffix(ctx.state_token, noise(policy, 2, seed), torch.full((2,), t))
            layers = list(expert.model.layers)
            captured.append(suffix_forward(layers, suffix, ctx.cache, ctx.suffix_mask, *ctx.rope_suffix))
    torch.testing.assert_close(captured[0][:, 0], captured[1][:, 0], atol=1e-6, rtol=0)
    assert not torch.allclose(captured[0][:, 1], captured[1][:, 1])


def test_pi0_time_embedding() -> None:
    emb = pi0_time_embedding(torch.tensor([0.0, 1.0]), 8, 4e-3, 4.0)
    assert emb.shape == (2, 8)
    torch.testing.assert_close(emb[0], torch.tensor([0.0] * 4 + [1.0] * 4))


def test_llm_kv_matches_backbone(policy: VLAPolicy) -> None:
    check_llm_kv_matches_backbone(policy)


def test_save_load_round_trip(policy: VLAPolicy, tmp_path) -> None:
    check_save_load_round_trip(policy, tmp_path)


def test_rtc_and_training(policy: VLAPolicy) -> None:
    check_rtc_and_training(policy)


def test_full_preset_builds_on_meta() -> None:
    cfg = get_preset("pi0")
    with torch.device("meta"):
        model = VLAModel(cfg)
    n_expert = sum(p.numel() for p in model.action_head.parameters())
    assert 250e6 < n_expert < 450e6  # a Gemma-300M-like expert
    assert len(model.action_head.model.layers) == 18
