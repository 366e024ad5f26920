"""``vla-sim eval``: sim and the real vla_policy_node as separate processes."""

import json
import os
import random
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from sim_harness import PKG, need_sim

pytest.importorskip("rclpy")
pytestmark = [
    pytest.mark.ros,
    pytest.mark.slow,
    need_sim,
    pytest.mark.skipif(shutil.which("vla-policy") is None, reason="vla-policy CLI not installed"),
]


def _env(tmp_path: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        ROS_DOMAIN_ID=str(random.randint(1, 101)),
        ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST",
        ROS_LOG_DIR=str(tmp_path / "roslog"),
        PYTHONPATH=os.pathsep.join([str(PKG), env.get("PYTHONPATH", "")]),
    )
    return env


def _checkpoint(tmp_path: Path, env: dict[str, str]) -> Path:
    ck = tmp_path / "ck"
    subprocess.run(["vla-policy", "init", "--preset", "tiny", "--out", str(ck)], env=env, check=True)
    return ck


def _eval(ck: Path, out: Path, env: dict[str, str], *extra: str) -> dict:
    cmd = [
        sys.executable, "-m", "vla_sim.cli", "eval", "--checkpoint", str(ck), "--task", "transfer_cube",
        "--height", "48", "--width", "64", "--out", str(out), *extra,
    ]  # fmt: skip
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    return json.loads((out / "eval.json").read_text())


def test_eval_closed_loop_with_random_tiny_checkpoint(tmp_path):
    env = _env(tmp_path)
    out = tmp_path / "eval"
    rep = _eval(_checkpoint(tmp_path, env), out, env, "--episodes", "1", "--episode-seconds", "1.0")
    assert rep["n_episodes"] == 1 and 0.0 <= rep["success_rate"] <= 1.0
    assert rep["accepted_commands"] + rep["rejected_commands"] > 0, "the node sent nothing to the sim"
    assert (out / "eval.md").is_file() and (out / "video" / "episode_000.gif").is_file()
    latency = rep["inference_latency"]
    assert latency["reps"] >= 1 and latency["median_ms"] > 0, "no inference latency from the node's chunks"


def test_lockstep_eval_gives_the_same_episodes_twice(tmp_path):
    """Mid-chunk refills (temporal ensemble) used to land at a sim time set by the inference time."""
    env = _env(tmp_path)
    ck = _checkpoint(tmp_path, env)
    args = ("--episodes", "2", "--episode-seconds", "1.0", "--blending", "temporal_ensemble")
    runs = [_eval(ck, tmp_path / f"run{i}", env, *args)["episodes"] for i in range(2)]
    assert len(runs[0]) == 2 and all(e["accepted_commands"] > 3 for e in runs[0]), runs[0]
    assert runs[0][0]["final_qpos"] != runs[0][1]["final_qpos"], "two seeds ended in the same state"
    assert runs[0] == runs[1]
