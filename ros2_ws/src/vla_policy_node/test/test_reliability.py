"""The fault and bad-input scenario set (issue 13), against real node processes over real DDS, with every
node output checked by the invariant monitor. Scenarios share node processes (one per class) to keep the
set short. The module writes ``reliability.json`` / ``reliability.md`` to ``$VLA_RELIABILITY_DIR`` (default
``out/reliability/``) at its end.

Pass criteria, per scenario: the named reaction (HOLDING / FAULT with the reason, refusal, exit code 0 ...),
the node process alive afterwards, and no new invariant-monitor violation during the scenario.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import ros_harness
from node_harness import CAMERAS, GROUP_JOINTS, Harness, node_params, start_node, write_params_file
from reliability_report import ReliabilityReport
from vla_policy.stamps import to_seconds

HERE = Path(__file__).resolve().parent
pytestmark = [pytest.mark.ros, pytest.mark.slow]

UNCONFIGURED, READY, RUNNING, HOLDING, FAULT = 0, 1, 2, 3, 4
CONFIGURE, CLEANUP, ACTIVATE, DEACTIVATE = 1, 2, 3, 4
INSTRUCTION = "pick up the red cube"
REPORT = ReliabilityReport(kind="short")


@pytest.fixture(scope="module", autouse=True)
def _write_report() -> Iterator[None]:
    yield
    out = REPORT.write()
    print(f"\nreliability report: {out}/reliability.md")


def _fake_node(tmp: Path, env: dict[str, str], fake: dict[str, Any], **params: Any) -> subprocess.Popen:
    """The node process with the scripted fake policy of ``fake_policy_node.py`` (slow / raising backend)."""
    params = node_params("fake", inference_worker="thread", **params)
    params_file = write_params_file(tmp / "params.yaml", params)
    child_env = dict(env, VLA_FAKE_POLICY=json.dumps(fake))
    cmd = [sys.executable, str(HERE / "fake_policy_node.py"), "--ros-args", "--params-file", str(params_file)]
    return ros_harness.spawn(cmd, child_env, log_path=tmp / "node.log")


def _close(proc: subprocess.Popen, harness: Harness) -> None:
    REPORT.add_monitor(harness.monitor)
    harness.close()
    if proc.poll() is None:
        ros_harness.stop(proc)


def _wait_running(harness: Harness, proc: subprocess.Popen, timeout: float = 120.0) -> None:
    if harness.wait_status(lambda s: s.state == RUNNING and s.last_chunk_id > 0, timeout) is None:
        pytest.fail(f"node never ran a chunk; log:\n{ros_harness.output(proc)[-3000:]}")


def _holds_with(harness: Harness, text: str, timeout: float = 20.0) -> str:
    status = harness.wait_status(lambda s: s.state == HOLDING and text in s.reason, timeout)
    assert status is not None, f"no HOLDING mentioning {text!r}; last: {harness.latest_status()}"
    return str(status.reason)[:120]


def _recovers(harness: Harness, timeout: float = 30.0) -> None:
    start = harness.count_commands() + sum(len(t) for t in harness.trajectories.values())
    assert harness.wait_status(lambda s: s.state == RUNNING, timeout) is not None, "did not recover"

    def _more() -> bool:
        return harness.count_commands() + sum(len(t) for t in harness.trajectories.values()) > start + 3

    assert harness.wait_for(_more, timeout), "no commands after recovery"


def _alive(proc: subprocess.Popen) -> None:
    assert proc.poll() is None, ros_harness.output(proc)[-3000:]


def _signal_and_check(proc: subprocess.Popen, harness: Harness, sig: int) -> list[str]:
    """Send ``sig``; the node exits 0 without a traceback and each group's last command is a hold."""
    before = len(ros_harness.output(proc))
    proc.send_signal(sig)
    code = proc.wait(timeout=30)
    time.sleep(0.5)  # the last messages in flight
    tail = ros_harness.output(proc)[before:]
    assert code == 0, f"exit code {code}; log tail:\n{tail[-2000:]}"
    assert "Traceback" not in tail, tail[-3000:]
    notes = [f"exit code {code}, no traceback"]
    for group in GROUP_JOINTS:
        ok, why = harness.monitor.last_command_is_hold(group, harness.measured(group))
        assert ok, why
        notes.append(f"{group}: {why}")
    return notes


