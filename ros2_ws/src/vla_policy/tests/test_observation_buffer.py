from __future__ import annotations

import numpy as np
import pytest
from vla_policy.runtime.observation_buffer import (
    InstructionRejected,
    ObservationBuffer,
    ObservationBufferConfig,
    ObservationNotReady,
)
from vla_policy.strict_config import ConfigError, from_dict

IMG = np.zeros((8, 8, 3), np.uint8)
STATE = np.arange(4, dtype=np.float32)


def _buffer(**kw: object) -> ObservationBuffer:
    cfg = {"cameras": ["top", "wrist"], "max_image_age": 0.5, "max_state_age": 0.2, "max_camera_skew": 0.1}
    cfg.update(kw)
    return ObservationBuffer(from_dict(ObservationBufferConfig, cfg))


def _fill(buf: ObservationBuffer, t: float = 10.0) -> None:
    for cam in buf.config.cameras:
        buf.update_image(cam, IMG, t)
    buf.update_state(STATE, t)
    buf.set_instruction("pick up the cube")


def test_snapshot_returns_observation_with_all_inputs() -> None:
    pytest.importorskip("vla_policy.observation")
    buf = _buffer()
    _fill(buf)
    obs = buf.snapshot(10.05)
    assert set(obs.images) == {"top", "wrist"}
    np.testing.assert_array_equal(obs.state, STATE)
    assert obs.instruction == "pick up the cube"
    assert obs.stamp == pytest.approx(10.0)


def test_ready_when_everything_is_fresh() -> None:
    buf = _buffer()
    _fill(buf)
    assert buf.check(10.05) is None


def test_missing_camera_is_named() -> None:
    buf = _buffer()
    buf.update_image("top", IMG, 10.0)
    buf.update_state(STATE, 10.0)
    buf.set_instruction("go")
    with pytest.raises(ObservationNotReady, match="wrist"):
        buf.snapshot(10.0)


def test_stale_image_is_reported() -> None:
    buf = _buffer()
    _fill(buf)
    assert "stale" in (buf.check(10.6) or "")


def test_stale_state_is_reported_before_images_expire() -> None:
    buf = _buffer()
    _fill(buf)
    reason = buf.check(10.3)
    assert reason is not None and "joint state is stale" in reason and "camera" not in reason


def test_recovers_when_fresh_input_returns() -> None:
    buf = _buffer()
    _fill(buf)
    assert buf.check(11.0) is not None
    _fill(buf, 11.0)
    assert buf.check(11.0) is None


def test_camera_skew_is_reported() -> None:
    buf = _buffer()
    _fill(buf)
    buf.update_image("top", IMG, 10.3)
    buf.update_state(STATE, 10.3)
    reason = buf.check(10.3)
    assert reason is not None and "skew" in reason


def test_future_stamp_is_reported() -> None:
    buf = _buffer()
    _fill(buf, 12.0)
    assert "future" in (buf.check(10.0) or "")


def test_no_instruction_is_reported() -> None:
    buf = _buffer()
    for cam in ("top", "wrist"):
        buf.update_image(cam, IMG, 1.0)
    buf.update_state(STATE, 1.0)
    assert buf.check(1.0) == "no instruction"


def test_empty_instruction_is_rejected_with_reason() -> None:
    buf = _buffer()
    with pytest.raises(InstructionRejected, match="empty"):
        buf.set_instruction("   ")


def test_too_long_instruction_is_rejected_with_reason() -> None:
    buf = _buffer(max_instruction_length=100)
    with pytest.raises(InstructionRejected, match="limit of 100"):
        buf.set_instruction("x" * 100_000)


def test_rejected_instruction_clears_active_one_and_is_reported() -> None:
    buf = _buffer()
    _fill(buf)
    with pytest.raises(InstructionRejected):
        buf.set_instruction("")
    assert buf.instruction is None
    assert "no valid instruction (instruction is empty)" in (buf.check(10.0) or "")


def test_instruction_is_stripped() -> None:
    buf = _buffer()
    assert buf.set_instruction("  fold the towel \n") == "fold the towel"


def test_unknown_camera_is_refused() -> None:
    with pytest.raises(KeyError, match="unknown camera"):
        _buffer().update_image("side", IMG, 0.0)


def test_non_rgb_image_is_refused() -> None:
    with pytest.raises(ValueError, match="uint8"):
        _buffer().update_image("top", np.zeros((8, 8), np.uint8), 0.0)


def test_nan_state_is_refused() -> None:
    with pytest.raises(ValueError, match="non-finite"):
        _buffer().update_state(np.array([0.0, np.nan]), 0.0)


def test_reported_error_is_included_in_reason() -> None:
    buf = _buffer()
    buf.report_error("top", "unsupported image encoding '16UC1'")
    assert "16UC1" in (buf.check(0.0) or "")


def test_ages_per_source() -> None:
    buf = _buffer()
    buf.update_image("top", IMG, 1.0)
    ages = buf.ages(1.5)
    assert ages["top"] == pytest.approx(0.5) and ages["wrist"] is None and ages["joint_states"] is None


def test_clear_drops_inputs_but_keeps_instruction() -> None:
    buf = _buffer()
    _fill(buf)
    buf.clear()
    assert buf.latest_state() is None and buf.instruction == "pick up the cube"


def test_config_rejects_non_positive_age() -> None:
    with pytest.raises(ConfigError, match="max_image_age"):
        ObservationBufferConfig(cameras=("top",), max_image_age=0.0)


def test_config_rejects_duplicate_cameras() -> None:
    with pytest.raises(ConfigError, match="duplicate"):
        ObservationBufferConfig(cameras=("top", "top"))


def test_history_frames_are_the_latest_received_oldest_first() -> None:
    buf = _buffer(history_frames=3)
    for i in range(4):
        for cam in buf.config.cameras:
            buf.update_image(cam, np.full((8, 8, 3), i, np.uint8), 10.0 + 0.01 * i)
    buf.update_state(STATE, 10.03)
    buf.set_instruction("stack the cups")
    obs = buf.snapshot(10.05)
    assert obs.images["top"].shape == (3, 8, 8, 3)
    assert [int(f[0, 0, 0]) for f in obs.images["top"]] == [1, 2, 3]


def test_history_not_yet_full_is_not_ready_with_reason() -> None:
    buf = _buffer(history_frames=2)
    _fill(buf)
    with pytest.raises(ObservationNotReady, match="1 of 2 history frames"):
        buf.snapshot(10.05)


def test_resolution_change_restarts_the_history() -> None:
    buf = _buffer(history_frames=2)
    _fill(buf)
    for cam in buf.config.cameras:
        buf.update_image(cam, np.zeros((4, 4, 3), np.uint8), 10.01)
    with pytest.raises(ObservationNotReady, match="1 of 2 history frames"):
        buf.snapshot(10.05)
