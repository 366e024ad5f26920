"""Decode ROS image messages (as plain fields) into uint8 [H, W, 3] RGB arrays.

ROS-free: the node passes the fields of ``sensor_msgs/Image`` or ``sensor_msgs/CompressedImage``.
Supported raw encodings: rgb8, bgr8, mono8, rgba8, bgra8 (row padding via ``step`` is respected).
Compressed images: JPEG and PNG through OpenCV. Everything else raises ``ImageDecodeError``.
"""

from __future__ import annotations

import numpy as np

RAW_ENCODINGS: dict[str, int] = {"rgb8": 3, "bgr8": 3, "mono8": 1, "rgba8": 4, "bgra8": 4}
COMPRESSED_FORMATS: tuple[str, ...] = ("jpeg", "jpg", "png")


class ImageDecodeError(ValueError):
    """An image could not be decoded; the message says why (encoding, size, corrupt data)."""


def _check_size(image: np.ndarray, expected_size: tuple[int, int] | None) -> np.ndarray:
    if expected_size is not None:
        height, width = expected_size
        if image.shape[:2] != (height, width):
            raise ImageDecodeError(
                f"image size {image.shape[1]}x{image.shape[0]} (WxH) does not match the expected "
                f"{width}x{height}"
            )
    return image


def decode_raw(
    encoding: str,
    height: int,
    width: int,
    step: int,
    data: bytes | bytearray | memoryview | np.ndarray,
    expected_size: tuple[int, int] | None = None,
) -> np.ndarray:
    """Convert raw ``sensor_msgs/Image`` fields to a contiguous uint8 [H, W, 3] RGB array.

    ``expected_size`` is ``(height, width)``; a different size raises ``ImageDecodeError``.
    """
    enc = encoding.lower()
    if enc not in RAW_ENCODINGS:
        raise ImageDecodeError(
            f"unsupported image encoding '{encoding}'; supported: {', '.join(RAW_ENCODINGS)}"
        )
    channels = RAW_ENCODINGS[enc]
    if height <= 0 or width <= 0:
        raise ImageDecodeError(f"invalid image size {width}x{height} (WxH)")
    row_bytes = width * channels
    if step < row_bytes:
        raise ImageDecodeError(f"step {step} is smaller than width*channels = {row_bytes} for '{enc}'")
    buf = np.frombuffer(data, dtype=np.uint8) if not isinstance(data, np.ndarray) else data.ravel()
    if buf.dtype != np.uint8:
        buf = buf.view(np.uint8)
    needed = step * (height - 1) + row_bytes
    if buf.size < needed or buf.size > step * height:
        raise ImageDecodeError(
            f"data has {buf.size} bytes, expected {step * height} for {width}x{height} '{enc}' "
            f"with step {step}"
        )
    if buf.size < step * height:  # last row without its padding
        buf = np.concatenate([buf, np.zeros(step * height - buf.size, dtype=np.uint8)])
    rows = buf[: step * height].reshape(height, step)[:, :row_bytes]
    pixels = rows.reshape(height, width, channels)
    if enc == "rgb8":
        rgb = pixels
    elif enc == "bgr8":
        rgb = pixels[..., ::-1]
    elif enc == "rgba8":
        rgb = pixels[..., :3]
    elif enc == "bgra8":
        rgb = pixels[..., 2::-1]
    else:  # mono8
        rgb = np.repeat(pixels, 3, axis=2)
    return _check_size(np.array(rgb, dtype=np.uint8, order="C"), expected_size)


def decode_compressed(
    format: str,
    data: bytes | bytearray | memoryview | np.ndarray,
    expected_size: tuple[int, int] | None = None,
) -> np.ndarray:
    """Decode a ``sensor_msgs/CompressedImage`` (JPEG or PNG) to uint8 [H, W, 3] RGB."""
    import cv2

    fmt = format.lower()
    # ROS formats look like "jpeg", "png", "rgb8; jpeg compressed bgr8".
    if not any(name in fmt for name in COMPRESSED_FORMATS):
        raise ImageDecodeError(
            f"unsupported compressed format '{format}'; supported: {', '.join(COMPRESSED_FORMATS)}"
        )
    buf = np.frombuffer(data, dtype=np.uint8) if not isinstance(data, np.ndarray) else data.ravel()
    if buf.size == 0:
        raise ImageDecodeError(f"empty compressed image data (format '{format}')")
    try:
        bgr = cv2.imdecode(buf, cv2.IMREAD_COLOR)
    except cv2.error as exc:
        raise ImageDecodeError(f"corrupt compressed image (format '{format}'): {exc}") from exc
    if bgr is None or bgr.ndim != 3 or bgr.shape[2] != 3 or bgr.size == 0:
        raise ImageDecodeError(f"corrupt compressed image (format '{format}'): OpenCV could not decode it")
    return _check_size(np.ascontiguousarray(bgr[..., ::-1]), expected_size)


def encode_compressed(rgb: np.ndarray, format: str = "jpeg", quality: int = 90) -> bytes:
    """Encode uint8 [H, W, 3] RGB as JPEG or PNG bytes (for tests, synthetic publishers and bags)."""
    import cv2

    fmt = format.lower()
    ext = ".png" if fmt == "png" else ".jpg"
    params = [cv2.IMWRITE_JPEG_QUALITY, int(quality)] if ext == ".jpg" else []
    ok, encoded = cv2.imencode(ext, np.ascontiguousarray(rgb[..., ::-1]), params)
    if not ok:
        raise ImageDecodeError(f"could not encode image as {fmt}")
    return encoded.tobytes()
