from __future__ import annotations

import pytest
import torch
from vla_policy.model.policy import VLAPolicy
from vla_policy.model.presets import get_preset
from vla_policy.observation import PrefixOutput, synthetic_observation


@pytest.fixture(scope="module")
def policy() -> VLAPolicy:
    return VLAPolicy(get_preset("tiny"), seed=1)


def test_cached_and_recomputed_cross_kv_agree(policy: VLAPolicy) -> None:
    obs = synthetic_observation(policy.config.backbone.cameras, 64, 16, seed=2)
    noise = torch.randn(1, 16, 32, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        prefix = policy.encode_prefix(obs)
        state = policy.prepare_state([obs.state])
        cached = policy.expert.predict_chunk(prefix, state, noise, use_cache=True)
        bare = PrefixOutput(prefix.features, prefix.attention_mask)
        recomputed = policy.expert.predict_chunk(bare, state, noise, use_cache=False)
    assert prefix.cross_kv is not None and len(prefix.cross_kv) == 2  # blocks 0 and 2 of 4
    torch.testing.assert_close(cached, recomputed, atol=1e-5, rtol=0)


def test_cross_kv_shapes_are_heads_by_tokens(policy: VLAPolicy) -> None:
    obs = synthetic_observation(policy.config.backbone.cameras, 64, 16, seed=2)
    with torch.inference_mode():
        prefix = policy.encode_prefix(obs)
    k, v = prefix.cross_kv[0]
    length = prefix.features.shape[1]
    assert k.shape == v.shape == (1, 4, length, 16)
