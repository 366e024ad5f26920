"""Lifecycle transitions driven over /vla_policy_node/change_state, trajectory output, and a corrupt
checkpoint at configure. One node process (autostart off, trajectory mode) for the module."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import ros_harness
from node_harness import GROUP_JOINTS, MAX_VELOCITY, Harness, node_params, start_node, write_params_file
from vla_policy.stamps import to_seconds

pytestmark = [pytest.mark.ros, pytest.mark.slow]

CONFIGURE, CLEANUP, ACTIVATE, DEACTIVATE = 1, 2, 3, 4
UNCONFIGURED, READY, RUNNING = 0, 1, 2


@pytest.fixture(scope="module")
def system(
    tiny_checkpoint: Path, module_ros_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[object, Harness, Path]]:
    tmp = tmp_path_factory.mktemp("lifecycle")
    params = node_params(tiny_checkpoint, output_mode="trajectory", autostart=False)
    proc = start_node(write_params_file(tmp / "params.yaml", params), module_ros_env, tmp / "node.log")
    harness = Harness()
    harness.inputs.echo_commands = False
    harness.publish_instruction("fold the towel")
    yield proc, harness, tmp
    harness.close()
    code = ros_harness.stop(proc)
    assert code == 0, ros_harness.output(proc)[-3000:]


def _trajectory_count(harness: Harness) -> int:
    with harness.lock:
        return sum(len(v) for v in harness.trajectories.values())


def _reset(harness: Harness) -> object:
    from vla_msgs.srv import Reset

    client = harness.node.create_client(Reset, "/vla_policy_node/reset")
    return harness._call(client, Reset.Request())


def test_starts_unconfigured_without_autostart(system: tuple[object, Harness, Path]) -> None:
    _, harness, _ = system
    assert harness.lifecycle_state() == "unconfigured"
    status = harness.wait_status(lambda s: True, timeout=30.0)
    assert status is not None and status.state == UNCONFIGURED


def test_reset_service_refused_while_unconfigured(system: tuple[object, Harness, Path]) -> None:
    _, harness, _ = system
    assert harness.lifecycle_state() == "unconfigured"
    result = _reset(harness)
    assert not result.success and "not configured" in result.message


def test_configure_loads_model_and_reports_warmup(system: tuple[object, Harness, Path]) -> None:
    _, harness, _ = system
    assert harness.change_state(CONFIGURE)
    assert harness.lifecycle_state() == "inactive"
    status = harness.wait_status(lambda s: s.state == READY, timeout=30.0)
    assert status is not None and "warm-up" in status.reason


def test_inactive_node_publishes_no_commands(system: tuple[object, Harness, Path]) -> None:
    _, harness, _ = system
    harness.wait_for(lambda: False, timeout=1.0)  # give it the chance to misbehave
    assert _trajectory_count(harness) == 0 and harness.count_chunks() == 0


def test_activate_publishes_trajectories_with_joint_names(system: tuple[object, Harness, Path]) -> None:
    _, harness, _ = system
    assert harness.change_state(ACTIVATE)
    assert harness.lifecycle_state() == "active"

    def chunks_sent() -> bool:  # a chunk's trajectory (several points) for every group; holds have one
        with harness.lock:
            return all(any(len(t.points) > 1 for t in harness.trajectories[g]) for g in GROUP_JOINTS)

    reasons = sorted({(st.state, st.reason[:80]) for st in harness.statuses})
    assert harness.wait_for(chunks_sent, 60.0), reasons
    for group, joints in GROUP_JOINTS.items():
        assert all(list(t.joint_names) == list(joints) for t in harness.trajectories[group])
    assert harness.count_chunks() >= 1
    assert not harness.violations, harness.violations[:10]


def test_reset_service_next_chunk_comes_from_new_observations(system: tuple[object, Harness, Path]) -> None:
    _, harness, _ = system
    t_reset = harness.node.get_clock().now().nanoseconds * 1e-9
    result = _reset(harness)
    assert result.success, result.message

    def fresh_chunk() -> bool:
        with harness.lock:
            return any(to_seconds(c.header.stamp) > t_reset for c in harness.chunks)

    assert harness.wait_for(fresh_chunk, 30.0), "no chunk from observations after the reset"
    assert harness.lifecycle_state() == "active"
    assert not harness.violations, harness.violations[:10]


def test_stale_camera_in_trajectory_mode_holds_at_the_measured_position(
    system: tuple[object, Harness, Path],
) -> None:
    """The arm here never moves (a blocked robot); the hold is the measured position plus the motion
    commanded since it was measured (at most the state's age at max velocity), reached in >= 1 period."""
    _, harness, _ = system
    before = _trajectory_count(harness)
    harness.inputs.camera_mode["head"] = "off"
    try:
        assert harness.wait_status(lambda s: s.state == 3 and "head" in s.reason, 30.0) is not None
        assert harness.wait_for(lambda: _trajectory_count(harness) > before, 10.0)
        hold = harness.trajectories["left_arm"][-1]
        assert len(hold.points) == 1
        max_age = node_params("x")["max_state_age"]
        assert max(abs(v) for v in hold.points[0].positions) <= MAX_VELOCITY * max_age
        assert to_seconds(hold.points[0].time_from_start) >= 0.05 - 1e-9  # one control period (dt 0.05)
    finally:
        harness.inputs.camera_mode["head"] = "ok"
    assert harness.wait_status(lambda s: s.state == RUNNING, 30.0) is not None


def test_deactivate_holds_and_stops_commands(system: tuple[object, Harness, Path]) -> None:
    _, harness, _ = system
    assert harness.change_state(DEACTIVATE)
    assert harness.lifecycle_state() == "inactive"
    assert harness.wait_status(lambda s: s.state == READY, 30.0) is not None
    count = _trajectory_count(harness)
    harness.wait_for(lambda: False, timeout=1.0)
    assert _trajectory_count(harness) == count
    assert not harness.violations, harness.violations[:10]


def test_cleanup_returns_to_unconfigured(system: tuple[object, Harness, Path]) -> None:
    _, harness, _ = system
    assert harness.change_state(CLEANUP)
    assert harness.lifecycle_state() == "unconfigured"


def test_corrupt_checkpoint_fails_configure_and_node_stays_alive(
    system: tuple[object, Harness, Path],
) -> None:
    proc, harness, tmp = system
    bad = tmp / "corrupt_ckpt"
    bad.mkdir()
    (bad / "config.json").write_text("{ not json")
    (bad / "model.safetensors").write_bytes(b"\x00garbage" * 100)
    ok, _ = harness.set_parameter("checkpoint", str(bad))
    assert ok
    assert not harness.change_state(CONFIGURE)
    assert harness.lifecycle_state() == "unconfigured"
    status = harness.wait_status(lambda s: "cannot load checkpoint" in s.reason, 30.0)
    assert status is not None and status.state == UNCONFIGURED
    assert proc.poll() is None  # type: ignore[attr-defined]


def test_configure_succeeds_again_with_good_checkpoint(
    system: tuple[object, Harness, Path], tiny_checkpoint: Path
) -> None:
    _, harness, _ = system
    ok, _ = harness.set_parameter("checkpoint", str(tiny_checkpoint))
    assert ok
    assert harness.change_state(CONFIGURE)
    assert harness.lifecycle_state() == "inactive"
