"""``vla-sim eval --in-process``: the node's PolicyRuntime and the sim in one process, lock-step."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
from sim_harness import PKG, need_sim

pytestmark = need_sim


def _loop(checkpoint: Path, **kw):
    from vla_sim.inprocess_loop import InProcessLoop, LoopConfig

    return InProcessLoop(checkpoint, LoopConfig(episode_steps=30, height=48, width=64, **kw))


def test_an_episode_does_not_depend_on_its_place_in_the_run(checkpoint: Path) -> None:
    loop = _loop(checkpoint)
    try:
        alone = loop.run_episode(7)
        loop.run_episode(3)
        after = loop.run_episode(7)
    finally:
        loop.close()
    assert alone["accepted_commands"] > 0, "the runtime sent the sim nothing"
    assert alone["final_qpos"] == after["final_qpos"]


def test_commands_pass_the_node_safety_filter(checkpoint: Path) -> None:
    """The runtime's velocity limit holds in the loop: no target moves faster than max_velocity."""
    loop = _loop(checkpoint, output_mode="forward")
    try:
        limit = loop.runtime.safety.config.max_velocity[0]
        steps: list[np.ndarray] = []
        loop.run_episode(11, on_step=lambda k, target, res, images: steps.append(target) or True)
    finally:
        loop.close()
    speed = np.abs(np.diff(np.asarray(steps), axis=0)) / 0.02
    arms = np.r_[0:6, 7:13]  # the grippers are normalised units with limits of their own
    assert speed[:, arms].max() <= limit * (1 + 1e-6)


def _normal_scheduling() -> None:
    """Children at normal priority whatever this process runs at (a real-time hog would own a core)."""
    os.sched_setscheduler(0, os.SCHED_OTHER, os.sched_param(0))


def _cli(checkpoint: Path, out: Path, *extra: str) -> subprocess.CompletedProcess:
    """``vla-sim eval --in-process`` with small frames and 0.6 s episodes, at normal scheduling."""
    cmd = [
        sys.executable, "-m", "vla_sim.cli", "eval", "--in-process", "--checkpoint", str(checkpoint),
        "--task", "transfer_cube", "--episode-seconds", "0.6", "--height", "48", "--width", "64",
        "--out", str(out), *extra,
    ]  # fmt: skip
    return subprocess.run(
        cmd, capture_output=True, text=True, timeout=300, cwd=PKG, preexec_fn=_normal_scheduling
    )


def _cli_episode(checkpoint: Path, out: Path) -> dict:
    r = _cli(checkpoint, out, "--episodes", "1", "--seed", "1003", "--videos", "0")
    assert r.returncode == 0, r.stderr[-2000:]
    return json.loads((out / "eval.json").read_text())["episodes"][0]


def test_the_same_command_gives_the_same_episode_with_a_cpu_hog_beside_it(
    checkpoint: Path, tmp_path: Path
) -> None:
    idle = _cli_episode(checkpoint, tmp_path / "idle")
    hog = subprocess.Popen([sys.executable, "-c", "while True: pass"], preexec_fn=_normal_scheduling)
    try:
        loaded = _cli_episode(checkpoint, tmp_path / "loaded")
    finally:
        hog.kill()
        hog.wait()
    assert idle["accepted_commands"] > 0
    assert idle["final_qpos"] == loaded["final_qpos"]


def test_cli_reports_success_interval_smoothness_and_videos(checkpoint: Path, tmp_path: Path) -> None:
    r = _cli(checkpoint, tmp_path, "--episodes", "2", "--seed", "1000", "--videos", "2")
    assert r.returncode == 0, r.stderr[-2000:]
    rep = json.loads((tmp_path / "eval.json").read_text())
    assert rep["seeds"] == [1000, 1001] and rep["n_episodes"] == 2
    low, high = rep["success_rate_wilson95"]
    assert 0.0 <= low <= rep["success_rate"] <= high <= 1.0
    assert rep["jerk_mean_abs"] > 0 and rep["demonstration_jerk_mean_abs"] > 0
    assert rep["episodes_per_minute"] > 0 and rep["inference_latency"]["reps"] >= 2
    assert sorted(p.name for p in (tmp_path / "video").iterdir()) == ["episode_000.gif", "episode_001.gif"]


def test_cli_refuses_a_missing_checkpoint_in_one_line(tmp_path: Path) -> None:
    r = _cli(tmp_path / "nope", tmp_path / "out")
    assert r.returncode == 2
    assert len(r.stderr.strip().splitlines()) == 1 and "nope" in r.stderr, r.stderr
