"""kv_cache_expert (Alpamayo-R1) on the alpamayo-tiny preset."""

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
)
from vla_policy.model.experts.kv_cache_expert import KVCacheExpert, fourier_time_features
from vla_policy.model.llm_kv_cache import PrefixKVCache, llm_prefix_kv
from vla_policy.model.policy import VLAModel, VLAPolicy
from vla_policy.model.presets import get_preset


@pytest.fixture(scope="module")
def policy() -> VLAPolicy:
    return VLAPolicy(get_preset("alpamayo-tiny"), seed=0)


def test_expert_is_configured_like_the_llm(policy: VLAPolicy) -> None:
    expert = policy.expert
    assert isinstance(expert, KVCacheExpert)
    lm = policy.expert.llm
    assert not hasattr(expert.model, "embed_tokens")
    assert len(expert.model.layers) == len(lm.layers)
    ours = {k: v.shape for k, v in expert.model.layers[0].state_dict().items()}
    theirs = {k: v.shape for k, v in lm.layers[0].state_dict().items()}
    assert ours == theirs


def test_prefix_kv_is_the_causal_vlm_cache(policy: VLAPolicy) -> None:
    prefix, _ = batch_prefix(policy)
    with torch.no_grad():
        kv, _ = llm_prefix_kv(policy.expert.llm, prefix.features, prefix.attention_mask, True)
    for (k0, v0), (k1, v1) in zip(kv, prefix.layer_kv, strict=True):
        assert torch.equal(k0, k1) and torch.equal(v0, v1)


def test_cached_equals_recomputed(policy: VLAPolicy) -> None:
    check_cached_equals_recomputed(policy)


def test_cache_length_unchanged(policy: VLAPolicy) -> None:
    check_cache_length_unchanged(policy)


def test_cache_is_cropped_even_on_error(policy: VLAPolicy) -> None:
    prefix, _ = batch_prefix(policy)
    cache = PrefixKVCache(prefix.layer_kv)
    k = torch.zeros_like(prefix.layer_kv[0][0][:, :, :3])
    cache.update(0, k, k)
    assert cache.get_seq_length(0) == cache.prefix_length + 3
    cache.crop(cache.prefix_length)
    assert cache.get_seq_length(0) == cache.prefix_length


def test_suffix_never_changes_prefix_kv(policy: VLAPolicy, monkeypatch: pytest.MonkeyPatch) -> None:
    check_suffix_never_changes_prefix_kv(policy, monkeypatch)


def test_action_tokens_see_each_other(policy: VLAPolicy) -> None:
    check_action_tokens_see_each_other(policy)
    blocks = policy.expert.suffix_blocks(policy.config.action_horizon, torch.device("cpu"))
    assert blocks.unique().numel() == 1  # non-causal suffix


def test_fourier_time_features() -> None:
    f = fourier_time_features(torch.tensor([0.0, 0.5]), 16, 100.0)
    assert f.shape == (2, 16)
    torch.testing.assert_close(f[0], torch.tensor([0.0] * 8 + [1.0] * 8))


def test_llm_kv_matches_backbone(policy: VLAPolicy) -> None:
    check_llm_kv_matches_backbone(policy)


def test_save_load_round_trip(policy: VLAPolicy, tmp_path) -> None:
    check_save_load_round_trip(policy, tmp_path)


def test_rtc_and_training(policy: VLAPolicy) -> None:
    check_rtc_and_training(policy)


def test_full_preset_builds_on_meta() -> None:
    cfg = get_preset("alpamayo")
    with torch.device("meta"):
        model = VLAModel(cfg)
    n_expert = sum(p.numel() for p in model.action_head.model.parameters())
    assert 2.0e9 < n_expert < 2.6e9  # about 2.3B as reported
    assert len(model.action_head.model.layers) == 28
