from __future__ import annotations

import numpy as np
import pytest
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
