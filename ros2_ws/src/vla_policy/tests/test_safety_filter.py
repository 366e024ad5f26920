from __future__ import annotations

import numpy as np
import pytest
from vla_policy.runtime.safety_filter import SafetyFilter, SafetyFilterConfig
from vla_policy.strict_config import ConfigError, from_dict

PERIOD = 0.02


def _filter(
    n: int = 3, vmax: float = 5.0, amax: float = 0.0, mode: str = "forward", period: float = PERIOD
) -> SafetyFilter:
    data = {
        "position_lower": [-1.0],
        "position_upper": [1.0],
        "max_velocity": [vmax],
        "max_acceleration": [amax],
    }
    return SafetyFilter(from_dict(SafetyFilterConfig, data), n, period, mode)


def test_first_command_ramps_from_measured() -> None:
    f = _filter()
    r = f.command([0.9, 0.9, 0.9], now=0.0, measured=np.zeros(3))
    np.testing.assert_allclose(r.command, [0.1, 0.1, 0.1])  # 5 rad/s for one 20 ms period
    assert r.rate_limited


def test_small_step_passes_unchanged() -> None:
    f = _filter()
    f.command([0.0, 0.0, 0.0], now=0.0, measured=np.zeros(3))
    r = f.command([0.05, -0.05, 0.0], now=PERIOD)
    np.testing.assert_allclose(r.command, [0.05, -0.05, 0.0])
    assert not r.clipped and not r.rate_limited


def test_position_limits_are_enforced() -> None:
    f = _filter(vmax=1000.0)
    f.command([0.0, 0.0, 0.0], now=0.0, measured=np.zeros(3))
    r = f.command([5.0, -5.0, 0.5], now=PERIOD)
    np.testing.assert_allclose(r.command, [1.0, -1.0, 0.5])
    assert r.clipped


def test_per_joint_limits() -> None:
    cfg = SafetyFilterConfig(position_lower=(-1.0, 0.0), position_upper=(1.0, 0.2), max_velocity=(100.0,))
    f = SafetyFilter(cfg, 2, PERIOD)
    f.command([0.0, 0.1], now=0.0, measured=[0.0, 0.1])
    np.testing.assert_allclose(f.command([0.5, 0.5], now=PERIOD).command, [0.5, 0.2])


@pytest.mark.parametrize("bad", [[np.nan, 0.0, 0.0], [np.inf, 0.0, 0.0], [0.0, 0.0]])
def test_bad_action_repeats_the_last_command(bad: list[float]) -> None:
    f = _filter()
    f.command([0.2, 0.2, 0.2], now=0.0, measured=[0.2, 0.2, 0.2])
    r = f.command(bad, now=PERIOD)
    assert r.held and r.reason
    np.testing.assert_allclose(r.command, [0.2, 0.2, 0.2])


def test_no_command_without_a_measured_position() -> None:
    assert _filter().command([0.0, 0.0, 0.0], now=0.0).command is None
    assert _filter().command([0.0, 0.0, 0.0], now=0.0, measured=[np.nan, 0.0, 0.0]).command is None