# --- one real node (tiny checkpoint, forward mode) for the input scenarios --------------------------
class TestRealNodeInputs:
    @pytest.fixture(scope="class")
    def system(
        self, tiny_checkpoint: Path, module_ros_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory
    ) -> Iterator[tuple[subprocess.Popen, Harness, Path]]:
        tmp = tmp_path_factory.mktemp("reliability_real")
        params = node_params(tiny_checkpoint, output_mode="forward", max_instruction_length=10_000)
        proc = start_node(write_params_file(tmp / "params.yaml", params), module_ros_env, tmp / "node.log")
        harness = Harness()
        harness.publish_instruction(INSTRUCTION)
        try:
            _wait_running(harness, proc)
            yield proc, harness, tmp
        finally:
            _close(proc, harness)

    def test_camera_dropout_one_2s(self, system) -> None:
        proc, h, _ = system
        with REPORT.scenario("camera_dropout_one_2s", h.monitor, "left_wrist off for 2 s") as notes:
            h.inputs.camera_mode["left_wrist"] = "off"
            try:
                notes.append("held: " + _holds_with(h, "left_wrist"))
                time.sleep(max(0.0, 2.0 - 0.6))
            finally:
                h.inputs.camera_mode["left_wrist"] = "ok"
            _recovers(h)
            _alive(proc)
            notes.append("recovered")

    def test_camera_dropout_all(self, system) -> None:
        proc, h, _ = system
        with REPORT.scenario("camera_dropout_all", h.monitor, "every camera off for 2 s") as notes:
            for cam in CAMERAS:
                h.inputs.camera_mode[cam] = "off"
            try:
                notes.append("held: " + _holds_with(h, "stale"))
                time.sleep(1.5)
            finally:
                for cam in CAMERAS:
                    h.inputs.camera_mode[cam] = "ok"
            _recovers(h)
            _alive(proc)
            notes.append("recovered")

    def test_joint_states_dropout(self, system) -> None:
        proc, h, _ = system
        with REPORT.scenario("joint_states_dropout", h.monitor, "/joint_states off for 2 s") as notes:
            h.inputs.joint_mode = "off"
            try:
                notes.append("held: " + _holds_with(h, "joint state"))
                time.sleep(1.5)
            finally:
                h.inputs.joint_mode = "ok"
            _recovers(h)
            _alive(proc)
            notes.append("recovered")

    @pytest.mark.parametrize("mode", ["nan", "inf", "huge"])
    def test_non_finite_and_huge_joint_values(self, system, mode: str) -> None:
        proc, h, _ = system
        value = {"nan": "NaN", "inf": "inf", "huge": "1e300"}[mode]
        with REPORT.scenario(
            f"joint_value_{mode}", h.monitor, f"one joint position = {value} for 1.5 s"
        ) as notes:
            h.inputs.joint_mode = mode
            try:
                if mode == "huge":  # finite: accepted as a measurement; commands stay inside the limits
                    time.sleep(1.5)
                    notes.append(f"state {h.latest_status().state}, commands inside limits")
                else:
                    notes.append("held: " + _holds_with(h, "non-finite"))
            finally:
                h.inputs.joint_mode = "ok"
            _recovers(h)
            _alive(proc)

    @pytest.mark.parametrize(
        ("camera", "mode", "reason"),
        [
            ("head", "bad_encoding", "32FC1"),
            ("left_wrist", "wrong_size", "expected"),
            ("head", "short_data", ""),
            ("right_wrist", "corrupt", "corrupt"),
        ],
    )
    def test_bad_images(self, system, camera: str, mode: str, reason: str) -> None:
        proc, h, _ = system
        with REPORT.scenario(f"image_{mode}", h.monitor, f"{camera}: {mode}") as notes:
            h.inputs.camera_mode[camera] = mode
            try:
                notes.append("held: " + _holds_with(h, reason or camera))
            finally:
                h.inputs.camera_mode[camera] = "ok"
            _recovers(h)
            _alive(proc)

    def test_out_of_order_timestamps(self, system) -> None:
        proc, h, _ = system
        with REPORT.scenario(
            "timestamps_out_of_order", h.monitor, "every other stamp 0.1 s older, 2 s"
        ) as notes:
            start = h.count_commands()
            h.inputs.stamp_mode = "out_of_order"
            try:
                time.sleep(2.0)
            finally:
                h.inputs.stamp_mode = "ok"
            assert h.count_commands() > start + 10, "commands stopped"
            _alive(proc)
            notes.append(f"{h.count_commands() - start} commands, none outside the invariants")

    def test_old_timestamps(self, system) -> None:
        proc, h, _ = system
        with REPORT.scenario("timestamps_old", h.monitor, "every stamp 10 s in the past") as notes:
            h.inputs.stamp_mode = "old"
            try:
                notes.append("held: " + _holds_with(h, "stale"))
            finally:
                h.inputs.stamp_mode = "ok"
            _recovers(h)
            _alive(proc)

    def test_instruction_flood_1khz(self, system) -> None:
        proc, h, _ = system
        with REPORT.scenario("instruction_flood_1kHz", h.monitor, "2000 instructions at 1 kHz") as notes:
            start = h.count_commands()
            t0 = time.monotonic()
            for i in range(2000):
                h.publish_instruction(f"{INSTRUCTION} {i % 7}")
                time.sleep(max(0.0, t0 + (i + 1) * 1e-3 - time.monotonic()))
            h.publish_instruction(INSTRUCTION)
            assert h.wait_status(lambda s: s.state == RUNNING and s.instruction == INSTRUCTION, 30.0)
            assert h.wait_for(lambda: h.count_commands() > start + 20, 30.0)
            _alive(proc)
            notes.append(f"sent in {time.monotonic() - t0:.1f} s; running with the last instruction")

    def test_huge_instruction_1mb(self, system) -> None:
        proc, h, _ = system
        with REPORT.scenario("instruction_1MB", h.monitor, "a 1 MB instruction") as notes:
            h.publish_instruction("x" * 1_000_000)
            try:
                notes.append("held: " + _holds_with(h, "limit"))
            finally:
                h.publish_instruction(INSTRUCTION)
            _recovers(h)
            _alive(proc)

    def test_topics_flooded_3x(self, system) -> None:
        proc, h, _ = system
        with REPORT.scenario("topics_flood_3x", h.monitor, "cameras 45 Hz, joints 150 Hz for 3 s") as notes:
            start = h.count_commands()
            stop = threading.Event()

            def _flood(fn, hz: float) -> None:  # two extra publishes per harness publish: 3x
                while not stop.wait(1.0 / hz):
                    fn()

            threads = [
                threading.Thread(target=_flood, args=(h.publish_cameras, 30.0), daemon=True),
                threading.Thread(target=_flood, args=(h.publish_joints, 100.0), daemon=True),
            ]
            for t in threads:
                t.start()
            try:
                time.sleep(3.0)
            finally:
                stop.set()
                for t in threads:
                    t.join(2.0)
            assert h.count_commands() > start + 30, "commands stopped"
            # a brief hold is allowed (the flooding harness can starve its own publishers), not a stop
            status = h.wait_status(lambda s: s.state == RUNNING, 10.0)
            assert status is not None, f"not running after the flood: {h.latest_status()}"
            _alive(proc)
            notes.append(
                f"{h.count_commands() - start} commands during the flood; deadline misses "
                f"{status.deadline_misses}"
            )

    def test_invalid_runtime_parameters_refused(self, system) -> None:
        proc, h, _ = system
        cases = [
            ("control_rate_hz", 1e6, "control_rate_hz"),
            ("control_rate_hz", -5.0, "control_rate_hz"),
            ("max_state_age", -1.0, "max_state_age"),
            ("deadline_factor", 0.5, "> 1"),
            ("blending", "average", "temporal_ensemble"),
            ("output_mode", "teleport", "output_mode"),
            ("limits.max_velocity", [-0.1], "> 0"),
            ("limits.position_lower", [2.0], "position_lower >= position_upper"),
            ("limits.position_upper", [math.inf], "finite"),
        ]
        with REPORT.scenario(
            "invalid_parameters", h.monitor, f"{len(cases)} invalid values set at run time"
        ) as n:
            for name, value, text in cases:
                ok, reason = h.set_parameter(name, value)
                assert not ok and text in reason, (name, value, reason)
            n.append(f"all refused, e.g. {reason!r}")
            assert h.wait_status(lambda s: s.state == RUNNING, 10.0) is not None
            _alive(proc)

    def test_checkpoints_missing_corrupt_mismatched(self, system, tiny_checkpoint: Path) -> None:
        proc, h, tmp = system
        corrupt = tmp / "corrupt"
        shutil.copytree(tiny_checkpoint, corrupt)
        (corrupt / "model.safetensors").write_bytes(b"\x00garbage" * 100)
        mismatched = tmp / "mismatched"
        shutil.copytree(tiny_checkpoint, mismatched)
        cfg = json.loads((mismatched / "config.json").read_text())
        cfg["model"]["backbone"]["vision"]["intermediate_size"] = 96
        (mismatched / "config.json").write_text(json.dumps(cfg))
        not_dir = tmp / "weights.safetensors"
        not_dir.write_bytes(b"x")
        cases = [
            ("missing", tmp / "no_such_checkpoint", "not found"),
            ("file", not_dir, "must be a directory"),
            ("no_config", tmp, "no config.json"),
            ("corrupt", corrupt, "corrupt"),
            ("mismatched_config", mismatched, "cannot load checkpoint"),
        ]
        with REPORT.scenario(
            "checkpoint_missing_corrupt_mismatched",
            h.monitor,
            "deactivate, cleanup, configure with bad checkpoints",
        ) as notes:
            assert h.change_state(DEACTIVATE) and h.change_state(CLEANUP)
            for name, path, text in cases:
                ok, _ = h.set_parameter("checkpoint", str(path))
                assert ok
                assert not h.change_state(CONFIGURE), name
                assert h.lifecycle_state() == "unconfigured"
                status = h.wait_status(lambda s, t=text: s.state == UNCONFIGURED and t in s.reason, 20.0)
                assert status is not None, (name, h.latest_status())
                notes.append(f"{name}: refused")
                _alive(proc)
            assert h.set_parameter("checkpoint", str(tiny_checkpoint))[0]
            assert h.change_state(CONFIGURE) and h.change_state(ACTIVATE)
            _wait_running(h, proc, 60.0)
            _recovers(h)
            notes.append("good checkpoint configured and running again")

    def test_sigterm_during_inference(self, system) -> None:
        import signal

        proc, h, _ = system
        with REPORT.scenario(
            "sigterm_while_running", h.monitor, "SIGTERM while commanding (forward)"
        ) as notes:
            assert h.wait_status(lambda s: s.state == RUNNING, 30.0) is not None
            notes += _signal_and_check(proc, h, signal.SIGTERM)


