"""vla-bag replay-eval: the real node process against `play --clock`, scored with the offline report."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from vla_policy.data.synthetic_episode import SyntheticEpisodeConfig, write_synthetic_episode

pytestmark = [pytest.mark.ros, pytest.mark.slow]


def test_replay_eval_end_to_end(tmp_path, ros_env):
    from vla_policy.model.policy import VLAPolicy
    from vla_policy.model.presets import get_preset

    ckpt = tmp_path / "ckpt"
    VLAPolicy(get_preset("tiny"), seed=0).save(ckpt)
    bag = tmp_path / "ep"
    write_synthetic_episode(bag, SyntheticEpisodeConfig(duration=4.0))
    out = tmp_path / "out"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "vla_policy_node.bag_cli",
            "replay-eval",
            "--bag",
            str(bag),
            "--checkpoint",
            str(ckpt),
            "--out",
            str(out),
            "--domain-id",
            ros_env["ROS_DOMAIN_ID"],
            "--rate",  # half speed: on a loaded machine the 4 s episode still sees several chunks
            "0.5",
        ],
        capture_output=True,
        text=True,
        timeout=280,
        env=ros_env,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = json.loads((out / "report.json").read_text())
    assert report["mode"] == "replay"
    assert report["node_messages"]["action_chunk"] >= 2
    assert report["scores"]["scored_ticks"] > 10
    assert report["latency"]["count"] >= 2
    assert (out / "predicted_vs_recorded_left_arm.png").exists()
    assert "report:" in proc.stdout