def test_velocity_bound_does_not_depend_on_the_tick_rate() -> None:
    """The same 0.2 s of commands toward a far target at 50 Hz, 1 kHz and 1 MHz: the joint never moves
    faster than max_velocity (the per-tick bound of old let 1 MHz sweep the whole range)."""
    for rate in (50.0, 1000.0, 1e6):
        f = _filter(n=1, vmax=2.0)
        f.command([0.0], now=0.0, measured=[0.0])
        n_ticks = int(0.2 * rate)
        times = np.arange(1, n_ticks + 1) / rate
        ticks = times[:: max(1, n_ticks // 4000)]  # at most 4000 commands, as often as the rate allows
        positions = [float(f.command([1.0], now=float(t)).command[0]) for t in ticks]
        assert positions[-1] <= 2.0 * 0.2 + 1e-9, rate


def test_a_late_tick_earns_no_larger_step() -> None:
    f = _filter(n=1, vmax=2.0)
    f.command([0.0], now=0.0, measured=[0.0])
    r = f.command([1.0], now=0.5)  # 25 periods late
    np.testing.assert_allclose(r.command, [2.0 * PERIOD])


def test_acceleration_limit_ramps_velocity_and_stops_at_the_target() -> None:
    f = _filter(n=1, vmax=2.0, amax=10.0)
    f.command([0.0], now=0.0, measured=[0.0])
    positions, t = [0.0], 0.0
    for _ in range(200):
        t += PERIOD
        positions.append(float(f.command([0.5], now=t).command[0]))
    v = np.diff(positions) / PERIOD
    assert np.all(np.abs(np.diff(v)) <= 10.0 * PERIOD + 1e-9)
    assert np.all(np.abs(v) <= 2.0 + 1e-9)
    assert max(positions) <= 0.5 + 1e-9  # no overshoot
    assert positions[-1] == pytest.approx(0.5)


def test_trajectory_points_respect_velocity_from_the_measured_position() -> None:
    f = _filter(n=2, vmax=1.0, mode="trajectory")
    actions = np.array([[0.5, 0.0], [0.5, 0.0], [0.6, -0.5]])
    times = np.array([0.1, 0.2, 0.3])
    traj = f.trajectory(actions, times, now=0.0, measured=np.zeros(2))
    assert traj is not None
    steps = np.abs(np.diff(np.vstack([np.zeros(2), traj.positions]), axis=0))
    assert np.all(steps <= 1.0 * 0.1 + 1e-9)
    np.testing.assert_allclose(traj.positions[0], [0.1, 0.0])


def test_trajectory_non_finite_point_repeats_the_previous() -> None:
    f = _filter(n=1, mode="trajectory")
    traj = f.trajectory(np.array([[0.05], [np.nan], [0.1]]), np.array([0.02, 0.04, 0.06]), 0.0, [0.0])
    assert traj is not None
    np.testing.assert_allclose(traj.positions[:, 0], [0.05, 0.05, 0.1])


def test_trajectory_without_measurement_starts_at_the_commanded_setpoint() -> None:
    f = _filter(n=1, vmax=1.0, mode="trajectory")
    f.trajectory(np.array([[0.2], [0.4]]), np.array([0.2, 0.4]), now=0.0, measured=[0.0])
    traj = f.trajectory(np.array([[1.0]]), np.array([0.1]), now=0.3, measured=None)
    assert traj is not None  # setpoint at 0.3 s is 0.3: at most 0.1 further in 0.1 s
    np.testing.assert_allclose(traj.positions[0], [0.4])


def test_trajectory_hold_without_measurement_is_where_the_controller_is_now() -> None:
    """The hold that jumped (issue 21): it must go to the trajectory's point at ``now``, not to the end of
    the chunk or an internal value the robot was never sent."""
    f = _filter(n=1, vmax=1.0, mode="trajectory")
    f.trajectory(np.array([[0.1], [0.2], [0.3], [0.4]]), np.array([0.1, 0.2, 0.3, 0.4]), 0.0, [0.0])
    hold = f.hold(now=0.15, measured=None)
    assert hold is not None and hold.hold
    np.testing.assert_allclose(hold.positions, [[0.15]])
    assert hold.time_from_start[0] == pytest.approx(PERIOD)


def test_trajectory_hold_with_measurement_is_the_measured_position() -> None:
    f = _filter(n=1, mode="trajectory")
    f.trajectory(np.array([[0.5]]), np.array([0.5]), 0.0, [0.0])
    hold = f.hold(now=0.1, measured=[0.07])
    np.testing.assert_allclose(hold.positions, [[0.07]])


def test_forward_hold_repeats_the_last_command() -> None:
    f = _filter()
    f.command([0.1, 0.0, 0.0], now=0.0, measured=[0.1, 0.0, 0.0])
    hold = f.hold(now=0.5, measured=[0.3, 0.3, 0.3])
    np.testing.assert_allclose(hold.positions, [[0.1, 0.0, 0.0]])


def test_hold_without_anything_known_is_none() -> None:
    assert _filter(mode="trajectory").hold(now=0.0) is None


def test_set_limits_takes_effect_at_the_next_command() -> None:
    f = _filter(n=1, vmax=5.0)
    f.command([0.0], now=0.0, measured=[0.0])
    f.set_limits(SafetyFilterConfig(position_lower=(-1.0,), position_upper=(1.0,), max_velocity=(1.0,)))
    np.testing.assert_allclose(f.command([1.0], now=PERIOD).command, [1.0 * PERIOD])


def test_config_refuses_contradictory_limits() -> None:
    with pytest.raises(ConfigError, match="position_lower >= position_upper"):
        SafetyFilterConfig(position_lower=(1.0,), position_upper=(0.0,))
    with pytest.raises(ConfigError, match="max_velocity"):
        SafetyFilterConfig(max_velocity=(0.0,))
    with pytest.raises(ConfigError, match="max_acceleration"):
        SafetyFilterConfig(max_acceleration=(-1.0,))


def test_config_length_mismatch_is_refused() -> None:
    cfg = SafetyFilterConfig(max_velocity=(1.0, 1.0))
    with pytest.raises(ConfigError, match="2 values for 3 joints"):
        SafetyFilter(cfg, 3, PERIOD)


def test_unknown_key_suggests_the_nearest() -> None:
    with pytest.raises(ConfigError, match="max_velocity"):
        from_dict(SafetyFilterConfig, {"max_velocty": [1.0]})


def test_estimate_adds_the_motion_commanded_since_the_measurement_across_trajectories() -> None:
    """A measurement taken while an older trajectory ran is compared with that trajectory's setpoint at
    its stamp, not with the start of the newest one (which would drop the motion in between)."""
    f = _filter(n=1, vmax=1.0, mode="trajectory")
    f.trajectory(np.array([[1.0]]), np.array([1.0]), now=0.0, measured=[0.0])  # 1 rad/s from 0
    f.trajectory(np.array([[1.0]]), np.array([1.0]), now=0.5, measured=[0.48])  # robot 0.02 behind
    # measured 0.38 at t=0.4 (0.02 behind the setpoint 0.4); at t=0.7 the newest trajectory commands
    # 0.48 + 0.2 * (1.0 - 0.48) / 1.0
    estimate = f.estimate(0.7, np.array([0.38]), measured_at=0.4)
    np.testing.assert_allclose(estimate, [0.38 + (0.48 + 0.2 * 0.52) - 0.4])


def test_first_point_is_reached_within_the_limit_from_a_robot_that_did_not_track() -> None:
    """The estimate assumes the robot followed what was commanded; when it did not (here it stayed at 0
    while 0.2 rad of motion was commanded since its last measurement) the first point comes later, so
    that even from the measured position it is reached within the velocity limit; the spacing stays."""
    f = _filter(n=1, vmax=1.0, mode="trajectory")
    f.trajectory(np.array([[1.0]]), np.array([1.0]), now=0.0, measured=[0.0])
    traj = f.trajectory(
        np.array([[1.0], [1.0]]), np.array([0.05, 0.10]), now=0.3, measured=[0.0], measured_at=0.1
    )
    assert traj is not None
    assert traj.positions[0, 0] == pytest.approx(0.25)  # the estimate 0.2, then 0.05 s at 1 rad/s
    assert traj.time_from_start[0] == pytest.approx(0.25)
    assert traj.time_from_start[1] - traj.time_from_start[0] == pytest.approx(0.05)
    hold = f.hold(now=0.3, measured=[0.0], measured_at=0.3)
    assert hold is not None
    assert hold.time_from_start[0] >= abs(hold.positions[0, 0]) / 1.0 - 1e-12
