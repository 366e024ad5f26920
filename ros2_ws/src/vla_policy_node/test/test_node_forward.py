"""The node as a separate process in forward mode (autostart): chunks, per-group commands, hold and recover,
and the bad-input list. One node process for the module; every command is checked by the monitor."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import ros_harness
from node_harness import (
    CAMERAS,
    CLAW,
    GROUP_JOINTS,
    LEFT,
    RIGHT,
    Harness,
    node_params,
    start_node,
    write_params_file,
)

pytestmark = [pytest.mark.ros, pytest.mark.slow]

RUNNING, HOLDING = 2, 3
INSTRUCTION = "pick up the red cube"


@pytest.fixture(scope="module")
def system(
    tiny_checkpoint: Path, module_ros_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[object, Harness]]:
    tmp = tmp_path_factory.mktemp("forward")
    params = write_params_file(tmp / "params.yaml", node_params(tiny_checkpoint, output_mode="forward"))
    proc = start_node(params, module_ros_env, tmp / "node.log")
    harness = Harness()
    harness.publish_instruction(INSTRUCTION)
    ok = harness.wait_status(lambda s: s.state == RUNNING and s.last_chunk_id > 0, timeout=120.0)
    if ok is None:
        log = ros_harness.output(proc)
        harness.close()
        ros_harness.stop(proc)
        pytest.fail(f"node never ran a chunk; log:\n{log[-4000:]}")
    yield proc, harness
    harness.close()
    code = ros_harness.stop(proc)
    assert code == 0, ros_harness.output(proc)[-3000:]


def _alive(system: tuple[object, Harness]) -> None:
    proc, harness = system
    assert proc.poll() is None, ros_harness.output(proc)[-3000:]  # type: ignore[attr-defined]
    assert not harness.violations, harness.violations[:10]


def _recovers(harness: Harness) -> None:
    start = harness.count_commands()
    assert harness.wait_status(lambda s: s.state == RUNNING and s.reason != "", timeout=30.0) is not None
    assert harness.wait_for(lambda: harness.count_commands() > start + 5, timeout=30.0)


def _holds_with(harness: Harness, text: str) -> None:
    status = harness.wait_status(lambda s: s.state == HOLDING and text in s.reason, timeout=30.0)
    last = harness.latest_status()
    assert status is not None, f"no HOLDING status mentioning {text!r}; last: {last}"


def test_chunks_carry_groups_with_joint_names(system: tuple[object, Harness]) -> None:
    _, harness = system
    assert harness.wait_for(lambda: harness.count_chunks() >= 2, timeout=60.0)
    chunk = harness.chunks[-1]
    assert list(chunk.left_arm.joint_names) == list(LEFT)
    assert list(chunk.right_arm.joint_names) == list(RIGHT)
    assert list(chunk.claw.joint_names) == list(CLAW)
    assert chunk.dt > 0 and len(chunk.left_arm.points) == 16
    assert chunk.policy.startswith("tiny@")
    _alive(system)


def test_forward_commands_per_group_have_group_sizes(system: tuple[object, Harness]) -> None:
    _, harness = system
    assert harness.wait_for(lambda: all(len(harness.commands[g]) > 5 for g in GROUP_JOINTS), timeout=60.0)
    for group, joints in GROUP_JOINTS.items():
        assert len(harness.commands[group][-1][1]) == len(joints)
    _alive(system)


def test_status_reports_instruction_and_latency(system: tuple[object, Harness]) -> None:
    _, harness = system
    status = harness.wait_status(lambda s: s.latency_max > 0, timeout=30.0)
    assert status is not None and status.instruction == INSTRUCTION


def test_diagnostics_report_control_and_inference(system: tuple[object, Harness]) -> None:
    _, harness = system

    def _has_keys() -> bool:
        for arr in list(harness.diagnostics):
            keys = {kv.key for st in arr.status for kv in st.values}
            if {"deadline_misses", "jitter_p99_ms", "latency_p50_s", "head.age_s"} <= keys:
                return True
        return False

    assert harness.wait_for(_has_keys, timeout=30.0)


@pytest.mark.parametrize(
    ("camera", "mode", "reason"),
    [
        ("head", "bad_encoding", "32FC1"),
        ("left_wrist", "wrong_size", "expected"),
        ("right_wrist", "corrupt", "corrupt"),
        ("left_wrist", "off", "left_wrist"),
    ],
    ids=["wrong_encoding", "wrong_size", "corrupt_jpeg", "camera_dropout"],
)
def test_bad_camera_holds_and_recovers(
    system: tuple[object, Harness], camera: str, mode: str, reason: str
) -> None:
    _, harness = system
    harness.inputs.camera_mode[camera] = mode
    try:
        _holds_with(harness, reason)
    finally:
        harness.inputs.camera_mode[camera] = "ok"
    _recovers(harness)
    _alive(system)


@pytest.mark.parametrize(
    ("mode", "reason"),
    [("nan", "non-finite"), ("missing", "missing"), ("unknown", "missing"), ("off", "joint state")],
    ids=["nan_joints", "missing_joint", "unknown_joint_names", "joint_dropout"],
)
def test_bad_joint_states_hold_and_recover(system: tuple[object, Harness], mode: str, reason: str) -> None:
    _, harness = system
    harness.inputs.joint_mode = mode
    try:
        _holds_with(harness, reason)
    finally:
        harness.inputs.joint_mode = "ok"
    _recovers(harness)
    _alive(system)


@pytest.mark.parametrize(
    ("text", "reason"), [("", "empty"), ("x" * 100_000, "limit")], ids=["empty", "100kB"]
)
def test_bad_instruction_holds_until_valid_one(
    system: tuple[object, Harness], text: str, reason: str
) -> None:
    _, harness = system
    harness.publish_instruction(text)
    try:
        _holds_with(harness, reason)
    finally:
        harness.publish_instruction(INSTRUCTION)
    _recovers(harness)
    _alive(system)


def test_rates_outside_0_to_500_hz_are_refused_and_0_is_accepted(system: tuple[object, Harness]) -> None:
    """0 means 1 / dt of the checkpoint and can be set back at run time (issue 21, item 5); a rate the
    machine cannot sustain is refused."""
    _, harness = system
    for bad in (-5.0, 1e6):
        ok, reason = harness.set_parameter("control_rate_hz", bad)
        assert not ok and "control_rate_hz" in reason, reason
    ok, reason = harness.set_parameter("control_rate_hz", 0.0)
    assert ok, reason


def test_valid_parameter_change_is_accepted(system: tuple[object, Harness]) -> None:
    _, harness = system
    ok, _ = harness.set_parameter("control_rate_hz", 25.0)
    assert ok


def test_unknown_blending_is_refused(system: tuple[object, Harness]) -> None:
    _, harness = system
    ok, reason = harness.set_parameter("blending", "average")
    assert not ok and "temporal_ensemble" in reason


def test_no_command_ever_left_the_limits(system: tuple[object, Harness]) -> None:
    _, harness = system
    assert harness.count_commands() > 0
    _alive(system)
    assert set(CAMERAS) == set(harness.inputs.camera_mode)
