"""A synthetic bimanual episode, written as an episode bag (for the demo and the tests).

- Joints: left arm, right arm (6 each) and the two grippers (``claw``), named as the node's defaults
  (``episode_bag.DEFAULT_JOINTS``). Each joint follows a smooth sum of sines (seeded); grippers open and
  close within [0, 1].
- Cameras (``head``, ``left_wrist``, ``right_wrist``): OpenCV-rendered scenes in which a coloured block
  slides across a table and two gripper markers follow the arms (marker size = gripper opening).
- Commands: the ground truth is the trajectory target, ``q(t + command_period)``, published at the
  command rate on ``<group>_controller/commands`` (Float64MultiArray) and/or ``joint_trajectory``.
- ``/instruction`` once at the start; optionally ``/clock``.

Deterministic: the same config (seed included) gives the same bag contents.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from vla_policy.data.episode_bag import (
    CLOCK_TOPIC,
    CLOCK_TYPE,
    COMPRESSED_IMAGE_TYPE,
    DEFAULT_CAMERAS,
    DEFAULT_CONTROLLERS,
    DEFAULT_JOINTS,
    FLOAT_ARRAY_TYPE,
    IMAGE_TYPE,
    INSTRUCTION_TOPIC,
    JOINT_STATE_TYPE,
    JOINT_STATES_TOPIC,
    STRING_TYPE,
    TRAJECTORY_TYPE,
    EpisodeBagWriter,
    EpisodeMetadata,
    MessageFactory,
    camera_topic,
    command_topic,
    sec_to_ns,
    trajectory_topic,
)
from vla_policy.runtime.joint_groups import GROUP_NAMES, JointGroups
from vla_policy.strict_config import require

COMMAND_MODES = ("forward", "trajectory", "both")


@dataclass(frozen=True)
class SyntheticEpisodeConfig:
    duration: float = 8.0  # seconds
    seed: int = 0
    cameras: tuple[str, ...] = DEFAULT_CAMERAS
    image_height: int = 96
    image_width: int = 128
    camera_rate: float = 15.0  # Hz
    joint_rate: float = 50.0  # Hz
    command_rate: float = 20.0  # Hz (the tiny checkpoint's 1 / dt)
    command_mode: str = "forward"  # forward | trajectory | both
    trajectory_points: int = 4  # points per JointTrajectory command
    compressed: bool = False  # CompressedImage (JPEG) instead of Image rgb8
    clock_rate: float = 0.0  # Hz of /clock (0 = none)
    start_time: float = 1_700_000_000.0  # seconds, the bag's first stamp
    instruction: str = "pick up the red block and put it in the bin"
    task: str = "synthetic_pick_place"
    embodiment: str = "bimanual_synthetic"
    success: bool = True
    joints: JointGroups = field(default_factory=lambda: DEFAULT_JOINTS)
    storage: str = "mcap"

    def __post_init__(self) -> None:
        require(self.duration > 0, f"duration must be > 0, got {self.duration}")
        for name in ("camera_rate", "joint_rate", "command_rate"):
            require(getattr(self, name) > 0, f"{name} must be > 0, got {getattr(self, name)}")
        require(self.clock_rate >= 0, f"clock_rate must be >= 0, got {self.clock_rate}")
        require(self.image_height >= 16 and self.image_width >= 16, "images must be at least 16x16")
        require(self.command_mode in COMMAND_MODES, f"command_mode must be one of {', '.join(COMMAND_MODES)}")
        require(len(self.cameras) >= 1, "at least one camera")


class JointMotion:
    """Smooth joint trajectories: q(t) for every joint of ``joints`` (state-vector order)."""

    def __init__(self, joints: JointGroups, seed: int) -> None:
        rng = np.random.default_rng(seed)
        n = joints.state_dim
        k = 3
        self.names = joints.joint_names
        is_grip = np.array([name in joints.claw for name in self.names])
        self.center = np.where(is_grip, 0.5, rng.uniform(-0.6, 0.6, n))
        amp = rng.uniform(0.08, 0.3, (n, k)) / np.arange(1, k + 1)
        self.amp = np.where(is_grip[:, None], np.array([0.4, 0.0, 0.0])[None, :], amp)
        self.freq = rng.uniform(0.1, 0.45, (n, k))
        self.phase = rng.uniform(0, 2 * math.pi, (n, k))

    def __call__(self, t: np.ndarray | float) -> np.ndarray:
        """[len(t), n] (or [n] for a scalar) joint positions at episode time ``t`` (seconds from start)."""
        tt = np.atleast_1d(np.asarray(t, dtype=np.float64))
        arg = 2 * math.pi * self.freq[None] * tt[:, None, None] + self.phase[None]
        q = self.center[None] + (self.amp[None] * np.sin(arg)).sum(-1)
        return q[0] if np.ndim(t) == 0 else q


def _draw_scene(
    cfg: SyntheticEpisodeConfig,
    camera: str,
    cam_index: int,
    t: float,
    q: np.ndarray,
    joints: JointGroups,
    background: np.ndarray,
) -> np.ndarray:
    import cv2

    h, w = cfg.image_height, cfg.image_width
    img = background.copy()
    # table
    cv2.rectangle(img, (0, int(0.55 * h)), (w - 1, h - 1), (150, 120, 90), -1)
    # the block slides along an ellipse over the episode
    phase = 2 * math.pi * t / max(cfg.duration, 1e-6)
    bx, by = 0.5 + 0.3 * math.cos(phase), 0.72 + 0.12 * math.sin(phase)
    # gripper markers from the arms' first joints; size from the grippers
    nl, nr = len(joints.left_arm), len(joints.right_arm)
    left = q[:nl]
    right = q[nl : nl + nr]
    grip = q[nl + nr :]
    lx = 0.25 + 0.15 * math.sin(float(left[0]) if nl else 0.0)
    ly = 0.45 + 0.2 * math.sin(float(left[1]) if nl > 1 else 0.0)
    rx = 0.75 + 0.15 * math.sin(float(right[0]) if nr else 0.0)
    ry = 0.45 + 0.2 * math.sin(float(right[1]) if nr > 1 else 0.0)
    gl = float(grip[0]) if grip.size > 0 else 0.5
    gr = float(grip[1]) if grip.size > 1 else gl
    zoom, cx, cy = 1.0, 0.5, 0.5
    if camera != "head":  # wrist cameras: zoomed on their arm's marker
        zoom = 2.0
        cx, cy = (lx, ly) if "left" in camera or cam_index == 1 else (rx, ry)

    def px(x: float, y: float) -> tuple[int, int]:
        return round(((x - cx) * zoom + 0.5) * w), round(((y - cy) * zoom + 0.5) * h)

    size = int(0.08 * w * zoom)
    x0, y0 = px(bx, by)
    cv2.rectangle(img, (x0 - size // 2, y0 - size // 2), (x0 + size // 2, y0 + size // 2), (220, 30, 30), -1)
    for (mx, my), g, colour in (((lx, ly), gl, (30, 200, 60)), ((rx, ry), gr, (40, 80, 230))):
        cxp, cyp = px(mx, my)
        radius = max(2, int((0.03 + 0.05 * min(max(g, 0.0), 1.0)) * w * zoom))
        cv2.circle(img, (cxp, cyp), radius, colour, -1)
        cv2.line(img, (cxp, cyp), (cxp, 0), colour, max(1, int(zoom)))
    return img


def write_synthetic_episode(
    path: str | Path, config: SyntheticEpisodeConfig | None = None
) -> EpisodeMetadata:
    """Write the episode bag at ``path`` (must not exist); returns its metadata."""
    cfg = config or SyntheticEpisodeConfig()
    joints = cfg.joints
    motion = JointMotion(joints, cfg.seed)
    rng = np.random.default_rng(cfg.seed + 1)
    meta = EpisodeMetadata(
        task=cfg.task,
        instruction=cfg.instruction,
        embodiment=cfg.embodiment,
        success=cfg.success,
        joints=joints,
        cameras=tuple(cfg.cameras),
        controllers=dict(DEFAULT_CONTROLLERS),
        extra={"vla.synthetic_seed": str(cfg.seed), "vla.command_rate_hz": f"{cfg.command_rate:g}"},
    )
    f = MessageFactory()
    t0 = cfg.start_time
    backgrounds = {
        cam: np.clip(
            rng.normal(0, 6, (cfg.image_height, cfg.image_width, 3)) + rng.uniform(40, 200, 3), 0, 255
        ).astype(np.uint8)
        for cam in cfg.cameras
    }
    events: list[tuple[float, int, str, object]] = []  # (time, order, topic, msg)

    def grid(rate: float) -> np.ndarray:
        n = math.floor(cfg.duration * rate + 1e-9) + 1
        return np.arange(n) / rate

    with EpisodeBagWriter(path, storage=cfg.storage, metadata=meta) as writer:
        cam_type = COMPRESSED_IMAGE_TYPE if cfg.compressed else IMAGE_TYPE
        for cam in cfg.cameras:
            writer.add_topic(camera_topic(cam), cam_type)
        writer.add_topic(JOINT_STATES_TOPIC, JOINT_STATE_TYPE)
        writer.add_topic(INSTRUCTION_TOPIC, STRING_TYPE)
        groups = joints.active_groups
        for g in groups:
            if cfg.command_mode in ("forward", "both"):
                writer.add_topic(command_topic(DEFAULT_CONTROLLERS[g]), FLOAT_ARRAY_TYPE)
            if cfg.command_mode in ("trajectory", "both"):
                writer.add_topic(trajectory_topic(DEFAULT_CONTROLLERS[g]), TRAJECTORY_TYPE)
        if cfg.clock_rate > 0:
            writer.add_topic(CLOCK_TOPIC, CLOCK_TYPE)
            for t in grid(cfg.clock_rate):
                events.append((t, 0, CLOCK_TOPIC, f.clock(t0 + t)))

        events.append((0.0, 1, INSTRUCTION_TOPIC, f.string(cfg.instruction)))
        for t in grid(cfg.joint_rate):
            q = motion(float(t))
            events.append((t, 2, JOINT_STATES_TOPIC, f.joint_state(joints.joint_names, q, t0 + t)))
        for i, cam in enumerate(cfg.cameras):
            for t in grid(cfg.camera_rate):
                rgb = _draw_scene(cfg, cam, i, float(t), motion(float(t)), joints, backgrounds[cam])
                msg = f.compressed_image(rgb, t0 + t, cam) if cfg.compressed else f.image(rgb, t0 + t, cam)
                events.append((t, 3, camera_topic(cam), msg))
        period = 1.0 / cfg.command_rate
        offsets = {
            g: o
            for g, o in zip(groups, np.cumsum([0] + [len(joints.group(g)) for g in groups]), strict=False)
        }
        for t in grid(cfg.command_rate):
            target = motion(float(t) + period)
            for g in groups:
                n = len(joints.group(g))
                values = target[offsets[g] : offsets[g] + n]
                if cfg.command_mode in ("forward", "both"):
                    events.append((t, 4, command_topic(DEFAULT_CONTROLLERS[g]), f.float_array(values)))
                if cfg.command_mode in ("trajectory", "both"):
                    times = [(k + 1) * period for k in range(cfg.trajectory_points)]
                    pts = motion(np.asarray(times) + float(t))[:, offsets[g] : offsets[g] + n]
                    events.append(
                        (
                            t,
                            5,
                            trajectory_topic(DEFAULT_CONTROLLERS[g]),
                            f.trajectory(joints.group(g), pts, times, t0 + t),
                        )
                    )
        events.sort(key=lambda e: (e[0], e[1]))
        for t, _, topic, msg in events:
            writer.write(topic, sec_to_ns(t0 + t), msg)
    return meta


__all__ = [
    "COMMAND_MODES",
    "GROUP_NAMES",
    "JointMotion",
    "SyntheticEpisodeConfig",
    "write_synthetic_episode",
]