# --- the fake policy: a backend that raises, then is slower than the chunk; SIGINT in inference ----------
class TestFakeBackendFaults:
    @pytest.fixture(scope="class")
    def system(
        self, module_ros_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory
    ) -> Iterator[tuple[subprocess.Popen, Harness]]:
        tmp = tmp_path_factory.mktemp("reliability_fake")
        # chunk 16 x 0.05 s = 0.8 s, refill at 0.4 s left, inference 0.5 s: always late by 0.1 s, never so
        # late (even on a loaded machine) that a chunk arrives entirely in the past; 3 raising calls
        fake = {"horizon": 16, "delay": 0.5, "fail_calls": 3}
        harness = Harness()  # first: the harness sees the node's first statuses
        harness.publish_instruction(INSTRUCTION)
        proc = _fake_node(tmp, module_ros_env, fake, output_mode="trajectory")
        try:
            yield proc, harness
        finally:
            _close(proc, harness)

    def test_backend_raises(self, system) -> None:
        proc, h = system
        with REPORT.scenario("backend_raises", h.monitor, "the first 3 inferences raise") as notes:
            fault = h.wait_status(lambda s: s.state == FAULT and "scripted failure" in s.reason, 60.0)
            assert fault is not None and "retrying" in fault.reason
            notes.append(f"FAULT: {fault.reason[:80]}")
            assert h.wait_status(lambda s: s.state == RUNNING and s.last_chunk_id > 0, 30.0) is not None
            _alive(proc)
            notes.append("recovered after retries with backoff")

    def test_slow_backend(self, system) -> None:
        proc, h = system
        with REPORT.scenario("slow_backend", h.monitor, "inference 0.5 s > time left in the chunk") as notes:
            status = h.wait_status(lambda s: s.inference_overruns >= 2, 30.0)
            assert status is not None
            _alive(proc)
            notes.append(f"{status.inference_overruns} overruns counted, holding at the last safe action")

    def test_sigint_during_inference(self, system) -> None:
        import signal

        proc, h = system
        with REPORT.scenario(
            "sigint_during_inference", h.monitor, "SIGINT with a 0.5 s inference in flight (trajectory)"
        ) as notes:
            assert h.wait_status(lambda s: s.state == RUNNING, 30.0) is not None
            assert h.wait_for(lambda: all(h.trajectories.values()), 10.0)
            time.sleep(0.2)  # refills never stop with a 0.5 s inference: one is in flight
            notes += _signal_and_check(proc, h, signal.SIGINT)


