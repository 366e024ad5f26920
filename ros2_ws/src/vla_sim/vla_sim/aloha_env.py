"""ALOHA bimanual simulation core (ROS-free): gym-aloha's MJCF scenes driven through dm_control.

- ``AlohaSim``: the joint-position robot (14-D action at 50 Hz: left 6 joints + gripper, right 6 + gripper;
  grippers normalised 0 = closed .. 1 = open), with selectable cameras (top, angle, front_close,
  left_wrist, right_wrist) rendered at a chosen size, headless (EGL by default).
- ``AlohaEESim``: the mocap-driven end-effector variant used by the scripted expert.

Speed fixes (ENVIRONMENT.md "Bimanual simulation"): shadows and multisampling are turned off right after
the model is loaded, before the first reset or render; gym-aloha's tasks render three 480x640 cameras in
every observation, so the tasks here render nothing by themselves (cameras are rendered on request).
MuJoCo 3 fix: ``eq_data[:, 10] = 5`` for the mocap welds (torque scale), as the scripted expert needs.
"""

from __future__ import annotations

import os

os.environ.setdefault("MUJOCO_GL", "egl")
if os.environ["MUJOCO_GL"] in ("egl", "osmesa"):
    os.environ.setdefault("PYOPENGL_PLATFORM", os.environ["MUJOCO_GL"])

import collections
import contextlib
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

TASKS: tuple[str, ...] = ("transfer_cube", "insertion")
CAMERAS: tuple[str, ...] = ("top", "angle", "front_close", "left_wrist", "right_wrist")
INSTRUCTIONS: dict[str, str] = {
    "transfer_cube": "pick up the cube and hand it to the other arm",
    "insertion": "pick up the peg and the socket and insert the peg into the socket",
}
DT = 0.02  # seconds per control step (50 Hz)
EPISODE_STEPS: dict[str, int] = {"transfer_cube": 400, "insertion": 500}
MAX_REWARD = 4
ACTION_DIM = 14
# ALOHA 14-D order -> the joint names of the node's default groups (config/aloha.yaml)
JOINT_NAMES: tuple[str, ...] = (
    *(f"left_joint_{i}" for i in range(6)),
    "left_gripper",
    *(f"right_joint_{i}" for i in range(6)),
    "right_gripper",
)


class SimError(RuntimeError):
    """The simulation cannot do what was asked; the message says why."""


def _check_task(task: str) -> str:
    if task not in TASKS:
        raise SimError(f"unknown task '{task}'; use one of {', '.join(TASKS)}")
    return task


def check_cameras(cameras: Sequence[str]) -> tuple[str, ...]:
    bad = [c for c in cameras if c not in CAMERAS]
    if bad:
        raise SimError(f"unknown camera(s) {bad}; available: {', '.join(CAMERAS)}")
    return tuple(cameras)


def sample_object_pose(task: str, seed: int | None) -> np.ndarray:
    """The object pose(s) of an episode (gym-aloha's samplers): 7 (cube) or 14 (peg, socket) values."""
    from gym_aloha.utils import sample_box_pose, sample_insertion_pose

    if _check_task(task) == "transfer_cube":
        return np.asarray(sample_box_pose(seed), dtype=np.float64)
    return np.concatenate(sample_insertion_pose(seed)).astype(np.float64)


