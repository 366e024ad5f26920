"""Inference faults and overruns: the node process runs with a scripted fake policy (the real model cannot
be made to fail or slow down on demand from outside)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import ros_harness
from node_harness import GROUP_JOINTS, Harness, node_params, write_params_file

HERE = Path(__file__).resolve().parent

pytestmark = [pytest.mark.ros, pytest.mark.slow]

RUNNING, FAULT = 2, 4


def _start(tmp_path: Path, env: dict[str, str], fake: dict[str, Any], **params: Any) -> subprocess.Popen:
    """The node process with the scripted fake policy (see fake_policy_node.py)."""
    params = node_params("fake", inference_worker="thread", **params)
    params_file = write_params_file(tmp_path / "params.yaml", params)
    child_env = dict(env, VLA_FAKE_POLICY=json.dumps(fake))
    cmd = [sys.executable, str(HERE / "fake_policy_node.py"), "--ros-args", "--params-file", str(params_file)]
    return ros_harness.spawn(cmd, child_env, log_path=tmp_path / "node.log")


def _started(harness: Harness, proc: subprocess.Popen) -> None:
    """The node is up (its first status): imports alone take many seconds on a loaded machine."""
    if harness.wait_status(lambda s: True, 180.0) is None:
        pytest.fail(f"the node never published a status; log:\n{ros_harness.output(proc)[-3000:]}")


@pytest.fixture
def harness(module_ros_env: dict[str, str]) -> Iterator[Harness]:
    h = Harness()
    h.publish_instruction("stack the blocks")
    yield h
    h.close()


def test_inference_exception_faults_retries_with_backoff_and_recovers(
    harness: Harness, module_ros_env: dict[str, str], tmp_path: Path
) -> None:
    proc = _start(tmp_path, module_ros_env, {"fail_calls": 3}, output_mode="forward")
    try:
        _started(harness, proc)
        fault = harness.wait_status(lambda s: s.state == FAULT and "scripted failure" in s.reason, 60.0)
        assert fault is not None and "retrying" in fault.reason
        assert harness.wait_status(lambda s: s.state == RUNNING and s.last_chunk_id > 0, 30.0) is not None
        log = ros_harness.output(proc)
        assert log.count("inference failed: scripted failure") >= 3  # each failure said (more if re-entered)
        assert "retrying in 0.40 s" in log  # the backoff doubled
        assert not harness.violations, harness.violations[:10]
    finally:
        assert ros_harness.stop(proc) == 0


def test_slow_inference_holds_last_safe_action_and_counts_overruns(
    harness: Harness, module_ros_env: dict[str, str], tmp_path: Path
) -> None:
    # chunk 0.8 s, refill at 0.4 s left, inference 0.5 s: always late by 0.1 s, yet never so late that
    # the chunk arrives entirely in the past (dropped), even with a loaded machine adding 0.3 s
    proc = _start(tmp_path, module_ros_env, {"horizon": 16, "delay": 0.5}, output_mode="forward")
    try:
        _started(harness, proc)
        status = harness.wait_status(lambda s: s.inference_overruns >= 2 and s.state == RUNNING, 30.0)
        assert status is not None
        # once the ramp to the (constant) chunk value is done, the same safe command repeats while the
        # next chunk is late (hold at the last safe action), never a jump (the monitor)

        def settled() -> bool:
            with harness.lock:
                values = [tuple(v) for _, v in harness.commands["left_arm"][-5:]]
            return len(values) == 5 and len(set(values)) == 1

        assert harness.wait_for(settled, 30.0)
        assert harness.latest_status().inference_overruns >= 2
        assert not harness.violations, harness.violations[:10]
    finally:
        assert ros_harness.stop(proc) == 0


def test_forward_hold_stop_publishes_nothing_while_stale(
    harness: Harness, module_ros_env: dict[str, str], tmp_path: Path
) -> None:
    proc = _start(tmp_path, module_ros_env, {}, output_mode="forward", forward_hold="stop")
    try:
        _started(harness, proc)
        assert harness.wait_for(lambda: harness.count_commands() > 10, 30.0)
        harness.inputs.joint_mode = "off"
        assert harness.wait_status(lambda s: s.state == 3, 30.0) is not None
        time.sleep(0.3)
        before = harness.count_commands()
        harness.wait_for(lambda: False, 0.5)
        assert harness.count_commands() == before
    finally:
        harness.inputs.joint_mode = "ok"
        assert ros_harness.stop(proc) == 0
    assert set(GROUP_JOINTS) == set(harness.commands)
