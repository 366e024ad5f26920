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


LOCKSTEP_ARGS = ("--episodes", "2", "--episode-seconds", "1.0", "--blending", "temporal_ensemble")


@pytest.fixture(scope="module")
def first_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str], Path, dict]:
    """One lock-step evaluation of a random tiny checkpoint (shared: each run starts a sim and a node)."""
    tmp = tmp_path_factory.mktemp("sim_eval")
    env = _env(tmp)
    ck = _checkpoint(tmp, env)
    out = tmp / "run0"
    return ck, env, out, _eval(ck, out, env, *LOCKSTEP_ARGS)


def test_eval_closed_loop_with_random_tiny_checkpoint(first_run) -> None:
    _, _, out, rep = first_run
    assert rep["n_episodes"] == 2 and 0.0 <= rep["success_rate"] <= 1.0
    assert rep["accepted_commands"] + rep["rejected_commands"] > 0, "the node sent nothing to the sim"
    assert (out / "eval.md").is_file() and (out / "video" / "episode_000.gif").is_file()
    latency = rep["inference_latency"]
    assert latency["reps"] >= 1 and latency["median_ms"] > 0, "no inference latency from the node's chunks"


def test_lockstep_eval_gives_the_same_episodes_twice(first_run, tmp_path: Path) -> None:
    """Mid-chunk refills (temporal ensemble) used to land at a sim time set by the inference time."""
    ck, env, _, rep = first_run
    first = rep["episodes"]
    second = _eval(ck, tmp_path / "run1", env, *LOCKSTEP_ARGS)["episodes"]
    assert len(first) == 2 and all(e["accepted_commands"] > 3 for e in first), first
    assert first[0]["final_qpos"] != first[1]["final_qpos"], "two seeds ended in the same state"
    assert first == second
