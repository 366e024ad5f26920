"""``training/memory_estimate.py``: activations counted on the trainable path, static memory per strategy."""

from __future__ import annotations

import numpy as np
import pytest
from vla_policy.model.policy import VLAPolicy
from vla_policy.model.presets import get_preset
from vla_policy.observation import synthetic_observation
from vla_policy.training.memory_estimate import MemoryEstimate, _saved_bytes, estimate


def test_activation_estimate_matches_a_real_fp32_forward(one_thread):
    cfg = get_preset("tiny")
    policy = VLAPolicy(cfg, seed=0)
    policy.model.train()
    counts = []
    for b in (1, 2):
        obs = [
            synthetic_observation(cfg.backbone.cameras, cfg.backbone.vision.image_size, 16, seed=i)
            for i in range(b)
        ]
        batch = policy.make_batch(obs, [np.zeros((cfg.action_horizon, 16), np.float32)] * b)
        counts.append(sum(_saved_bytes(policy, policy.cache_backbone(batch))))
    real = counts[1] - counts[0]
    est = estimate("tiny")  # meta model, only the trainable path materialised, bf16
    assert est.trainable == sum(p.numel() for p in policy.trainable_parameters())
    assert est.activations_fp32_per_sample == pytest.approx(real, rel=0.01)
    assert est.activations_bf16_per_sample < 0.55 * est.activations_fp32_per_sample


def test_fsdp_divides_the_static_memory_and_ddp_does_not():
    est = MemoryEstimate("x", {}, parameters=1000, trainable=400, largest_fsdp_unit=100,
                         activations_bf16_per_sample=0, activations_fp32_per_sample=0)  # fmt: skip
    ddp = est.static_bytes(8, "ddp")
    assert ddp == {"weights": 4000, "gradients": 1600, "adamw": 3200, "gathered_unit": 0}
    assert est.static_bytes(1, "fsdp") == ddp
    fsdp = est.static_bytes(8, "fsdp")
    assert fsdp == {"weights": 500, "gradients": 200, "adamw": 400, "gathered_unit": 800}