# --- the fake policy under use_sim_time: the clock jumps back (a bag loop) -------------------------------
class TestSimTimeClockJump:
    def test_clock_backwards(self, module_ros_env: dict[str, str], tmp_path: Path) -> None:
        from rosgraph_msgs.msg import Clock

        h = Harness(use_sim_time=True)
        proc = _fake_node(tmp_path, module_ros_env, {"horizon": 8}, output_mode="forward", use_sim_time=True)
        pub = h.node.create_publisher(Clock, "/clock", 10)
        sim = {"t": 1000.0}
        stop = threading.Event()

        def _clock() -> None:
            last = time.monotonic()
            while not stop.wait(0.005):
                now = time.monotonic()
                sim["t"] += now - last
                last = now
                sec = int(sim["t"])
                msg = Clock()
                msg.clock.sec, msg.clock.nanosec = sec, int((sim["t"] - sec) * 1e9)
                pub.publish(msg)

        clock_thread = threading.Thread(target=_clock, daemon=True)
        clock_thread.start()
        h.publish_instruction(INSTRUCTION)
        try:
            with REPORT.scenario("clock_backwards_sim_time", h.monitor, "/clock jumps back 5 s") as notes:
                _wait_running(h, proc, 60.0)
                assert h.wait_for(lambda: h.count_commands() > 20, 30.0)
                sim["t"] -= 5.0
                notes.append("jumped back 5 s")
                # issue 21, item 4: the loop wakes, holds and says why (it slept 5 s silently, RUNNING); the
                # hold lasts until the next inputs, too short for the status rate: diagnostics count it
                assert h.wait_for(lambda: int(h.diagnostic_value("clock_jumps_back") or 0) >= 1, 20.0)
                notes.append("the runtime counted the jump and held (diagnostics clock_jumps_back)")
                _recovers(h)
                _alive(proc)
                notes.append(f"commanding again; last status: {h.latest_status().reason[:60]}")
        finally:
            stop.set()
            clock_thread.join(2.0)
            _close(proc, h)


