"""SigLIP + DINOv2 with a language-conditioned router over the 2 experts."""

from __future__ import annotations

import pytest
import torch
from cogvla_helpers import cog_config, cog_policy, observation
from transformers import Dinov2Model
from vla_policy.model.cogvla.config import DinoV2Config
from vla_policy.model.cogvla.routed_vision import ExpertRouter
from vla_policy.strict_config import ConfigError


def test_router_weights_sum_to_one() -> None:
    router = ExpertRouter(16, 32)
    w = router(torch.randn(5, 16))
    assert w.shape == (5, 2)
    torch.testing.assert_close(w.sum(-1), torch.ones(5))
    assert (w > 0).all()


def test_mix_weights_the_experts() -> None:
    a, b = torch.ones(2, 3, 4), torch.zeros(2, 3, 4)
    out = ExpertRouter.mix(torch.tensor([[0.25, 0.75], [1.0, 0.0]]), [a, b])
    assert torch.allclose(out[0], torch.full((3, 4), 0.25)) and torch.allclose(out[1], a[1])


@pytest.mark.parametrize("aggregation", [0, 4])
def test_dual_encoder_shapes_and_router(aggregation: int) -> None:
    policy = cog_policy(dual_encoder=True, film=True, aggregation_tokens=aggregation)
    bb = policy.model.backbone
    assert isinstance(bb.cogvla.dino.model, Dinov2Model)
    obs = [observation(policy, 0, "go left"), observation(policy, 1, "open the drawer")]
    inputs = policy.prepare_inputs(obs)
    with torch.inference_mode():
        vit = bb.encode_images(inputs["pixel_values"], inputs["input_ids"], inputs["attention_mask"])
        prefix = policy.encode_prefix(obs)
    assert vit.shape == (6, aggregation or 16, 64)
    weights = bb.last_router_weights
    assert weights.shape == (2, 2)
    torch.testing.assert_close(weights.sum(-1), torch.ones(2))
    assert not torch.allclose(weights[0], weights[1])  # language-conditioned: differs per instruction
    assert torch.isfinite(prefix.features).all()


def test_patch_grids_must_match_without_aggregation() -> None:
    with pytest.raises(ConfigError, match="patch grids"):
        cog_config(dual_encoder=True, dino=DinoV2Config(patch_size=8))
    cfg = cog_config(dual_encoder=True, aggregation_tokens=4, dino=DinoV2Config(patch_size=8))
    assert cfg.backbone.num_image_tokens == 12
