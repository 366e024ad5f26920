from __future__ import annotations

import numpy as np
import pytest
import torch
from vla_policy.model.image_preprocessing import preprocess_frames, preprocess_images
from vla_policy.model.presets import get_preset
from vla_policy.strict_config import replace


def test_resized_and_normalised_to_minus_one_one() -> None:
    img = np.zeros((2, 48, 80, 3), dtype=np.uint8)
    img[1] = 255
    out = preprocess_frames(img, 64)
    assert out.shape == (2, 3, 64, 64)
    assert out[0].max().item() == -1.0 and abs(out[1].min().item() - 1.0) < 1e-6


def test_view_major_order_with_history() -> None:
    cfg = replace(get_preset("tiny").backbone, cameras=("a", "b"), history_frames=2)
    frames = {
        c: np.stack([np.full((64, 64, 3), v, np.uint8) for v in vals])
        for c, vals in {"a": (0, 50), "b": (100, 150)}.items()
    }
    out = preprocess_images([frames], cfg)
    means = [round(float(x.mean()) * 127.5 + 127.5) for x in out]
    assert means == [0, 50, 100, 150]  # camera a (oldest, newest), then camera b


def test_wrong_history_length_rejected() -> None:
    cfg = replace(get_preset("tiny").backbone, history_frames=2)
    images = {c: np.zeros((64, 64, 3), np.uint8) for c in cfg.cameras}
    with pytest.raises(ValueError, match="expected 2 frame"):
        preprocess_images([images], cfg)


def test_float_images_rejected() -> None:
    with pytest.raises(ValueError, match="uint8"):
        preprocess_frames(np.zeros((1, 8, 8, 3), np.float32), 64)


def test_eagle_resize_stays_uint8_like_its_processor() -> None:
    """Eagle's processor resizes the uint8 image (bicubic, antialiased, rounded and clamped to uint8),
    then normalises: every output is (k - 127.5) / 127.5 for an integer k in 0..255."""
    frames = np.random.default_rng(0).integers(0, 256, size=(1, 24, 40, 3), dtype=np.uint8)
    x = preprocess_frames(frames, 32, "eagle")
    assert x.shape == (1, 3, 32, 32)
    k = x * 127.5 + 127.5
    assert torch.allclose(k, k.round(), atol=1e-4) and k.min() >= 0 and k.max() <= 255
    assert not torch.allclose(x, preprocess_frames(frames, 32, "bilinear"), atol=1e-3)
