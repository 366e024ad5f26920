from __future__ import annotations

import pytest
import torch
from vla_policy.model.policy import VLAPolicy
from vla_policy.model.presets import get_preset
from vla_policy.observation import synthetic_observation
from vla_policy.strict_config import replace


def _policy(**backbone: object) -> VLAPolicy:
    cfg = get_preset("tiny")
    return VLAPolicy(replace(cfg, backbone=replace(cfg.backbone, **backbone)), seed=0)


@pytest.mark.parametrize("side", ["left", "right"])
def test_padding_does_not_change_prefix_features(side: str) -> None:
    """A short instruction batched with a long one gives the same features as alone, on either side."""
    policy = _policy(padding_side=side)
    cams = policy.config.backbone.cameras
    short = synthetic_observation(cams, 64, 16, seed=3, instruction="go")
    long = synthetic_observation(cams, 64, 16, seed=4, instruction="pick up the red cube and place it")
    with torch.inference_mode():
        alone = policy.encode_prefix([short]).features[0]
        batched = policy.encode_prefix([long, short])
    mask = batched.attention_mask[1]
    assert not mask.all()
    assert bool(mask[-1]) == (side == "left")
    torch.testing.assert_close(batched.features[1][mask], alone, atol=1e-5, rtol=1e-5)


def test_llm_layers_past_select_layer_not_built() -> None:
    cfg = get_preset("tiny")
    lang = replace(cfg.backbone.language, num_hidden_layers=6, select_layer=2)
    policy = VLAPolicy(replace(cfg, backbone=replace(cfg.backbone, language=lang)))
    assert len(policy.model.backbone.eagle_model.language_model.model.layers) == 2
    assert not any(".layers.2." in k for k in policy.model.state_dict())


def test_image_placeholder_count_must_match_features() -> None:
    policy = _policy()
    obs = synthetic_observation(policy.config.backbone.cameras, 64, 16)
    inputs = policy.prepare_inputs([obs])
    vit = policy.model.backbone.encode_images(inputs["pixel_values"])
    with pytest.raises(ValueError, match="placeholders"):
        policy.model.backbone.encode_language(inputs["input_ids"], inputs["attention_mask"], vit[:-1])


def test_image_tokens_replace_placeholders() -> None:
    """Changing one camera's image changes the features; the prompt carries 3 x 16 image tokens."""
    policy = _policy()
    obs = synthetic_observation(policy.config.backbone.cameras, 64, 16, seed=0)
    other = dict(obs.images)
    other["right_wrist"] = 255 - other["right_wrist"]
    inputs = policy.prepare_inputs([obs])
    assert int((inputs["input_ids"] == policy.tokenizer.image_id).sum()) == 48
    with torch.inference_mode():
        a = policy.encode_prefix(obs).features
        b = policy.encode_prefix(
            type(obs)(images=other, state=obs.state, instruction=obs.instruction)
        ).features
    assert not torch.allclose(a, b)
