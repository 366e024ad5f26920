"""Scripted demonstrations recorded as episode bags (``vla_policy.data.episode_bag`` format), ROS-free.

Per step k (sim time t_k = k * DT): the cameras and /joint_states observed at t_k, then the command applied
from t_k to t_{k+1} on ``<group>_controller/commands`` (Float64MultiArray, the group's joints in config
order), and /clock. /instruction is written once at t = 0. Only successful episodes are kept.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vla_sim.aloha_env import DT, INSTRUCTIONS, JOINT_NAMES, AlohaSim, check_cameras
from vla_sim.scripted_expert import run_expert_episode

DEFAULT_CAMERA_MAP: dict[str, str] = {"top": "head", "left_wrist": "left_wrist", "right_wrist": "right_wrist"}
# ALOHA 14-D index -> group, in the node's group order (config/aloha.yaml)
GROUP_INDICES: dict[str, list[int]] = {
    "left_arm": [0, 1, 2, 3, 4, 5],
    "right_arm": [7, 8, 9, 10, 11, 12],
    "claw": [6, 13],
}


def parse_camera_map(text: str | None) -> dict[str, str]:
    """'top:head,left_wrist,right_wrist' -> {sim camera: model camera name}."""
    if not text:
        return dict(DEFAULT_CAMERA_MAP)
    out: dict[str, str] = {}
    for item in text.split(","):
        item = item.strip()
        if not item:
            continue
        sim_name, _, model_name = item.partition(":")
        out[sim_name] = model_name or sim_name
    check_cameras(list(out))
    return out


def split_groups(action14: np.ndarray) -> dict[str, np.ndarray]:
    a = np.asarray(action14, dtype=np.float64)
    return {g: a[idx] for g, idx in GROUP_INDICES.items()}


@dataclass
class DemoSummary:
    task: str
    requested: int
    recorded: int
    attempts: int
    failed_seeds: list[int]
    wall_s: float
    episodes_per_minute: float
    sim_step_ms_median: float
    render_ms_median: float
    bags: list[str]

    def to_dict(self) -> dict:
        return dict(self.__dict__)


def record_demos(
    task: str,
    episodes: int,
    out: str | Path,
    camera_map: Mapping[str, str] | None = None,
    height: int = 240,
    width: int = 320,
    seed: int = 0,
    max_attempts: int | None = None,
    storage: str = "mcap",
    log=print,
) -> DemoSummary:
    from vla_policy.data.episode_bag import (
        CLOCK_TOPIC,
        CLOCK_TYPE,
        FLOAT_ARRAY_TYPE,
        IMAGE_TYPE,
        INSTRUCTION_TOPIC,
        JOINT_STATE_TYPE,
        JOINT_STATES_TOPIC,
        STRING_TYPE,
        EpisodeBagWriter,
        EpisodeMetadata,
        MessageFactory,
        camera_topic,
        command_topic,
        sec_to_ns,
    )
    from vla_policy.runtime.joint_groups import JointGroups

    cams = dict(camera_map or DEFAULT_CAMERA_MAP)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    max_attempts = max_attempts if max_attempts is not None else 2 * episodes + 5
    joints = JointGroups(
        left_arm=tuple(JOINT_NAMES[i] for i in GROUP_INDICES["left_arm"]),
        right_arm=tuple(JOINT_NAMES[i] for i in GROUP_INDICES["right_arm"]),
        claw=tuple(JOINT_NAMES[i] for i in GROUP_INDICES["claw"]),
    )
    controllers = {g: f"{g}_controller" for g in GROUP_INDICES}
    sim = AlohaSim(task, cameras=list(cams), height=height, width=width)
    fac = MessageFactory()
    t0 = time.perf_counter()
    bags: list[str] = []
    failed: list[int] = []
    step_s: list[float] = []
    render_s: list[float] = []
    attempts = 0
    s = seed
    try:
        while len(bags) < episodes and attempts < max_attempts:
            attempts += 1
            path = out / f"episode_{len(bags):06d}"
            tmp = out / f".tmp_episode_{s}"
            if tmp.exists():
                shutil.rmtree(tmp)
            meta = EpisodeMetadata(
                task=task,
                instruction=INSTRUCTIONS[task],
                embodiment="aloha_sim",
                success=True,
                joints=joints,
                cameras=tuple(cams.values()),
                camera_topics=tuple(camera_topic(m) for m in cams.values()),
                controllers=controllers,
                extra={"vla_sim.seed": str(s), "vla_sim.dt": str(DT), "vla_sim.sim_cameras": ",".join(cams)},
            )
            # the storage file is named for the final bag directory (episode_N_0.mcap), as rosbag2 names it
            writer = EpisodeBagWriter(tmp, storage=storage, metadata=meta, bag_name=path.name)
            for m in cams.values():
                writer.add_topic(camera_topic(m), IMAGE_TYPE)
            writer.add_topic(JOINT_STATES_TOPIC, JOINT_STATE_TYPE)
            writer.add_topic(INSTRUCTION_TOPIC, STRING_TYPE)
            writer.add_topic(CLOCK_TOPIC, CLOCK_TYPE)
            for c in controllers.values():
                writer.add_topic(command_topic(c), FLOAT_ARRAY_TYPE)

            def observe(t: float, qpos: np.ndarray, images: Mapping[str, np.ndarray], w=writer) -> None:
                ns = sec_to_ns(t)
                w.write(CLOCK_TOPIC, ns, fac.clock(t))
                for sim_cam, img in images.items():
                    w.write(camera_topic(cams[sim_cam]), ns, fac.image(img, t, frame_id=sim_cam))
                w.write(JOINT_STATES_TOPIC, ns, fac.joint_state(JOINT_NAMES, qpos, t))

            def command(t: float, action: np.ndarray, w=writer) -> None:
                ns = sec_to_ns(t)
                for g, vals in split_groups(action).items():
                    w.write(command_topic(controllers[g]), ns, fac.float_array(vals))

            def on_reset(qpos, images, w=writer):
                w.write(INSTRUCTION_TOPIC, 0, fac.string(INSTRUCTIONS[task]))
                observe(0.0, qpos, images)

            def on_step(k, action, res, images):
                command(k * DT, action)
                observe(res.time, res.qpos, images)

            try:
                ep = run_expert_episode(task, s, on_step=on_step, on_reset=on_reset, sim=sim)
            finally:
                writer.close()
            step_s += ep.sim_step_s
            render_s += ep.render_s
            if ep.success:
                tmp.rename(path)
                bags.append(str(path))
                log(
                    f"vla-sim demos: episode {len(bags)}/{episodes} seed {s}: success at step "
                    f"{ep.first_success_step} ({ep.wall_s:.1f} s) -> {path}"
                )
            else:
                shutil.rmtree(tmp, ignore_errors=True)
                failed.append(s)
                log(f"vla-sim demos: seed {s} failed (max reward {ep.max_reward:g}); not recorded")
            s += 1
    finally:
        sim.close()
    wall = time.perf_counter() - t0
    summary = DemoSummary(
        task=task,
        requested=episodes,
        recorded=len(bags),
        attempts=attempts,
        failed_seeds=failed,
        wall_s=round(wall, 3),
        episodes_per_minute=round(attempts / wall * 60.0, 2) if wall > 0 else 0.0,
        sim_step_ms_median=round(float(np.median(step_s)) * 1e3, 3) if step_s else 0.0,
        render_ms_median=round(float(np.median(render_s)) * 1e3, 3) if render_s else 0.0,
        bags=bags,
    )
    (out / "demos_summary.json").write_text(json.dumps(summary.to_dict(), indent=2))
    return summary


def scripted_success_rate(task: str, seeds: Sequence[int]) -> dict:
    """The acceptance measurement: scripted expert success over seeds (no rendering), episodes per minute."""
    t0 = time.perf_counter()
    results = [run_expert_episode(task, s, render=False) for s in seeds]
    wall = time.perf_counter() - t0
    ok = [r.success for r in results]
    return {
        "task": task,
        "episodes": len(ok),
        "successes": int(sum(ok)),
        "success_rate": float(np.mean(ok)) if ok else 0.0,
        "failed_seeds": [s for s, r in zip(seeds, ok, strict=True) if not r],
        "episodes_per_minute": round(len(ok) / wall * 60.0, 2) if wall > 0 else 0.0,
        "sim_step_ms_median": round(float(np.median([x for r in results for x in r.sim_step_s])) * 1e3, 3),
    }
