from __future__ import annotations

import numpy as np
import pytest
import torch
from vla_policy.model.flow_matching import (
    RTCGuidance,
    euler_sample,
    flow_matching_loss,
    interpolate,
    rtc_guidance_weight,
    rtc_weights,
    sample_time,
)
from vla_policy.model.policy import VLAPolicy
from vla_policy.model.presets import get_preset
from vla_policy.observation import synthetic_observation


@pytest.fixture(scope="module")
def policy() -> VLAPolicy:
    return VLAPolicy(get_preset("tiny"), seed=2)


def test_interpolation_endpoints_are_noise_and_action() -> None:
    noise, action = torch.randn(2, 4, 8), torch.randn(2, 4, 8)
    torch.testing.assert_close(interpolate(noise, action, torch.zeros(2)), noise)
    torch.testing.assert_close(interpolate(noise, action, torch.ones(2)), action)


def test_euler_with_true_velocity_reaches_action() -> None:
    noise, action = torch.randn(1, 16, 32), torch.randn(1, 16, 32)
    action[..., 16:] = 0  # padded dims hold action 0
    x1 = euler_sample(lambda x, t, k: (action - noise)[..., :16], noise, num_steps=4)
    torch.testing.assert_close(x1, action, atol=1e-6, rtol=0)


def test_loss_ignores_masked_dims() -> None:
    noise, action = torch.zeros(1, 2, 4), torch.ones(1, 2, 4)
    mask = torch.zeros(1, 2, 4, dtype=torch.bool)
    mask[..., :2] = True
    pred = torch.tensor([[[1.0, 1.0, 9.0], [1.0, 1.0, -9.0]]])
    assert flow_matching_loss(pred, noise, action, mask).item() == 0.0


def test_training_time_distribution_in_unit_interval() -> None:
    torch.manual_seed(0)
    t = sample_time(10000)
    assert t.min() >= 0 and t.max() < 1
    assert t.mean() < 0.5  # (s - Beta(1.5, 1)) / s favours the noisy end


def test_rtc_weights_frozen_then_decaying_then_zero() -> None:
    w = rtc_weights(16, frozen=3, overlap=5, available=16)
    assert torch.all(w[:3] == 1) and torch.all(w[8:] == 0)
    assert torch.all(w[3:8] > 0) and torch.all(torch.diff(w[3:8]) < 0)


def test_rtc_guidance_weight_is_clipped() -> None:
    assert rtc_guidance_weight(0.0, 5.0) == 5.0
    assert rtc_guidance_weight(0.9, 5.0) == 5.0
    assert rtc_guidance_weight(0.25, 100.0) == pytest.approx((0.75**2 + 0.25**2) / (0.25 * 0.75))


def test_rtc_frozen_actions_equal_previous_chunk(policy: VLAPolicy) -> None:
    obs = synthetic_observation(policy.config.backbone.cameras, 64, 16, seed=0)
    prev = np.random.default_rng(0).uniform(-0.8, 0.8, (16, policy.config.action_width)).astype(np.float32)
    res = policy.predict_chunk(obs, seed=3, rtc=RTCGuidance(prev, frozen_steps=4, overlap_steps=6))
    np.testing.assert_allclose(res.actions[:4], prev[:4], atol=1e-6)


def test_rtc_overlap_is_pulled_toward_previous(policy: VLAPolicy) -> None:
    obs = synthetic_observation(policy.config.backbone.cameras, 64, 16, seed=0)
    prev = np.random.default_rng(1).uniform(-0.8, 0.8, (16, policy.config.action_width)).astype(np.float32)
    free = policy.predict_chunk(obs, seed=3).actions
    guided = policy.predict_chunk(
        obs, seed=3, rtc=RTCGuidance(prev, frozen_steps=2, overlap_steps=8, max_guidance_weight=5.0)
    ).actions
    err_free = np.abs(free[2:6] - prev[2:6]).mean()
    err_guided = np.abs(guided[2:6] - prev[2:6]).mean()
    assert err_guided < err_free


def test_rtc_previous_must_be_2d() -> None:
    with pytest.raises(ValueError, match="previous must be"):
        RTCGuidance(np.zeros(16), frozen_steps=1, overlap_steps=1)


def test_step_bucket_is_groot_k_over_n() -> None:
    """GR00T's bucket is int(k / N * 1000); the accumulated t = k * (1 / N) is one bucket lower at some
    steps (N = 35, 55, 70, 95 below 100), never for the default N = 4."""
    from vla_policy.model.flow_matching import step_bucket

    assert step_bucket(7, 35, 1000) == 200 and int(7 * (1.0 / 35) * 1000) == 199
    assert [step_bucket(k, 4, 1000) for k in range(4)] == [0, 250, 500, 750]
