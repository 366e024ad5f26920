"""Image preprocessing for the SigLIP tower: uint8 RGB in, resized and normalised float tensors out.

Two resizes (``BackboneConfig.image_preprocessing``): ``bilinear`` (the seed's: float, antialiased) and
``eagle`` (Eagle's image processor with one tile and no thumbnail: a bicubic antialiased resize of the
uint8 image that stays uint8, then ``(x / 255 - 0.5) / 0.5`` computed as ``(x - 127.5) / 127.5``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from vla_policy.model.config import BackboneConfig

SIGLIP_MEAN = 0.5
SIGLIP_STD = 0.5


def crop_box(height: int, width: int, box: Sequence[float]) -> tuple[int, int, int, int]:
    """(top, left, height, width) fractions of a frame -> whole-pixel (y0, y1, x0, x1), at least 1 pixel."""
    top, left, h, w = (float(v) for v in box)
    y0, x0 = round(top * height), round(left * width)
    return y0, max(y0 + 1, round((top + h) * height)), x0, max(x0 + 1, round((left + w) * width))


def preprocess_frames(
    frames: np.ndarray, image_size: int, mode: str = "bilinear", crop: Sequence[float] | None = None
) -> torch.Tensor:
    """uint8 [F, H, W, 3] RGB -> float32 [F, 3, S, S]: the ``crop`` box (top, left, height, width as
    fractions; None = the whole frame), resized (``mode``), SigLIP normalisation to [-1, 1]."""
    if frames.dtype != np.uint8:
        raise ValueError(f"expected uint8 RGB images, got dtype {frames.dtype}")
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"expected [H, W, 3] or [F, H, W, 3] RGB, got shape {tuple(frames.shape)}")
    if crop is not None:
        y0, y1, x0, x1 = crop_box(frames.shape[1], frames.shape[2], crop)
        frames = frames[:, y0:y1, x0:x1]
    if mode == "eagle":
        u8 = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).contiguous()
        if u8.shape[-2:] != (image_size, image_size):  # uint8 in, uint8 out (rounded), as torchvision's
            u8 = F.interpolate(
                u8, size=(image_size, image_size), mode="bicubic", align_corners=False, antialias=True
            )
        scale = 255.0 * SIGLIP_STD
        return (u8.float() - 255.0 * SIGLIP_MEAN) / scale
    x = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).float().div_(255.0)
    if x.shape[-2:] != (image_size, image_size):
        # antialias avoids aliasing when downscaling camera frames (e.g. 480x640 -> 224x224)
        x = F.interpolate(
            x, size=(image_size, image_size), mode="bilinear", align_corners=False, antialias=True
        )
    return (x - SIGLIP_MEAN) / SIGLIP_STD


def preprocess_images(
    images_per_obs: Sequence[Mapping[str, np.ndarray]], config: BackboneConfig
) -> torch.Tensor:
    """Camera dicts -> pixel_values [B * V * F, 3, S, S], view-major (camera order of config, then frames).

    Each camera gives uint8 [H, W, 3] (history 1) or [F, H, W, 3] with F == config.history_frames.
    """
    crops = {c[0]: c[1:] for c in config.crops}
    out = []
    for images in images_per_obs:
        missing = [c for c in config.cameras if c not in images]
        if missing:
            raise ValueError(
                f"missing camera(s) {missing}; expected {list(config.cameras)}, got {sorted(images)}"
            )
        for cam in config.cameras:
            frames = np.asarray(images[cam])
            if frames.ndim == 3:
                frames = frames[None]
            if frames.ndim != 4 or frames.shape[0] != config.history_frames:
                raise ValueError(
                    f"camera {cam!r}: expected {config.history_frames} frame(s) of [H, W, 3], "
                    f"got shape {tuple(np.asarray(images[cam]).shape)}"
                )
            out.append(
                preprocess_frames(
                    frames, config.vision.image_size, config.image_preprocessing, crops.get(cam)
                )
            )
    return torch.cat(out, dim=0)
