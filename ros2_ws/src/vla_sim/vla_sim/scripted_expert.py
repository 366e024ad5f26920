"""Scripted end-to-end expert for transfer_cube and insertion (ROS-free).

ACT's recipe (Zhao et al. 2023): an end-effector waypoint policy drives the mocap-driven scene, the joint
positions it produces (grippers replaced by the commanded, normalised gripper) become a 14-D joint
trajectory, and that trajectory is replayed on the joint-position robot (``AlohaSim``), which is what is
recorded and what decides success (reward 4 at any step).
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from vla_sim.aloha_env import (
    EPISODE_STEPS,
    AlohaEESim,
    AlohaSim,
    StepResult,
    sample_object_pose,
)


def quat_mul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Hamilton product, w first."""
    w1, x1, y1, z1 = a
    w2, x2, y2, z2 = b
    return np.array(
        [
            w1 * w2 - x1 * x2 - y1 * y2 - z1 * z2,
            w1 * x2 + x1 * w2 + y1 * z2 - z1 * y2,
            w1 * y2 - x1 * z2 + y1 * w2 + z1 * x2,
            w1 * z2 + x1 * y2 - y1 * x2 + z1 * w2,
        ]
    )


def quat_axis_angle(axis: Sequence[float], degrees: float) -> np.ndarray:
    ax = np.asarray(axis, dtype=np.float64)
    ax = ax / np.linalg.norm(ax)
    half = np.deg2rad(degrees) / 2
    return np.concatenate([[np.cos(half)], np.sin(half) * ax])


@dataclass
class Waypoint:
    t: int
    xyz: np.ndarray
    quat: np.ndarray
    gripper: float


def _wp(t: int, xyz, quat, gripper: float) -> Waypoint:
    return Waypoint(t, np.asarray(xyz, dtype=np.float64), np.asarray(quat, dtype=np.float64), float(gripper))


def _interp(traj: list[Waypoint], t: int) -> np.ndarray:
    if t >= traj[-1].t:
        w = traj[-1]
        return np.concatenate([w.xyz, w.quat, [w.gripper]])
    for a, b in itertools.pairwise(traj):
        if a.t <= t < b.t:
            f = (t - a.t) / (b.t - a.t)
            return np.concatenate(
                [
                    a.xyz + (b.xyz - a.xyz) * f,
                    a.quat + (b.quat - a.quat) * f,
                    [a.gripper + (b.gripper - a.gripper) * f],
                ]
            )
    w = traj[0]
    return np.concatenate([w.xyz, w.quat, [w.gripper]])


def transfer_cube_waypoints(
    left0: np.ndarray, right0: np.ndarray, box: np.ndarray
) -> tuple[list[Waypoint], list[Waypoint]]:
    box_xyz = box[:3]
    pick = quat_mul(right0[3:], quat_axis_angle([0, 1, 0], -60))
    meet_left = quat_axis_angle([1, 0, 0], 90)
    meet = np.array([0.0, 0.5, 0.25])
    left = [
        _wp(0, left0[:3], left0[3:], 0),
        _wp(100, meet + np.array([-0.1, 0, -0.02]), meet_left, 1),
        _wp(260, meet + np.array([0.02, 0, -0.02]), meet_left, 1),
        _wp(310, meet + np.array([0.02, 0, -0.02]), meet_left, 0),
        _wp(360, meet + np.array([-0.1, 0, -0.02]), [1, 0, 0, 0], 0),
        _wp(400, meet + np.array([-0.1, 0, -0.02]), [1, 0, 0, 0], 0),
    ]
    right = [
        _wp(0, right0[:3], right0[3:], 0),
        _wp(90, box_xyz + np.array([0, 0, 0.08]), pick, 1),
        _wp(130, box_xyz + np.array([0, 0, -0.015]), pick, 1),
        _wp(170, box_xyz + np.array([0, 0, -0.015]), pick, 0),
        _wp(200, meet + np.array([0.05, 0, 0]), pick, 0),
        _wp(220, meet, pick, 0),
        _wp(310, meet, pick, 1),
        _wp(360, meet + np.array([0.1, 0, 0]), pick, 1),
        _wp(400, meet + np.array([0.1, 0, 0]), pick, 1),
    ]
    return left, right


PEG_GRASP_Z = (
    -0.04
)  # grasp height relative to the peg centre (ACT: -0.03; lower holds it level in the replay)
INSERT_EXTRA = 0.015  # metres per arm past ACT's insertion pose: the joint replay lags the mocap


