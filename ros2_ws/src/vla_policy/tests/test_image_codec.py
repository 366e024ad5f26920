from __future__ import annotations

import numpy as np
import pytest
from vla_policy.data.image_codec import ImageDecodeError, decode_compressed, decode_raw, encode_compressed


def _rgb(h: int = 4, w: int = 5) -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)


def test_rgb8_roundtrip() -> None:
    img = _rgb()
    out = decode_raw("rgb8", 4, 5, 15, img.tobytes())
    assert out.dtype == np.uint8 and out.shape == (4, 5, 3)
    np.testing.assert_array_equal(out, img)


def test_bgr8_is_swapped_to_rgb() -> None:
    img = _rgb()
    out = decode_raw("bgr8", 4, 5, 15, img[..., ::-1].tobytes())
    np.testing.assert_array_equal(out, img)


def test_mono8_is_replicated_to_three_channels() -> None:
    mono = np.arange(20, dtype=np.uint8).reshape(4, 5)
    out = decode_raw("mono8", 4, 5, 5, mono.tobytes())
    assert out.shape == (4, 5, 3)
    for c in range(3):
        np.testing.assert_array_equal(out[..., c], mono)


def test_rgba8_drops_alpha() -> None:
    img = _rgb()
    rgba = np.concatenate([img, np.full((4, 5, 1), 7, np.uint8)], axis=2)
    np.testing.assert_array_equal(decode_raw("rgba8", 4, 5, 20, rgba.tobytes()), img)


def test_bgra8_drops_alpha_and_swaps() -> None:
    img = _rgb()
    bgra = np.concatenate([img[..., ::-1], np.full((4, 5, 1), 7, np.uint8)], axis=2)
    np.testing.assert_array_equal(decode_raw("bgra8", 4, 5, 20, bgra.tobytes()), img)


def test_step_padding_is_skipped() -> None:
    img = _rgb()
    padded = np.zeros((4, 20), np.uint8)
    padded[:, :15] = img.reshape(4, 15)
    padded[:, 15:] = 255
    np.testing.assert_array_equal(decode_raw("rgb8", 4, 5, 20, padded.tobytes()), img)


def test_output_is_writable_copy() -> None:
    data = _rgb().tobytes()
    out = decode_raw("rgb8", 4, 5, 15, data)
    assert out.flags.c_contiguous and out.flags.writeable


def test_unsupported_encoding_is_rejected_with_name() -> None:
    with pytest.raises(ImageDecodeError, match="16UC1"):
        decode_raw("16UC1", 4, 5, 10, bytes(40))


def test_size_mismatch_is_rejected() -> None:
    with pytest.raises(ImageDecodeError, match="bytes"):
        decode_raw("rgb8", 4, 5, 15, bytes(10))


def test_step_smaller_than_row_is_rejected() -> None:
    with pytest.raises(ImageDecodeError, match="step"):
        decode_raw("rgb8", 4, 5, 10, bytes(60))


def test_zero_size_is_rejected() -> None:
    with pytest.raises(ImageDecodeError, match="size"):
        decode_raw("rgb8", 0, 5, 15, b"")


def test_expected_size_mismatch_is_rejected() -> None:
    with pytest.raises(ImageDecodeError, match="expected"):
        decode_raw("rgb8", 4, 5, 15, _rgb().tobytes(), expected_size=(8, 5))


def test_expected_size_match_passes() -> None:
    assert decode_raw("rgb8", 4, 5, 15, _rgb().tobytes(), expected_size=(4, 5)).shape == (4, 5, 3)


def test_png_roundtrip_is_exact() -> None:
    img = _rgb(16, 12)
    np.testing.assert_array_equal(decode_compressed("png", encode_compressed(img, "png")), img)


def test_jpeg_decodes_to_rgb_close_to_input() -> None:
    img = np.zeros((32, 32, 3), np.uint8)
    img[..., 0] = 200  # red
    out = decode_compressed("jpeg", encode_compressed(img, "jpeg", quality=95))
    assert out.shape == (32, 32, 3)
    assert abs(int(out[..., 0].mean()) - 200) < 5 and out[..., 2].mean() < 10


def test_ros_style_compressed_format_string_is_accepted() -> None:
    img = _rgb(8, 8)
    out = decode_compressed("rgb8; png compressed bgr8", encode_compressed(img, "png"))
    np.testing.assert_array_equal(out, img)


def test_corrupt_jpeg_is_rejected() -> None:
    data = encode_compressed(_rgb(16, 16), "jpeg")
    with pytest.raises(ImageDecodeError, match="corrupt"):
        decode_compressed("jpeg", b"\xff\xd8garbage" + data[len(data) // 2 :][:10])


def test_empty_compressed_is_rejected() -> None:
    with pytest.raises(ImageDecodeError, match="empty"):
        decode_compressed("jpeg", b"")


def test_unknown_compressed_format_is_rejected() -> None:
    with pytest.raises(ImageDecodeError, match="tiff"):
        decode_compressed("tiff", b"abc")


def test_compressed_expected_size_mismatch_is_rejected() -> None:
    with pytest.raises(ImageDecodeError, match="expected"):
        decode_compressed("png", encode_compressed(_rgb(8, 8), "png"), expected_size=(16, 16))