# --- 50 lifecycle cycles: bounded RSS growth ------------------------------------------------------------
def _rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


class TestLifecycleCycles:
    def test_50_cycles_bounded_rss(self, module_ros_env: dict[str, str], tmp_path: Path) -> None:
        h = Harness()
        proc = _fake_node(tmp_path, module_ros_env, {"horizon": 8}, output_mode="forward", autostart=False)
        h.publish_instruction(INSTRUCTION)
        try:
            with REPORT.scenario(
                "lifecycle_50_cycles", h.monitor, "configure/activate/deactivate/cleanup x 50 (fake policy)"
            ) as notes:
                rss: list[int] = []
                for i in range(50):
                    for transition in (CONFIGURE, ACTIVATE, DEACTIVATE, CLEANUP):
                        assert h.change_state(transition), (i, transition)
                    if i in (4, 49):
                        rss.append(_rss_kb(proc.pid))
                growth_mb = (rss[1] - rss[0]) / 1024
                notes.append(
                    f"RSS after cycle 5 {rss[0] / 1024:.1f} MB, after 50 {rss[1] / 1024:.1f} MB "
                    f"(+{growth_mb:.1f} MB)"
                )
                REPORT.extra["lifecycle_rss_growth_mb"] = round(growth_mb, 2)
                assert growth_mb < 20.0, notes[-1]
                assert h.lifecycle_state() == "unconfigured"
                _alive(proc)
        finally:
            _close(proc, h)


# --- issue 21: trajectory-mode holds, the worker process, inputs that jump, live limits -----------------
def _holds_since(h: Harness, n0: dict[str, int]) -> dict[str, int]:
    """One-point (hold) trajectories per group received after the counts ``n0``."""
    with h.lock:
        return {g: sum(len(t.points) == 1 for t in h.trajectories[g][n0[g] :]) for g in GROUP_JOINTS}


def _counts(h: Harness) -> dict[str, int]:
    with h.lock:
        return {g: len(h.trajectories[g]) for g in GROUP_JOINTS}


def _counts_while_moving(h: Harness, timeout: float = 30.0) -> dict[str, int]:
    """The trajectory counts, taken when every group's latest trajectory is a move, not a hold. A hold
    episode sends its trajectory once, so a scenario that expects a hold must start from a moving node:
    on a loaded machine a brief stale-input hold can still be running when the scenario begins."""
    found: dict[str, int] = {}

    def _moving() -> bool:
        with h.lock:
            if all(h.trajectories[g] and len(h.trajectories[g][-1].points) > 1 for g in GROUP_JOINTS):
                found.update(_counts(h))
                return True
        return False

    assert h.wait_for(_moving, timeout), f"the node is not moving; last: {h.latest_status()}"
    return found


def _chunks_after(h: Harness, n: int) -> bool:
    return h.count_chunks() > n


def _worker_pid(h: Harness) -> int:
    """The inference worker's pid from a /diagnostics message sent while RUNNING (not an older one)."""
    assert h.wait_status(lambda s: s.state == RUNNING, 60.0) is not None
    n = len(h.diagnostics)
    assert h.wait_for(lambda: len(h.diagnostics) > n + 1, 20.0)
    pid = int(h.diagnostic_value("worker_pid") or 0)
    assert pid > 0
    return pid


