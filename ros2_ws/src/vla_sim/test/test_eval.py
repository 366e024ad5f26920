"""``vla-sim eval``: sim and the real vla_policy_node as separate processes, one short episode."""

import json
import os
import random
import shutil
import subprocess
import sys

import pytest
from sim_harness import PKG, need_sim

pytest.importorskip("rclpy")
pytestmark = [pytest.mark.ros, pytest.mark.slow, need_sim]


@pytest.mark.skipif(shutil.which("vla-policy") is None, reason="vla-policy CLI not installed")
def test_eval_closed_loop_with_random_tiny_checkpoint(tmp_path):
    env = dict(os.environ)
    env.update(
        ROS_DOMAIN_ID=str(random.randint(1, 101)),
        ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST",
        ROS_LOG_DIR=str(tmp_path / "roslog"),
        PYTHONPATH=os.pathsep.join([str(PKG), env.get("PYTHONPATH", "")]),
    )
    ck = tmp_path / "ck"
    subprocess.run(["vla-policy", "init", "--preset", "tiny", "--out", str(ck)], env=env, check=True)
    out = tmp_path / "eval"
    cmd = [
        sys.executable,
        "-m",
        "vla_sim.cli",
        "eval",
        "--checkpoint",
        str(ck),
        "--task",
        "transfer_cube",
        "--episodes",
        "1",
        "--episode-seconds",
        "1.0",
        "--height",
        "48",
        "--width",
        "64",
        "--out",
        str(out),
    ]
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    rep = json.loads((out / "eval.json").read_text())
    assert rep["n_episodes"] == 1 and 0.0 <= rep["success_rate"] <= 1.0
    assert rep["accepted_commands"] + rep["rejected_commands"] > 0, "the node sent nothing to the sim"
    assert (out / "eval.md").is_file() and (out / "video" / "episode_000.gif").is_file()
    latency = rep["inference_latency"]
    assert latency["reps"] >= 1 and latency["median_ms"] > 0, "no inference latency from the node's chunks"