def insertion_waypoints(
    left0: np.ndarray, right0: np.ndarray, objects: np.ndarray
) -> tuple[list[Waypoint], list[Waypoint]]:
    peg_xyz, socket_xyz = objects[:3], objects[7:10]
    pick_right = quat_mul(right0[3:], quat_axis_angle([0, 1, 0], -60))
    pick_left = quat_mul(right0[3:], quat_axis_angle([0, 1, 0], 60))
    meet = np.array([0.0, 0.5, 0.15])
    lift_right = 0.00715
    left = [
        _wp(0, left0[:3], left0[3:], 0),
        _wp(120, socket_xyz + np.array([0, 0, 0.08]), pick_left, 1),
        _wp(170, socket_xyz + np.array([0, 0, -0.03]), pick_left, 1),
        _wp(220, socket_xyz + np.array([0, 0, -0.03]), pick_left, 0),
        _wp(285, meet + np.array([-0.1, 0, 0]), pick_left, 0),
        _wp(340, meet + np.array([-0.05, 0, 0]), pick_left, 0),
        _wp(
            420, meet + np.array([-0.05 + INSERT_EXTRA, 0, 0]), pick_left, 0
        ),  # push a little deeper (replay lags)
        _wp(500, meet + np.array([-0.05 + INSERT_EXTRA, 0, 0]), pick_left, 0),
    ]
    right = [
        _wp(0, right0[:3], right0[3:], 0),
        _wp(120, peg_xyz + np.array([0, 0, 0.08]), pick_right, 1),
        _wp(170, peg_xyz + np.array([0, 0, PEG_GRASP_Z]), pick_right, 1),
        _wp(220, peg_xyz + np.array([0, 0, PEG_GRASP_Z]), pick_right, 0),
        _wp(285, meet + np.array([0.1, 0, lift_right]), pick_right, 0),
        _wp(340, meet + np.array([0.05, 0, lift_right]), pick_right, 0),
        _wp(420, meet + np.array([0.05 - INSERT_EXTRA, 0, lift_right]), pick_right, 0),
        _wp(500, meet + np.array([0.05 - INSERT_EXTRA, 0, lift_right]), pick_right, 0),
    ]
    return left, right


WAYPOINTS = {"transfer_cube": transfer_cube_waypoints, "insertion": insertion_waypoints}


def plan_joint_trajectory(
    task: str, seed: int | None, steps: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Run the end-effector expert (no rendering) and return (object pose, joint commands [steps, 14])."""
    from gym_aloha.constants import normalize_puppet_gripper_position

    steps = EPISODE_STEPS[task] if steps is None else int(steps)
    pose = sample_object_pose(task, seed)
    ee = AlohaEESim(task, cameras=())
    try:
        ee.reset(object_pose=pose)
        left0, right0 = ee.mocap_poses()
        left_wp, right_wp = WAYPOINTS[task](left0, right0, pose)
        joints = []
        for t in range(steps):
            ee.step(np.concatenate([_interp(left_wp, t), _interp(right_wp, t)]))
            q = ee.qpos().copy()
            ctrl = ee.gripper_ctrl()
            q[6] = normalize_puppet_gripper_position(ctrl[0])
            q[13] = normalize_puppet_gripper_position(ctrl[2])
            joints.append(q)
    finally:
        ee.close()
    return pose, np.asarray(joints)


@dataclass
class ExpertEpisode:
    task: str
    seed: int | None
    success: bool
    max_reward: float
    first_success_step: int | None
    steps: int
    actions: np.ndarray  # [steps, 14] joint commands
    wall_s: float
    sim_step_s: list[float] = field(default_factory=list)
    render_s: list[float] = field(default_factory=list)


def run_expert_episode(
    task: str,
    seed: int | None,
    cameras: Sequence[str] = ("top",),
    height: int = 240,
    width: int = 320,
    on_step: Callable[[int, np.ndarray, StepResult, dict[str, np.ndarray]], None] | None = None,
    on_reset: Callable[[np.ndarray, dict[str, np.ndarray]], None] | None = None,
    sim: AlohaSim | None = None,
    render: bool = True,
) -> ExpertEpisode:
    """Plan with the EE expert, replay on the joint robot. ``on_reset(qpos, images)`` once, then
    ``on_step(k, action, result, images)`` per step (images rendered after the step, or empty)."""
    t0 = time.perf_counter()
    pose, actions = plan_joint_trajectory(task, seed)
    own = sim is None
    sim = sim or AlohaSim(task, cameras=cameras, height=height, width=width)
    try:
        qpos = sim.reset(object_pose=pose)
        images = sim.render() if render else {}
        if on_reset is not None:
            on_reset(qpos, images)
        for k, a in enumerate(actions):
            res = sim.step(a)
            images = sim.render() if render else {}
            if on_step is not None:
                on_step(k, a, res, images)
        return ExpertEpisode(
            task=task,
            seed=seed,
            success=sim.success,
            max_reward=sim.max_reward,
            first_success_step=sim.first_success_step,
            steps=len(actions),
            actions=actions,
            wall_s=time.perf_counter() - t0,
            sim_step_s=list(sim.step_times),
            render_s=list(sim.render_times),
        )
    finally:
        sim.step_times.clear()
        sim.render_times.clear()
        if own:
            sim.close()
