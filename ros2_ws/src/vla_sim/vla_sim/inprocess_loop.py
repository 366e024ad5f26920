"""Closed loop in one process, no ROS: ``AlohaSim`` and the node's own ``PolicyRuntime``.

The runtime is the object the node drives (ObservationBuffer, ChunkScheduler, SafetyFilter, state
machine), built from the same parameter file (config/aloha.yaml) and run as the node runs in lock-step:
per 50 Hz tick ``t`` the joint positions and the cameras observed at ``t`` go in, ``tick(t)`` runs a due
inference to completion (an ``InlineWorker``: latency 0 in sim time), and what it returns (a trajectory
or a forward command) goes to the sim's ``CommandArbiter``, which interpolates a trajectory from its
current target as ``vla-sim serve`` does. Then one physics step. What differs from ``vla-sim eval`` is
only the transport (no DDS, no processes) and that cameras are rendered only at ticks that will run an
inference (the physics does not depend on rendering; with recording hooks, at every step): an 8 s
episode costs ~20 renders and inferences instead of 400.

Sim time restarts at ``SIM_T0`` in every episode and the runtime is reset, so an episode's outcome
depends on its seed (and the noise seed) alone, not on its place in a run.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from vla_policy.runtime.policy_runtime import RuntimeState

from vla_sim.aloha_env import (
    DT,
    EPISODE_STEPS,
    INSTRUCTIONS,
    JOINT_NAMES,
    AlohaSim,
    SimError,
    StepResult,
    VideoSpec,
)
from vla_sim.commands import CommandArbiter
from vla_sim.demos import DEFAULT_CAMERA_MAP
from vla_sim.episode_recorder import GROUP_INDICES
from vla_sim.eval_metrics import jerk_mean_abs

logger = logging.getLogger(__name__)

SIM_T0 = 1.0  # sim time of an episode's first tick, as vla-sim serve (a zero stamp means "unset")
PARAMS = Path(__file__).resolve().parents[1] / "config" / "aloha.yaml"


@dataclass(frozen=True)
class LoopConfig:
    blending: str = "none"
    output_mode: str = "trajectory"
    noise_seed: int = 1000  # the node's ``seed`` parameter: the same noise sequence in every episode
    episode_steps: int = 0  # 0 = the task's episode length
    height: int = 96
    width: int = 128
    task: str = "transfer_cube"
    torch_threads: int = 1  # a fixed count: the same kernels, the same episodes


class InProcessLoop:
    """One policy, one sim, one runtime; ``run_episode(seed)`` returns the episode's record."""

    def __init__(self, checkpoint: str | Path, cfg: LoopConfig, params: str | Path = PARAMS) -> None:
        """``SimError`` (one line) when the checkpoint, the parameters or the sim do not fit."""
        from vla_policy.runtime.inference import PolicySpec, WorkerFailure
        from vla_policy.runtime.inline_worker import InlineWorker
        from vla_policy.runtime.policy_runner import PolicyRunner
        from vla_policy.runtime.policy_runtime import PolicyRuntime, RuntimeConfig
        from vla_policy.runtime.settings import build_settings, read_parameter_file

        try:
            values = read_parameter_file(params)
            values.update(
                checkpoint=str(checkpoint),
                blending=cfg.blending,
                output_mode=cfg.output_mode,
                seed=int(cfg.noise_seed),
                lockstep=True,
                warmup_runs=0,
            )
            settings = build_settings(values)
            spec = PolicySpec(
                checkpoint=str(checkpoint),
                device="cpu",
                torch_threads=cfg.torch_threads,
                warmup_runs=0,
                state_dim=settings.joints.state_dim,
            )
            self.runner = PolicyRunner.load(spec)
        except (WorkerFailure, ValueError) as exc:
            raise SimError(str(exc)) from exc
        self.cfg = cfg
        self._now = math.nan
        worker = InlineWorker(spec, 0.0, self.runner)
        worker.start(0.0)
        self.runtime = PolicyRuntime(
            RuntimeConfig.from_settings(settings, self.runner.info),
            settings.joints,
            worker,
            self.runner.info,
            wall_clock=lambda: self._now,
        )
        if abs(self.runtime.period - DT) > 1e-9:
            raise SimError(f"control period {self.runtime.period} s differs from the sim's {DT} s")
        self.cameras = {s: m for s, m in DEFAULT_CAMERA_MAP.items() if m in self.runner.info.cameras}
        missing = set(self.runner.info.cameras) - set(self.cameras.values())
        if missing:
            raise SimError(f"the checkpoint's cameras {sorted(missing)} are not rendered by the sim")
        self.sim = AlohaSim(cfg.task, cameras=list(self.cameras), height=cfg.height, width=cfg.width)
        lo, hi = self.sim.joint_limits()
        groups = {g: [JOINT_NAMES[i] for i in idx] for g, idx in GROUP_INDICES.items()}
        self.arbiter = CommandArbiter(JOINT_NAMES, lo, hi, groups, command_timeout=math.inf)
        self.instruction = INSTRUCTIONS[cfg.task]

    def close(self) -> None:
        self.runtime.close()
        self.sim.close()

    def _observe(self, qpos: np.ndarray, now: float, images: dict[str, np.ndarray] | None) -> None:
        rt = self.runtime  # /joint_states as the sim publishes them, mapped by name as the node does
        rt.observe_joints(rt.joints.state_from_joint_state(JOINT_NAMES, qpos), now)
        if images is None and (rt.scheduler.needs_inference(now) or rt.state != RuntimeState.RUNNING):
            images = self.sim.render()
        for cam, rgb in (images or {}).items():
            rt.observe_image(self.cameras[cam], rgb, now)

    def _send(self, out: Any, now: float) -> None:
        """What the node would publish, per group in its joints' order, to the sim's controllers."""
        joints = self.runtime.joints
        if out.trajectory is not None:
            t = out.trajectory
            for group, values in joints.split_joints(t.positions).items():
                self.arbiter.on_trajectory(
                    group, joints.group(group), t.time_from_start.tolist(), values.tolist(), t.stamp, now
                )
        if out.command is not None:
            for group, values in joints.split_joints(out.command).items():
                self.arbiter.on_forward(group, values, now)

    def run_episode(
        self,
        seed: int,
        on_step: Callable[[int, np.ndarray, StepResult, dict[str, np.ndarray]], bool] | None = None,
        on_reset: Callable[[np.ndarray, dict[str, np.ndarray]], None] | None = None,
        video: VideoSpec | None = None,
    ) -> dict[str, Any]:
        """One episode from ``seed``, as ``vla-sim serve`` reports it (plus the inference latencies and
        the frames of ``video``). With hooks (recording) the cameras are rendered at every step:
        ``on_reset(qpos, images)`` once, ``on_step(k, target, result, images)`` after each physics step;
        it returns False to end the episode."""
        cfg = self.cfg
        steps = cfg.episode_steps or EPISODE_STEPS[cfg.task]
        rt = self.runtime
        if rt.active:
            rt.deactivate(self._now)
        rt.reset()
        qpos = self.sim.reset(seed=seed)
        self.arbiter.reset(qpos, SIM_T0)
        self.arbiter.rejected = self.arbiter.accepted = 0
        self._now = SIM_T0
        rt.observe_instruction(self.instruction)
        rt.activate(SIM_T0)
        render_every_step = on_step is not None or on_reset is not None
        images = self.sim.render() if render_every_step else None
        if on_reset is not None:
            on_reset(qpos, images or {})
        targets: list[np.ndarray] = []
        latencies: list[float] = []
        frames: list[np.ndarray] = []
        not_running = 0
        min_dist = math.inf
        for k in range(steps):
            now = self._now = SIM_T0 + k * DT
            self._observe(qpos, now, images)
            out = rt.tick(now)
            if out.chunk is not None:
                latencies.append(out.chunk.compute_s)
            if out.state != RuntimeState.RUNNING:
                not_running += 1
            self._send(out, now)
            target = self.arbiter.command(now)
            targets.append(target)
            result = self.sim.step(target)
            qpos = result.qpos
            min_dist = min(min_dist, self._finger_box_distance())
            images = self.sim.render() if render_every_step else None
            if video is not None and k % video.every == 0:
                frames.append(self.sim.render_view(video.camera, video.height, video.width))
            if on_step is not None and not on_step(k, target, result, images or {}):
                break
        s = self.sim
        return {
            "seed": seed,
            "task": cfg.task,
            "success": bool(s.success),
            "max_reward": s.max_reward,
            "steps": s.steps,
            "time_to_success": None if s.first_success_step is None else round(s.first_success_step * DT, 3),
            "reason": "time limit" if s.steps >= steps else "stopped",
            "rejected_commands": self.arbiter.rejected,
            "accepted_commands": self.arbiter.accepted,
            "final_qpos": [float(x) for x in s.qpos()],
            "jerk_mean_abs": jerk_mean_abs(np.asarray(targets)),
            "chunks": len(latencies),
            "ticks_not_running": not_running,
            "right_finger_box_min_dist": round(min_dist, 4),
            "inference_latencies": latencies,
            "frames": frames,
        }

    def _finger_box_distance(self) -> float:
        """Distance (m) from the box to the midpoint of the right gripper's fingers (transfer_cube)."""
        if self.cfg.task != "transfer_cube":
            return math.nan
        xpos = self.sim.physics.named.data.xpos
        mid = 0.5 * (xpos["vx300s_right/left_finger_link"] + xpos["vx300s_right/right_finger_link"])
        return float(np.linalg.norm(mid - xpos["box"]))