def _make_tasks():
    """dm_control tasks without per-step rendering, with the object pose set from the outside."""
    from dm_control.suite import base
    from gym_aloha.constants import START_ARM_POSE
    from gym_aloha.tasks.sim import BimanualViperXTask, InsertionTask, TransferCubeTask
    from gym_aloha.tasks.sim_end_effector import (
        BimanualViperXEndEffectorTask,
        InsertionEndEffectorTask,
        TransferCubeEndEffectorTask,
    )

    def observation(task, physics):
        obs = collections.OrderedDict()
        obs["qpos"] = task.get_qpos(physics)
        obs["qvel"] = task.get_qvel(physics)
        obs["env_state"] = task.get_env_state(physics)
        return obs

    class JointTask(BimanualViperXTask):
        object_pose: np.ndarray | None = None

        def initialize_episode(self, physics):
            with physics.reset_context():
                physics.named.data.qpos[:16] = START_ARM_POSE
                np.copyto(physics.data.ctrl, START_ARM_POSE)
                physics.data.qpos[16:] = self.object_pose
            base.Task.initialize_episode(self, physics)

        def get_observation(self, physics):
            return observation(self, physics)

    class JointTransfer(JointTask, TransferCubeTask):
        pass

    class JointInsertion(JointTask, InsertionTask):
        pass

    class EETask(BimanualViperXEndEffectorTask):
        object_pose: np.ndarray | None = None

        def initialize_episode(self, physics):
            self.initialize_robots(physics)
            physics.data.qpos[16:] = self.object_pose
            base.Task.initialize_episode(self, physics)

        def get_observation(self, physics):
            obs = observation(self, physics)
            obs["mocap_pose_left"] = np.concatenate([physics.data.mocap_pos[0], physics.data.mocap_quat[0]])
            obs["mocap_pose_right"] = np.concatenate([physics.data.mocap_pos[1], physics.data.mocap_quat[1]])
            obs["gripper_ctrl"] = physics.data.ctrl.copy()
            return obs

    class EETransfer(EETask, TransferCubeEndEffectorTask):
        pass

    class EEInsertion(EETask, InsertionEndEffectorTask):
        pass

    return {
        ("joint", "transfer_cube"): JointTransfer,
        ("joint", "insertion"): JointInsertion,
        ("ee", "transfer_cube"): EETransfer,
        ("ee", "insertion"): EEInsertion,
    }


@dataclass(frozen=True)
class VideoSpec:
    """Frames for people, apart from what the policy sees: one camera at its own size, every ``every``
    steps (2: 25 frames per second of sim time)."""

    camera: str = "angle"
    height: int = 240
    width: int = 320
    every: int = 2


@dataclass
class StepResult:
    qpos: np.ndarray  # [14] ALOHA order, grippers normalised
    reward: float
    success: bool  # reward reached MAX_REWARD at this step
    time: float  # sim time, seconds since reset


