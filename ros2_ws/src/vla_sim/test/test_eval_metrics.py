"""Closed-loop report metrics: the Wilson interval and the smoothness measure."""

import numpy as np
import pytest
from sim_harness import need_sim
from vla_sim.eval_metrics import demonstration_jerk, jerk_mean_abs, wilson_interval


def test_wilson_interval_matches_the_textbook_values() -> None:
    low, high = wilson_interval(40, 50)  # p = 0.8, n = 50
    assert low == pytest.approx(0.6696, abs=1e-4) and high == pytest.approx(0.8876, abs=1e-4)
    assert wilson_interval(0, 50)[0] == 0.0 and wilson_interval(50, 50)[1] == pytest.approx(1.0)
    assert wilson_interval(0, 0) == (0.0, 1.0)


def test_jerk_of_a_cubic_is_its_constant_third_derivative() -> None:
    t = np.arange(50)[:, None] * 0.02
    assert jerk_mean_abs(2.0 * t**3) == pytest.approx(12.0, rel=1e-6)
    assert jerk_mean_abs(np.zeros((3, 2))) is None


@need_sim
def test_the_scripted_demonstrations_are_smooth() -> None:
    assert 5.0 < demonstration_jerk("transfer_cube", [1000]) < 100.0
