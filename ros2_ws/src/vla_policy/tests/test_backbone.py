from __future__ import annotations

import pytest
import torch
from vla_policy.model.policy import VLAPolicy
from vla_policy.model.presets import get_preset
from vla_policy.observation import synthetic_observation
from vla_policy.strict_config import replace


def _policy(vl_mask: bool | None = None, **backbone: object) -> VLAPolicy:
    cfg = get_preset("tiny")
    head = cfg.action_head if vl_mask is None else replace(cfg.action_head, use_vl_mask=vl_mask)
    return VLAPolicy(replace(cfg, backbone=replace(cfg.backbone, **backbone), action_head=head), seed=0)


@pytest.mark.parametrize("side", ["left", "right"])
def test_padding_does_not_change_prefix_features(side: str) -> None:
    """With the seed's masked VL self-attention a short instruction batched with a long one gives the
    same features as alone, on either side."""
    policy = _policy(vl_mask=True, padding_side=side)
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


def test_reference_prefix_depends_on_padding() -> None:
    """The reference attends to the padding in vl_self_attention (no VL mask): a padded prompt's features
    differ from the same prompt alone."""
    policy = _policy(padding_side="left")
    cams = policy.config.backbone.cameras
    short = synthetic_observation(cams, 64, 16, seed=3, instruction="go")
    long = synthetic_observation(cams, 64, 16, seed=4, instruction="pick up the red cube and place it")
    with torch.inference_mode():
        alone = policy.encode_prefix([short]).features[0]
        batched = policy.encode_prefix([long, short])
    mask = batched.attention_mask[1]
    assert not torch.allclose(batched.features[1][mask], alone, atol=1e-3)


def test_pixel_shuffle_is_eagles_channel_order() -> None:
    """Each 2x2 patch block becomes one token, its patches' channels in Eagle's order (row-major within
    the block), tokens row-major over the half-resolution grid."""
    from vla_policy.model.backbone import pixel_shuffle

    grid = torch.arange(16.0).reshape(1, 16, 1)  # a 4 x 4 grid of 1-channel patches, value = index
    out = pixel_shuffle(grid)
    assert out.shape == (1, 4, 4)
    assert out[0, 0].tolist() == [0.0, 1.0, 4.0, 5.0]
    assert out[0, 1].tolist() == [2.0, 3.0, 6.0, 7.0]
    assert out[0, 2].tolist() == [8.0, 9.0, 12.0, 13.0]


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
    """Changing one camera's image changes the features; the prompt carries 3 x 4 image tokens (16
    patches each, 4 after the pixel shuffle)."""
    policy = _policy()
    obs = synthetic_observation(policy.config.backbone.cameras, 64, 16, seed=0)
    other = dict(obs.images)
    other["right_wrist"] = 255 - other["right_wrist"]
    inputs = policy.prepare_inputs([obs])
    assert int((inputs["input_ids"] == policy.tokenizer.image_id).sum()) == 12
    with torch.inference_mode():
        a = policy.encode_prefix(obs).features
        b = policy.encode_prefix(
            type(obs)(images=other, state=obs.state, instruction=obs.instruction)
        ).features
    assert not torch.allclose(a, b)
