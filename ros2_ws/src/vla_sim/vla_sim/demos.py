"""Scripted demonstrations recorded as episode bags (layout: episode_recorder.py), ROS-free. Only
successful episodes are kept."""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vla_sim.aloha_env import AlohaSim, check_cameras
from vla_sim.episode_recorder import EpisodeRecorder
from vla_sim.scripted_expert import run_expert_episode

DEFAULT_CAMERA_MAP: dict[str, str] = {"top": "head", "left_wrist": "left_wrist", "right_wrist": "right_wrist"}


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
    cams = dict(camera_map or DEFAULT_CAMERA_MAP)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    max_attempts = max_attempts if max_attempts is not None else 2 * episodes + 5
    sim = AlohaSim(task, cameras=list(cams), height=height, width=width)
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
            rec = EpisodeRecorder(sim, out, path.name, s, cams, storage)
            try:
                ep = run_expert_episode(task, s, on_step=rec.step, on_reset=rec.reset, sim=sim)
            except BaseException:
                rec.discard()
                raise
            step_s += ep.sim_step_s
            render_s += ep.render_s
            if ep.success:
                bags.append(str(rec.finish(path, True)))
                log(
                    f"vla-sim demos: episode {len(bags)}/{episodes} seed {s}: success at step "
                    f"{ep.first_success_step} ({ep.wall_s:.1f} s) -> {path}"
                )
            else:
                rec.discard()
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
