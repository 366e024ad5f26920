"""Offline evaluation: deterministic report.json, report files, and one-line errors on bad input."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from vla_policy.data.episode_bag import JointNamesMismatchError, MissingTopicError
from vla_policy.data.synthetic_episode import SyntheticEpisodeConfig, write_synthetic_episode
from vla_policy.evaluation.offline_eval import EvalConfig, GroundTruth, run_offline_eval
from vla_policy.runtime.joint_groups import JointGroups

SMALL = dict(duration=2.0, image_height=32, image_width=40, camera_rate=10.0, joint_rate=20.0)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    from vla_policy.model.policy import VLAPolicy
    from vla_policy.model.presets import get_preset

    path = tmp_path_factory.mktemp("ckpt") / "tiny"
    VLAPolicy(get_preset("tiny"), seed=0).save(path)
    return path


@pytest.fixture(scope="module")
def bag(tmp_path_factory):
    path = tmp_path_factory.mktemp("bag") / "ep"
    write_synthetic_episode(path, SyntheticEpisodeConfig(**SMALL))
    return path


def _eval(bag, checkpoint, out, **kw):
    return run_offline_eval(bag, checkpoint, out, EvalConfig(progress=False, **kw))


@pytest.mark.parametrize("blending", ["none", "rtc"])
def test_report_is_deterministic(bag, checkpoint, tmp_path, blending):
    a = _eval(bag, checkpoint, tmp_path / "a", blending=blending, plots=False)
    b = _eval(bag, checkpoint, tmp_path / "b", blending=blending, plots=False)
    ja = (tmp_path / "a" / "report.json").read_text()
    assert ja == (tmp_path / "b" / "report.json").read_text()
    report = json.loads(ja)
    assert report["scores"]["scored_ticks"] > 20
    assert report["inferences"] >= 3
    assert report["latency"]["mode"] == "simulated"
    assert a.timing["inference_wall"]["count"] == b.timing["inference_wall"]["count"] == report["inferences"]
    timing = json.loads((tmp_path / "a" / "report_timing.json").read_text())
    assert timing["inference_wall"]["p50_s"] > 0


def test_report_files_and_metrics(bag, checkpoint, tmp_path):
    res = _eval(bag, checkpoint, tmp_path / "r", blending="temporal_ensemble")
    names = {p.name for p in (tmp_path / "r").iterdir()}
    assert {
        "report.json",
        "report.md",
        "report_timing.json",
        "latency_histogram.png",
        "predicted_vs_recorded_left_arm.png",
        "predicted_vs_recorded_claw.png",
    } <= names
    s = res.report["scores"]
    assert set(s["error"]["per_group"]) == {"left_arm", "right_arm", "claw"}
    assert len(s["error"]["per_joint"]) == 14
    assert s["error_normalized"]["overall"]["mae"] is not None
    assert s["discontinuity"]["boundaries"]["count"] >= 1
    assert s["jerk"]["recorded"]["mean_abs"] > 0
    # the recorded trajectory matches itself: perfect "prediction" scores zero
    gt = res.recorded
    assert np.isfinite(gt[2:]).all()


def test_ground_truth_trajectory_interpolates():
    joints = JointGroups(left_arm=("a", "b"))

    class P:
        def __init__(self, t, pos):
            self.time_from_start = type("D", (), {"sec": 0, "nanosec": int(t * 1e9)})()
            self.positions = pos

    gt = GroundTruth(joints)
    gt.add_trajectory("left_arm", 1.0, ["b", "a"], [P(0.0, [0.0, 0.0]), P(1.0, [2.0, 4.0])], "/t")
    out = gt.at(np.array([0.5, 1.5, 3.0]))
    assert np.isnan(out[0]).all()
    np.testing.assert_allclose(out[1], [2.0, 1.0])
    np.testing.assert_allclose(out[2], [4.0, 2.0])
    with pytest.raises(JointNamesMismatchError, match="missing"):
        gt.add_trajectory("left_arm", 2.0, ["x"], [], "/t")


def test_joint_names_mismatch(bag, checkpoint, tmp_path):
    joints = JointGroups(left_arm=("elbow", "wrist"), claw=("left_gripper",))
    with pytest.raises(JointNamesMismatchError) as info:
        _eval(bag, checkpoint, tmp_path / "x", joints=joints)
    assert "\n" not in str(info.value)
    assert not (tmp_path / "x" / "report.json").exists()


def test_missing_topic(bag, checkpoint, tmp_path):
    with pytest.raises(MissingTopicError, match="/cams/nope"):
        _eval(bag, checkpoint, tmp_path / "x", camera_topics={"head": "/cams/nope"})


def test_cli_bad_bag_one_line(checkpoint, tmp_path):
    bad = tmp_path / "bad"
    bad.mkdir()
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "report.json").write_text("{}")  # a stale report must not survive a failure
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "vla_policy.evaluation.offline_eval",
            "--bag",
            str(bad),
            "--checkpoint",
            str(checkpoint),
            "--out",
            str(tmp_path / "out"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode != 0
    assert proc.stderr.strip().count("\n") == 0, proc.stderr
    assert "metadata.yaml" in proc.stderr
    assert not (tmp_path / "out" / "report.json").exists()
