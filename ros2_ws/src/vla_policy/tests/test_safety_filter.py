from __future__ import annotations

import numpy as np
import pytest
from vla_policy.runtime.safety_filter import SafetyFilter, SafetyFilterConfig
from vla_policy.strict_config import ConfigError, from_dict


def _filter(n: int = 3, step: float = 0.1) -> SafetyFilter:
    data = {"position_lower": [-1.0], "position_upper": [1.0], "max_step": [step]}
    cfg = from_dict(SafetyFilterConfig, data)
    return SafetyFilter(cfg, n)


def test_first_command_ramps_from_measured() -> None:
    f = _filter()
    r = f.filter([0.9, 0.9, 0.9], measured=[0.0, 0.0, 0.0])
    np.testing.assert_allclose(r.command, [0.1, 0.1, 0.1])
    assert r.rate_limited


def test_small_step_passes_unchanged() -> None:
    f = _filter()
    f.activate([0.0, 0.0, 0.0])
    r = f.filter([0.05, -0.05, 0.0])
    np.testing.assert_allclose(r.command, [0.05, -0.05, 0.0])
    assert not r.clipped and not r.rate_limited


def test_position_limits_are_enforced() -> None:
    f = _filter(step=10.0)
    f.activate([0.0, 0.0, 0.0])
    r = f.filter([5.0, -5.0, 0.5])
    np.testing.assert_allclose(r.command, [1.0, -1.0, 0.5])
    assert r.clipped


def test_per_joint_limits() -> None:
    cfg = SafetyFilterConfig(position_lower=(-1.0, 0.0), position_upper=(1.0, 0.2), max_step=(1.0, 1.0))
    f = SafetyFilter(cfg, 2)
    f.activate([0.0, 0.1])
    np.testing.assert_allclose(f.filter([0.5, 0.5]).command, [0.5, 0.2])


def test_nan_action_holds_last_command() -> None:
    f = _filter()
    f.activate([0.2, 0.2, 0.2])
    r = f.filter([np.nan, 0.0, 0.0])
    assert r.held and "non-finite" in r.reason
    np.testing.assert_allclose(r.command, [0.2, 0.2, 0.2])


def test_inf_action_holds_last_command() -> None:
    f = _filter()
    f.activate([0.0, 0.0, 0.0])
    assert f.filter([np.inf, 0.0, 0.0]).held


def test_wrong_action_size_holds() -> None:
    f = _filter()
    f.activate([0.0, 0.0, 0.0])
    r = f.filter([0.0, 0.0])
    assert r.held and "expected 3" in r.reason


def test_no_command_without_activation_or_measurement() -> None:
    r = _filter().filter([0.0, 0.0, 0.0])
    assert r.command is None and r.held


def test_nan_measurement_does_not_activate() -> None:
    r = _filter().filter([0.0, 0.0, 0.0], measured=[np.nan, 0.0, 0.0])
    assert r.command is None


def test_reset_ramps_again_from_new_measurement() -> None:
    f = _filter()
    f.activate([0.0, 0.0, 0.0])
    f.filter([0.1, 0.1, 0.1])
    f.reset()
    r = f.filter([0.9, 0.9, 0.9], measured=[0.5, 0.5, 0.5])
    np.testing.assert_allclose(r.command, [0.6, 0.6, 0.6])


def test_hold_command_is_measured_position_clipped() -> None:
    f = _filter()
    np.testing.assert_allclose(f.hold_command([2.0, 0.3, -0.3]), [1.0, 0.3, -0.3])


def test_hold_command_without_measurement_repeats_last() -> None:
    f = _filter()
    f.activate([0.4, 0.4, 0.4])
    np.testing.assert_allclose(f.hold_command(None), [0.4, 0.4, 0.4])


def test_hold_command_with_nothing_known_is_none() -> None:
    assert _filter().hold_command([np.nan, 0.0, 0.0]) is None


def test_commands_after_hold_ramp_from_hold() -> None:
    f = _filter()
    f.activate([0.0, 0.0, 0.0])
    f.hold_command([0.5, 0.5, 0.5])
    np.testing.assert_allclose(f.filter([-1.0, -1.0, -1.0]).command, [0.4, 0.4, 0.4])


def test_filter_sequence_limits_steps_and_keeps_state() -> None:
    f = _filter()
    f.activate([0.0, 0.0, 0.0])
    seq = f.filter_sequence(np.full((3, 3), 1.0))
    np.testing.assert_allclose(seq[:, 0], [0.1, 0.2, 0.3])
    np.testing.assert_allclose(f.last_command, [0.0, 0.0, 0.0])


def test_filter_sequence_repeats_point_on_nan() -> None:
    f = _filter()
    f.activate([0.0, 0.0, 0.0])
    seq = f.filter_sequence(np.array([[0.05] * 3, [np.nan] * 3, [0.1] * 3]))
    np.testing.assert_allclose(seq[:, 0], [0.05, 0.05, 0.1])


def test_within_limits_checks_position_and_step() -> None:
    f = _filter()
    assert f.within_limits(np.array([0.5, 0.5, 0.5]))
    assert not f.within_limits(np.array([1.5, 0.5, 0.5]))
    assert not f.within_limits(np.array([0.5, 0.5, 0.5]), previous=np.zeros(3))


def test_config_length_mismatch_is_rejected() -> None:
    cfg = SafetyFilterConfig(position_lower=(-1.0, -1.0), position_upper=(1.0,), max_step=(0.1,))
    with pytest.raises(ConfigError, match="2 values for 3 joints"):
        SafetyFilter(cfg, 3)


def test_config_lower_above_upper_is_rejected() -> None:
    with pytest.raises(ConfigError, match="position_lower >= position_upper"):
        SafetyFilter(SafetyFilterConfig(position_lower=(1.0,), position_upper=(0.0,)), 2)


def test_config_non_positive_step_is_rejected() -> None:
    with pytest.raises(ConfigError, match="max_step"):
        SafetyFilterConfig(max_step=(0.0,))


def test_config_scalar_is_accepted() -> None:
    assert from_dict(SafetyFilterConfig, {"max_step": 0.2}).max_step == (0.2,)