class _BaseSim:
    kind = "joint"

    def __init__(self, task: str, cameras: Sequence[str] = ("top",), height: int = 240, width: int = 320):
        from dm_control import mujoco
        from dm_control.rl import control
        from gym_aloha.constants import ASSETS_DIR

        self.task_name = _check_task(task)
        self.cameras = check_cameras(cameras)
        if height <= 0 or width <= 0:
            raise SimError(f"image size must be positive, got {height}x{width}")
        self.height, self.width = int(height), int(width)
        prefix = "bimanual_viperx_end_effector_" if self.kind == "ee" else "bimanual_viperx_"
        physics = mujoco.Physics.from_xml_path(str(ASSETS_DIR / f"{prefix}{task}.xml"))
        # speed: before the first reset/render (ENVIRONMENT.md)
        physics.model.vis.quality.offsamples = 0
        physics.model.light_castshadow[:] = 0
        if self.kind == "ee" and physics.model.neq:
            physics.model.eq_data[:, 10] = 5  # MuJoCo 3: weld torque scale for the mocap welds
        self._task = _make_tasks()[(self.kind, task)]()
        self._env = control.Environment(
            physics, self._task, float("inf"), control_timestep=DT, n_sub_steps=None, flat_observation=False
        )
        self.physics = physics
        self.steps = 0
        self.max_reward = 0.0
        self.first_success_step: int | None = None
        self.step_times: list[float] = []
        self.render_times: list[float] = []
        self.last_obs: dict = {}
        self._cameras: dict[tuple[str, int, int], Any] = {}

    @property
    def time(self) -> float:
        return self.steps * DT

    def reset(self, seed: int | None = None, object_pose: np.ndarray | None = None) -> np.ndarray:
        pose = sample_object_pose(self.task_name, seed) if object_pose is None else np.asarray(object_pose)
        self._task.object_pose = pose.astype(np.float64)
        ts = self._env.reset()
        self.last_obs = dict(ts.observation)
        self.steps = 0
        self.max_reward = 0.0
        self.first_success_step = None
        return np.asarray(ts.observation["qpos"], dtype=np.float64)

    def _step(self, action: np.ndarray) -> StepResult:
        t0 = time.perf_counter()
        ts = self._env.step(action)
        self.step_times.append(time.perf_counter() - t0)
        self.steps += 1
        self.last_obs = dict(ts.observation)
        reward = float(ts.reward or 0.0)
        self.max_reward = max(self.max_reward, reward)
        success = reward >= MAX_REWARD
        if success and self.first_success_step is None:
            self.first_success_step = self.steps
        return StepResult(np.asarray(ts.observation["qpos"], dtype=np.float64), reward, success, self.time)

    @property
    def success(self) -> bool:
        return self.max_reward >= MAX_REWARD

    @property
    def object_state(self) -> np.ndarray:
        return np.asarray(self.physics.data.qpos[16:], dtype=np.float64).copy()

    def qpos(self) -> np.ndarray:
        return np.asarray(self._task.get_qpos(self.physics), dtype=np.float64)

    def qvel(self) -> np.ndarray:
        return np.asarray(self._task.get_qvel(self.physics), dtype=np.float64)

    def render(self, cameras: Sequence[str] | None = None) -> dict[str, np.ndarray]:
        """uint8 [H, W, 3] RGB per camera."""
        t0 = time.perf_counter()
        out = {
            c: np.ascontiguousarray(self._camera(c).render())
            for c in (self.cameras if cameras is None else check_cameras(cameras))
        }
        self.render_times.append(time.perf_counter() - t0)
        return out

    def render_view(self, camera: str, height: int, width: int) -> np.ndarray:
        """uint8 [height, width, 3] RGB of one camera at a size of its own (a view for people, e.g. a
        video, apart from what the policy sees)."""
        check_cameras([camera])
        return np.ascontiguousarray(self._camera(camera, int(height), int(width)).render())

    def _camera(self, name: str, height: int | None = None, width: int | None = None) -> Any:
        """One dm_control Camera per camera and size, kept: ``physics.render`` builds a new scene on every
        call."""
        size = (height or self.height, width or self.width)
        cam = self._cameras.get((name, *size))
        if cam is None:
            from dm_control.mujoco import Camera

            cam = self._cameras[(name, *size)] = Camera(self.physics, *size, camera_id=name)
        return cam

    def close(self) -> None:
        self._cameras.clear()
        with contextlib.suppress(Exception):
            self.physics.free()


class AlohaSim(_BaseSim):
    """The joint-position robot: ``step(action14)``."""

    kind = "joint"

    def joint_limits(self) -> tuple[np.ndarray, np.ndarray]:
        """Lower and upper limits per ALOHA dim (arm joints from the model; grippers 0..1)."""
        rng = self.physics.model.jnt_range
        arm_l, arm_r = rng[0:6], rng[8:14]
        lo = np.concatenate([arm_l[:, 0], [0.0], arm_r[:, 0], [0.0]])
        hi = np.concatenate([arm_l[:, 1], [1.0], arm_r[:, 1], [1.0]])
        return lo, hi

    def step(self, action: np.ndarray) -> StepResult:
        a = np.asarray(action, dtype=np.float64).reshape(-1)
        if a.shape != (ACTION_DIM,) or not np.all(np.isfinite(a)):
            raise SimError(f"action must be {ACTION_DIM} finite values, got shape {a.shape}")
        return self._step(a)


class AlohaEESim(_BaseSim):
    """The mocap-driven end-effector variant: ``step(action16)`` = per arm xyz, quat (wxyz), gripper."""

    kind = "ee"

    def step(self, action: np.ndarray) -> StepResult:
        return self._step(np.asarray(action, dtype=np.float64).reshape(-1))

    def mocap_poses(self) -> tuple[np.ndarray, np.ndarray]:
        return np.asarray(self.last_obs["mocap_pose_left"]), np.asarray(self.last_obs["mocap_pose_right"])

    def gripper_ctrl(self) -> np.ndarray:
        return np.asarray(self.physics.data.ctrl, dtype=np.float64).copy()
