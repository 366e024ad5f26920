"""What a closed-loop evaluation reports beyond the success count: its 95 % Wilson interval, how far the
policy got (touched / lifted), and how smoothly it moved against the scripted demonstrations."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from vla_policy.evaluation.eval_report import jerk

from vla_sim.aloha_env import DT

TOUCHED_REWARD = 1  # transfer_cube: the right gripper touches the cube
LIFTED_REWARD = 2  # transfer_cube: the cube is lifted


def wilson_interval(successes: int, n: int, z: float = 1.959964) -> tuple[float, float]:
    """95 % Wilson score interval of a success rate (``z`` for other levels); (0, 1) without episodes."""
    if n <= 0:
        return (0.0, 1.0)
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return (max(0.0, centre - half), min(1.0, centre + half))


def jerk_mean_abs(targets: np.ndarray, period: float = DT) -> float | None:
    """Mean |third difference| / period^3 of a [T, J] series of joint targets (rad/s^3 for the arms);
    None when shorter than 4 rows."""
    targets = np.asarray(targets, dtype=np.float64)
    if targets.ndim != 2:
        return None
    j = jerk(targets, period)  # the offline report's measure, over runs of finite rows
    return float(np.mean(np.abs(j))) if j.size else None


def demonstration_jerk(task: str, seeds: Sequence[int]) -> float | None:
    """Mean of ``jerk_mean_abs`` over the scripted expert's commands for these seeds (its plan only: no
    rendering, ~0.2 s per seed), the reference the policy's smoothness is compared with."""
    from vla_sim.scripted_expert import plan_joint_trajectory

    values = [jerk_mean_abs(plan_joint_trajectory(task, seed)[1]) for seed in seeds]
    return float(np.mean([v for v in values if v is not None])) if values else None
