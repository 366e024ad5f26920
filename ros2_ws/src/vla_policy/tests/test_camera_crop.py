"""``backbone.crops``: a camera's frame is cut to a box (fractions) before the resize; others stay whole."""

from __future__ import annotations

import numpy as np
import pytest
from vla_policy.model.checkpoint import read_config
from vla_policy.model.image_preprocessing import crop_box, preprocess_images
from vla_policy.model.policy import VLAPolicy
from vla_policy.model.presets import get_preset
from vla_policy.strict_config import ConfigError, replace


def test_crop_box_in_whole_pixels() -> None:
    assert crop_box(96, 128, (1 / 6, 0.25, 2 / 3, 0.5)) == (16, 80, 32, 96)


def test_only_the_cropped_region_reaches_the_model() -> None:
    cfg = replace(get_preset("tiny").backbone, cameras=("a", "b"), crops=(("a", 0.25, 0.25, 0.5, 0.5),))
    frame = np.zeros((96, 128, 3), np.uint8)
    frame[24:72, 32:96] = 200  # exactly the crop box of camera a
    out = preprocess_images([{"a": frame, "b": frame}], cfg)
    assert out.shape == (2, 3, 64, 64)
    assert np.allclose(out[0].numpy(), 200 / 127.5 - 1, atol=1e-5)  # camera a: the box only
    assert out[1].min() == -1.0 and out[1].max() > 0.5  # camera b: the whole frame


def test_crops_survive_a_checkpoint_round_trip(tmp_path) -> None:
    cfg = get_preset("tiny-aloha-crop")
    assert cfg.backbone.crops == (("head", 1 / 6, 0.25, 2 / 3, 0.5),)
    assert get_preset("tiny-aloha").backbone.crops == ()  # the shipped policy's recipe
    VLAPolicy(cfg, seed=0).save(tmp_path, random_init=True)
    assert read_config(tmp_path)[0].backbone.crops == cfg.backbone.crops


@pytest.mark.parametrize(
    "crop, needle",
    [
        (("c", 0.0, 0.0, 0.5, 0.5), "camera of"),
        (("head", 0.6, 0.0, 0.5, 0.5), "inside the frame"),
        (("head", 0.0, 0.0, 0.5), "camera of"),
    ],
)
def test_bad_crops_are_rejected(crop, needle) -> None:
    with pytest.raises(ConfigError, match=needle):
        replace(get_preset("tiny").backbone, crops=(crop,))
