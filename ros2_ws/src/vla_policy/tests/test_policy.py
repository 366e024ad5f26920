from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from vla_policy.model.policy import VLAPolicy
from vla_policy.model.presets import get_preset
from vla_policy.observation import synthetic_observation

# Pinned once from `VLAPolicy(tiny, seed=7)` saved, reloaded, predict_chunk(seed=11) (normalised expert
# output before clipping, first 2 steps x first 4 dims). A change means the model's numerics changed.
GOLDEN = [[-0.892665, 1.493574, 0.115538, 0.439849], [-0.841395, 1.402339, -1.305367, -0.663266]]


@pytest.fixture(scope="module")
def policy() -> VLAPolicy:
    return VLAPolicy(get_preset("tiny"), seed=0)


def _obs(policy: VLAPolicy, seed: int = 0):
    cfg = policy.config.backbone
    return synthetic_observation(cfg.cameras, 80, 16, seed=seed)


def test_predict_chunk_shape_and_groups(policy: VLAPolicy) -> None:
    res = policy.predict_chunk(_obs(policy), seed=0)
    assert res.actions.shape == (16, 16) and res.actions.dtype == np.float32
    assert {k: v.shape for k, v in res.groups.items()} == {
        "left_arm": (16, 7),
        "right_arm": (16, 7),
        "claw": (16, 2),
    }
    np.testing.assert_array_equal(np.concatenate(list(res.groups.values()), axis=1), res.actions)
    assert {"vision", "llm", "vl_self_attention", "dit_step_0", "dit_step_3", "decode", "expert"} <= set(
        res.timings
    )


def test_same_seed_is_bitwise_identical(policy: VLAPolicy) -> None:
    a = policy.predict_chunk(_obs(policy), seed=5).actions
    b = policy.predict_chunk(_obs(policy), seed=5).actions
    assert np.array_equal(a, b)


def test_different_seed_differs(policy: VLAPolicy) -> None:
    prefix = policy.encode_prefix(_obs(policy))
    state = policy.prepare_state([_obs(policy).state])
    g1, g2 = torch.Generator().manual_seed(1), torch.Generator().manual_seed(2)
    with torch.inference_mode():
        a = policy.expert.predict_chunk(prefix, state, generator=g1)
        b = policy.expert.predict_chunk(prefix, state, generator=g2)
    assert not torch.equal(a, b)


def test_seeded_init_is_reproducible() -> None:
    a = VLAPolicy(get_preset("tiny"), seed=3).model.state_dict()
    b = VLAPolicy(get_preset("tiny"), seed=3).model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_state_longer_than_max_state_dim_rejected(policy: VLAPolicy) -> None:
    with pytest.raises(ValueError, match="max_state_dim"):
        policy.prepare_state([np.zeros(65, dtype=np.float32)])


def test_nan_state_rejected(policy: VLAPolicy) -> None:
    with pytest.raises(ValueError, match="NaN"):
        policy.prepare_state([np.full(14, np.nan, dtype=np.float32)])


def test_missing_camera_rejected(policy: VLAPolicy) -> None:
    obs = _obs(policy)
    images = dict(obs.images)
    images.pop("head")
    with pytest.raises(ValueError, match="missing camera"):
        policy.encode_prefix(type(obs)(images=images, state=obs.state, instruction="x"))


def test_unknown_expert_names_nearest() -> None:
    from vla_policy.strict_config import ConfigError, replace

    with pytest.raises(ConfigError, match="did you mean 'dit_cross_attention'"):
        VLAPolicy(replace(get_preset("tiny"), expert="dit_cross_atention"))


def test_golden_outputs_of_seeded_checkpoint(tmp_path: Path) -> None:
    VLAPolicy(get_preset("tiny"), seed=7).save(tmp_path / "ck", random_init=True)
    policy = VLAPolicy.from_checkpoint(tmp_path / "ck")
    obs = synthetic_observation(policy.config.backbone.cameras, 64, 16, seed=0)
    with torch.inference_mode():
        prefix = policy.encode_prefix(obs)
        noise = torch.randn(1, 16, 32, generator=torch.Generator().manual_seed(11))
        out = policy.expert.predict_chunk(prefix, policy.prepare_state([obs.state]), noise)
    got = out[0, :2, :4].numpy()
    np.testing.assert_allclose(got, np.asarray(GOLDEN), rtol=1e-4, atol=1e-4)