class TestTrajectorySafety:
    """The real tiny model in trajectory mode, the model in its own process (the default)."""

    @pytest.fixture(scope="class")
    def system(
        self, tiny_checkpoint: Path, module_ros_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory
    ) -> Iterator[tuple[subprocess.Popen, Harness, Path]]:
        tmp = tmp_path_factory.mktemp("reliability_trajectory")
        # a hang is declared after 3 s: the tiny model takes well under a second even on a loaded machine
        params = node_params(tiny_checkpoint, output_mode="trajectory", inference_timeout=3.0)
        proc = start_node(write_params_file(tmp / "params.yaml", params), module_ros_env, tmp / "node.log")
        harness = Harness()
        harness.publish_instruction(INSTRUCTION)
        try:
            _wait_running(harness, proc)
            yield proc, harness, tmp
        finally:
            _close(proc, harness)

    @pytest.mark.parametrize(
        ("mode", "what"),
        [
            ("off", "the joint state stops"),
            ("duplicate", "a joint name twice"),
            ("empty", "an empty position array"),
            ("extra", "more positions than names"),
        ],
    )
    def test_trajectory_hold_lands_at_the_robot(self, system, mode: str, what: str) -> None:
        """Issue 21, item 1: the hold is a one-point trajectory at the robot (the monitor checks its
        distance from the measured position against max_velocity), not at an internal value."""
        proc, h, _ = system
        with REPORT.scenario(f"trajectory_hold_joint_{mode}", h.monitor, what) as notes:
            n0 = _counts_while_moving(h)
            h.inputs.joint_mode = mode
            try:
                notes.append(_holds_with(h, "joint state"))
                assert h.wait_for(lambda: all(v >= 1 for v in _holds_since(h, n0).values()), 20.0), (
                    "no hold trajectory"
                )
            finally:
                h.inputs.joint_mode = "ok"
            _recovers(h)
            _alive(proc)

    def test_process_stall_3s(self, system) -> None:
        import signal

        proc, h, _ = system
        with REPORT.scenario("process_stall_3s", h.monitor, "the node process stopped for 3 s") as notes:
            proc.send_signal(signal.SIGSTOP)
            time.sleep(3.0)  # the stall itself is the scenario
            proc.send_signal(signal.SIGCONT)
            _recovers(h)
            _alive(proc)
            notes.append("resumed and commanding; every trajectory after the stall checked by the monitor")

    def test_joint_state_jump(self, system) -> None:
        """The arm is pushed 0.3 rad while the node runs: the next trajectory starts at the new position."""
        proc, h, _ = system
        with REPORT.scenario("joint_state_jump", h.monitor, "every measured joint jumps by 0.3 rad") as notes:
            h.inputs.echo_commands = False  # the pushed arm stays where it was pushed
            try:
                h.push_arm(0.3)
                n = h.count_chunks()
                assert h.wait_for(lambda: _chunks_after(h, n + 2), 30.0)
            finally:
                h.inputs.echo_commands = True
            notes.append("trajectories after the jump start at the measured position (monitor)")
            _alive(proc)

    def test_cameras_at_different_rates(self, system) -> None:
        proc, h, _ = system
        with REPORT.scenario(
            "cameras_at_different_rates", h.monitor, "head 5 Hz, right wrist 7.5 Hz, left wrist 15 Hz for 3 s"
        ) as notes:
            h.inputs.camera_every.update(head=3, right_wrist=2)
            try:
                n = h.count_chunks()
                assert h.wait_for(lambda: _chunks_after(h, n + 3), 30.0)
                # waited for, not sampled: one status may be a brief watchdog report of a stalled tick
                status = h.wait_status(lambda st: st.state == RUNNING, 10.0)
                assert status is not None, h.latest_status()
                notes.append(f"{h.count_chunks() - n} chunks while the rates differed; RUNNING")
            finally:
                h.inputs.camera_every.update(head=1, right_wrist=1)
            _alive(proc)

    def test_instruction_with_invalid_utf8(self, system) -> None:
        """Issue 21, item 6: refused, HOLDING with the reason in status and diagnostics."""
        proc, h, _ = system
        with REPORT.scenario("instruction_invalid_utf8", h.monitor, "instruction bytes 0xff 0xfe") as notes:
            h.publish_instruction_bytes(b"pick up the \xff\xfe cube")
            try:
                notes.append(_holds_with(h, "UTF-8"))
                assert h.wait_for(
                    lambda: "UTF-8" in (h.diagnostic_value("instruction.last_error") or ""), 20.0
                )
            finally:
                h.publish_instruction(INSTRUCTION)
            _recovers(h)
            _alive(proc)

    def test_worker_killed(self, system) -> None:
        """Issue 18: SIGKILL of the inference worker: FAULT with the reason, a hold, a restart with
        backoff, RUNNING again by itself."""
        import signal

        proc, h, _ = system
        with REPORT.scenario("worker_sigkill", h.monitor, "SIGKILL to the inference worker process") as notes:
            pid = _worker_pid(h)
            n0 = _counts_while_moving(h)
            killed_at = time.monotonic()
            os.kill(pid, signal.SIGKILL)
            fault = h.wait_status(lambda s: s.state == FAULT and "SIGKILL" in s.reason, 20.0)
            assert fault is not None, h.latest_status()
            notes.append(f"FAULT: {fault.reason[:70]}")
            assert h.wait_for(lambda: all(v >= 1 for v in _holds_since(h, n0).values()), 20.0), "no hold"
            with h.lock:
                first_hold = min(
                    t
                    for g in GROUP_JOINTS
                    for t, m in zip(
                        h.monitor.trajectory_times[g][n0[g] :], h.trajectories[g][n0[g] :], strict=True
                    )
                    if len(m.points) == 1
                )
            notes.append(f"hold {first_hold - killed_at:.3f} s after the kill")
            _recovers(h, timeout=120.0)
            new_pid = int(h.diagnostic_value("worker_pid") or 0)
            assert h.wait_for(lambda: int(h.diagnostic_value("worker_pid") or 0) not in (0, pid), 20.0)
            notes.append(f"restarted (worker {pid} -> {new_pid}), RUNNING")
            _alive(proc)

    def test_worker_hangs(self, system) -> None:
        """A worker stopped mid-request (SIGSTOP): hung after inference_timeout, killed, restarted."""
        import signal

        proc, h, _ = system
        with REPORT.scenario("worker_hang_sigstop", h.monitor, "SIGSTOP to the inference worker") as notes:
            pid = _worker_pid(h)
            os.kill(pid, signal.SIGSTOP)
            try:
                fault = h.wait_status(lambda s: s.state == FAULT and "hung" in s.reason, 30.0)
                assert fault is not None, h.latest_status()
                notes.append(f"FAULT: {fault.reason[:70]}")
                _recovers(h, timeout=120.0)
            finally:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGCONT)
            assert h.wait_for(lambda: int(h.diagnostic_value("worker_pid") or 0) not in (0, pid), 20.0)
            notes.append("the hung worker was replaced; RUNNING")
            _alive(proc)

    def test_limits_tightened_at_run_time(self, system) -> None:
        """The safety limits are dynamic: a slower max_velocity and a narrower range apply at once."""
        proc, h, _ = system
        with REPORT.scenario(
            "limits_tightened_live", h.monitor, "max_velocity 1.0 -> 0.2 rad/s, range [-1, 1] -> [-0.5, 0.5]"
        ) as notes:
            assert h.set_parameter("limits.max_velocity", [0.2])[0]
            assert h.set_parameter("limits.position_lower", [-0.5])[0]
            assert h.set_parameter("limits.position_upper", [0.5])[0]
            try:
                n0 = _counts(h)
                assert h.wait_for(
                    lambda: (
                        h.count_chunks() > 0
                        and all(
                            any(len(t.points) > 1 for t in h.trajectories[g][n0[g] :]) for g in GROUP_JOINTS
                        )
                    ),
                    30.0,
                )
                with h.lock:
                    fresh = [t for g in GROUP_JOINTS for t in h.trajectories[g][n0[g] :] if len(t.points) > 1]
                for traj in fresh:
                    times = [to_seconds(p.time_from_start) for p in traj.points]
                    pts = [list(p.positions) for p in traj.points]
                    for a, b, ta, tb in zip(pts, pts[1:], times, times[1:], strict=False):
                        step = max(abs(x - y) for x, y in zip(a, b, strict=True))
                        assert step <= 0.2 * (tb - ta) + 1e-6, (step, tb - ta)
                    assert all(-0.5 - 1e-9 <= v <= 0.5 + 1e-9 for p in pts for v in p)
                notes.append(f"{len(fresh)} trajectories after the change: within 0.2 rad/s and [-0.5, 0.5]")
            finally:
                assert h.set_parameter("limits.position_lower", [-1.0])[0]
                assert h.set_parameter("limits.position_upper", [1.0])[0]
                assert h.set_parameter("limits.max_velocity", [1.0])[0]
            _alive(proc)

    def test_parameter_changes_of_every_kind(self, system) -> None:
        proc, h, _ = system
        with REPORT.scenario(
            "parameter_changes_every_kind",
            h.monitor,
            "read-only, wrong type, contradictory, next-configure, 0 Hz",
        ) as notes:
            ok, reason = h.set_parameter("status_rate_hz", 50.0)
            assert not ok and "read-only" in reason, reason
            ok, reason = h.set_parameter("control_rate_hz", "fast")
            assert not ok, reason
            ok, reason = h.set_parameter("limits.position_lower", [1.5])  # above the upper limit of 1.0
            assert not ok and "position_lower >= position_upper" in reason, reason
            assert h.set_parameter("control_rate_hz", 0.0)[0]  # 0 = 1 / dt, settable at run time
            assert h.set_parameter("blending", "temporal_ensemble")[0]  # takes effect at the next configure
            assert h.wait_status(lambda s: s.state == RUNNING, 10.0) is not None
            assert h.set_parameter("blending", "none")[0]
            notes.append("refused: read-only, wrong type, contradictory limits; accepted: 0 Hz, blending")
            _alive(proc)

    def test_deactivate_holds_in_trajectory_mode(self, system) -> None:
        proc, h, _ = system
        with REPORT.scenario("deactivate_hold_trajectory", h.monitor, "deactivate while commanding") as notes:
            assert h.change_state(DEACTIVATE)
            for group in GROUP_JOINTS:
                ok, why = h.monitor.last_command_is_hold(group, h.measured(group))
                assert ok, why
                notes.append(f"{group}: {why}")
            assert h.change_state(ACTIVATE)
            _recovers(h)
            _alive(proc)


