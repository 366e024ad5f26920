"""vla-bag: sample writes a readable bag, every subcommand has --help, bad input exits with one line."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest
from vla_policy.data.episode_bag import JOINT_STATES_TOPIC, open_bag

CLI = [sys.executable, "-m", "vla_policy_node.bag_cli"]


def run(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=timeout)


@pytest.mark.parametrize("sub", ["sample", "record", "play", "replay-eval", "export-lerobot"])
def test_help(sub):
    proc = run(sub, "--help")
    assert proc.returncode == 0, proc.stderr
    assert "usage: vla-bag" in proc.stdout


@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
def test_sample_writes_valid_bag(tmp_path, storage):
    out = tmp_path / "ep"
    proc = run(
        "sample",
        "--out",
        str(out),
        "--duration",
        "1",
        "--height",
        "24",
        "--width",
        "32",
        "--storage",
        storage,
        "--commands",
        "both",
    )
    assert proc.returncode == 0, proc.stderr
    with open_bag(out) as bag:
        assert bag.metadata.task == "synthetic_pick_place"
        topics = bag.topics()
        assert topics[JOINT_STATES_TOPIC].count == 51
        assert "/left_arm_controller/commands" in topics and "/claw_controller/joint_trajectory" in topics
        assert sum(1 for _ in bag.messages()) == sum(t.count for t in topics.values())


def _one_line_error(proc: subprocess.CompletedProcess, text: str) -> None:
    assert proc.returncode != 0
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    assert text in lines[0], lines[0]


def test_sample_refuses_existing_path(tmp_path):
    _one_line_error(run("sample", "--out", str(tmp_path)), "already exists")


def test_sample_bad_config(tmp_path):
    _one_line_error(run("sample", "--out", str(tmp_path / "x"), "--duration", "-1"), "duration")


@pytest.mark.ros
def test_play_bad_bags(tmp_path):
    _one_line_error(run("play", str(tmp_path / "missing")), "does not exist")
    good = tmp_path / "good"
    assert (
        run("sample", "--out", str(good), "--duration", "1", "--height", "24", "--width", "32").returncode
        == 0
    )
    cut = tmp_path / "cut"
    shutil.copytree(good, cut)
    data = next(cut.glob("*.mcap"))
    os.truncate(data, data.stat().st_size // 2)
    _one_line_error(run("play", str(cut)), "cannot be opened")
    _one_line_error(run("play", str(good), "--topics", "/nope"), "no topic /nope")
    _one_line_error(run("play", str(good), "--rate", "0"), "rate")


def test_export_lerobot(tmp_path):
    bag = tmp_path / "ep"
    assert (
        run("sample", "--out", str(bag), "--duration", "1", "--height", "24", "--width", "32").returncode == 0
    )
    out = tmp_path / "lerobot"
    proc = run("export-lerobot", str(bag), "--out", str(out), "--fps", "20", "--json")
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout[proc.stdout.index("{") :])
    assert summary["episodes"] == 1 and summary["fps"] == 20 and summary["frames"] > 10
    assert (out / "meta" / "info.json").is_file() and (out / "meta" / "modality.json").is_file()
    _one_line_error(run("export-lerobot", str(bag), "--out", str(out)), "already exists")
    _one_line_error(
        run("export-lerobot", str(tmp_path / "nope"), "--out", str(tmp_path / "x")), "not an episode bag"
    )