class TestLifecycleSafety:
    """The scripted fake model: lifecycle orders, shutdown from active, the highest control rate."""

    def _system(self, tmp: Path, env: dict[str, str], **params: Any) -> tuple[subprocess.Popen, Harness]:
        h = Harness()
        h.publish_instruction(INSTRUCTION)
        return _fake_node(tmp, env, {"horizon": 8}, **params), h

    @pytest.mark.parametrize("mode", ["trajectory", "forward"])
    def test_shutdown_from_active_holds(
        self, module_ros_env: dict[str, str], tmp_path: Path, mode: str
    ) -> None:
        """Issue 21, item 2: the lifecycle shutdown transition from active sends a hold first."""
        from lifecycle_msgs.msg import Transition

        proc, h = self._system(tmp_path, module_ros_env, output_mode=mode)
        try:
            with REPORT.scenario(
                f"shutdown_from_active_{mode}", h.monitor, "lifecycle shutdown while active"
            ) as notes:
                _wait_running(h, proc, 60.0)
                assert h.wait_for(
                    lambda: h.count_commands() + sum(map(len, h.trajectories.values())) > 5, 30.0
                )
                assert h.change_state(Transition.TRANSITION_ACTIVE_SHUTDOWN)
                assert h.lifecycle_state() == "finalized"
                time.sleep(0.5)  # the last messages in flight
                for group in GROUP_JOINTS:
                    ok, why = h.monitor.last_command_is_hold(group, h.measured(group))
                    assert ok, why
                    notes.append(f"{group}: {why}")
                _alive(proc)
        finally:
            _close(proc, h)

    def test_lifecycle_transitions_in_every_wrong_order(
        self, module_ros_env: dict[str, str], tmp_path: Path
    ) -> None:
        from lifecycle_msgs.msg import Transition as T  # noqa: N817

        proc, h = self._system(tmp_path, module_ros_env, output_mode="forward", autostart=False)
        wrong = {
            "unconfigured": [T.TRANSITION_ACTIVATE, T.TRANSITION_DEACTIVATE, T.TRANSITION_CLEANUP],
            "inactive": [T.TRANSITION_CONFIGURE, T.TRANSITION_DEACTIVATE],
            "active": [T.TRANSITION_CONFIGURE, T.TRANSITION_CLEANUP, T.TRANSITION_ACTIVATE],
        }
        path = {"unconfigured": T.TRANSITION_CONFIGURE, "inactive": T.TRANSITION_ACTIVATE}
        try:
            with REPORT.scenario(
                "lifecycle_wrong_orders", h.monitor, "every transition that is invalid in each primary state"
            ) as notes:
                for state, transitions in wrong.items():
                    assert h.lifecycle_state() == state
                    for tr in transitions:
                        assert not h.change_state(tr), (state, tr)
                        assert h.lifecycle_state() == state
                    if state in path:
                        assert h.change_state(path[state])
                    notes.append(f"{state}: {len(transitions)} refused")
                _recovers(h)
                assert h.change_state(T.TRANSITION_DEACTIVATE) and h.change_state(T.TRANSITION_CLEANUP)
                _alive(proc)
        finally:
            _close(proc, h)

    def test_highest_control_rate(self, module_ros_env: dict[str, str], tmp_path: Path) -> None:
        """Issue 21, item 3: at the highest rate the schema allows (500 Hz) the velocity bound holds (the
        monitor's windows) and the diagnostics say how well the rate is kept; 1 MHz is refused."""
        proc, h = self._system(tmp_path, module_ros_env, output_mode="forward", control_rate_hz=500.0)
        try:
            with REPORT.scenario(
                "control_rate_500hz", h.monitor, "forward output at 500 Hz for 3 s"
            ) as notes:
                _wait_running(h, proc, 60.0)
                n = h.count_commands()
                assert h.wait_for(lambda: h.count_commands() > n + 300, 60.0)
                assert h.wait_for(lambda: h.diagnostic_value("rate_hz") is not None, 20.0)
                notes.append(
                    f"rate {float(h.diagnostic_value('rate_hz') or 0):.0f} Hz, "
                    f"{h.diagnostic_value('deadline_misses')} deadline misses of "
                    f"{h.diagnostic_value('ticks')} ticks"
                )
                ok, reason = h.set_parameter("control_rate_hz", 1e6)
                assert not ok and "control_rate_hz" in reason
                _alive(proc)
        finally:
            _close(proc, h)
