"""PolicyRuntime's control logic, driven in simulated time against a scripted worker (the model boundary:
the real workers are tested in test_inference_workers.py)."""

from __future__ import annotations

import threading

import numpy as np
import pytest
from vla_policy.runtime.chunk_scheduler import ChunkSchedulerConfig
from vla_policy.runtime.inference import (
    InferenceRequest,
    InferenceResult,
    InferenceWorker,
    ModelInfo,
    WorkerFailure,
)
from vla_policy.runtime.joint_groups import JointGroups
from vla_policy.runtime.observation_buffer import ObservationBufferConfig
from vla_policy.runtime.policy_runtime import PolicyRuntime, RuntimeConfig, RuntimeState
from vla_policy.runtime.safety_filter import SafetyFilterConfig
from vla_policy.strict_config import ConfigError

PERIOD = 0.02
DT = 0.02
HORIZON = 10
VMAX = 1.0
JOINTS = JointGroups(left_arm=("l0", "l1"), right_arm=("r0",), claw=("g",))
INFO = ModelInfo(
    name="scripted@0",
    cameras=("top",),
    image_size=8,
    history_frames=1,
    horizon=HORIZON,
    dt=DT,
    max_state_dim=8,
    action_dim=16,
    action_layout={"left_arm": (0, 7), "right_arm": (7, 7), "claw": (14, 2)},
)


class ScriptedWorker(InferenceWorker):
    """Answers each request with a constant chunk (``target`` at every listed joint's action index), after
    ``latency`` seconds of the runtime's clock; scripted failures: ``errors`` requests fail, ``dead`` makes
    it report an exited process, ``hang`` keeps requests unanswered."""

    kind = "scripted"

    def __init__(self, target: float = 0.5, latency: float = 0.04) -> None:
        self.target, self.latency = target, latency
        self.errors = 0
        self.dead = False
        self.hang = False
        self.starts = 0
        self.started = threading.Event()
        self.requests: list[InferenceRequest] = []
        self._pending: tuple[float, InferenceResult] | None = None

    def start(self, timeout: float) -> ModelInfo:
        self.starts += 1
        self.dead = self.hang = False
        self.started.set()
        return INFO

    def submit(self, request: InferenceRequest, now: float) -> None:
        if self.dead:
            raise WorkerFailure("inference worker exited (killed by SIGKILL)")
        self.requests.append(request)
        actions = np.full((HORIZON, 16), self.target, dtype=np.float32)
        error = None
        if self.errors > 0:
            self.errors -= 1
            actions, error = None, "scripted failure"
        self._pending = (
            now + self.latency,
            InferenceResult(request.request_id, actions, DT, 0.01, {}, error),
        )

    def poll(self, now: float) -> InferenceResult | None:
        if self.dead:
            raise WorkerFailure("inference worker exited (killed by SIGKILL)")
        if self.hang or self._pending is None or now + 1e-9 < self._pending[0]:
            return None
        result, self._pending = self._pending[1], None
        return result

    def wait(self, timeout: float) -> InferenceResult | None:
        if self.hang or self._pending is None:
            return None
        result, self._pending = self._pending[1], None
        return result

    def health(self) -> str | None:
        return "inference worker exited (killed by SIGKILL)" if self.dead else None

    def close(self) -> None:
        self._pending = None


class WallClock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def _runtime(
    worker: ScriptedWorker | None = None,
    *,
    mode: str = "forward",
    wall: WallClock | None = None,
    **cfg: object,
) -> tuple[PolicyRuntime, ScriptedWorker]:
    worker = worker or ScriptedWorker()
    base: dict[str, object] = dict(
        control_period=PERIOD,
        scheduler=ChunkSchedulerConfig(refill_threshold=0.5),
        buffer=ObservationBufferConfig(cameras=("top",), max_state_age=0.1, max_image_age=0.5),
        safety=SafetyFilterConfig(position_lower=(-1.0,), position_upper=(1.0,), max_velocity=(VMAX,)),
        output_mode=mode,
        retry_backoff_initial=0.01,
        retry_backoff_max=0.04,
        inference_timeout=0.5,
    )
    base.update(cfg)
    runtime = PolicyRuntime(RuntimeConfig(**base), JOINTS, worker, INFO, wall_clock=wall or WallClock())  # type: ignore[arg-type]
    runtime.observe_instruction("pick up the cube")
    return runtime, worker


def _feed(runtime: PolicyRuntime, now: float, state: np.ndarray | None = None, camera: bool = True) -> None:
    if camera:
        runtime.observe_image("top", np.zeros((8, 8, 3), np.uint8), now)
    if state is not None:
        runtime.observe_joints(state, now)


def _run(runtime: PolicyRuntime, t0: float, ticks: int, state: np.ndarray | None = None, **feed: bool):
    outs = []
    for i in range(ticks):
        now = t0 + i * PERIOD
        _feed(runtime, now, state if state is not None else np.zeros(4), **feed)
        outs.append(runtime.tick(now))
    return outs


def test_runs_and_commands_move_toward_the_chunk_within_the_velocity_limit() -> None:
    runtime, worker = _runtime()
    runtime.activate(0.0)
    outs = _run(runtime, 0.0, 40)
    commands = np.array([o.command for o in outs if o.command is not None and not o.hold])
    assert runtime.state == RuntimeState.RUNNING and commands.size
    steps = np.abs(np.diff(np.vstack([np.zeros(4), commands]), axis=0))
    assert np.all(steps <= VMAX * PERIOD + 1e-9)
    assert commands[-1][0] > 0.2  # moving toward 0.5 at 1 rad/s
    assert any(o.chunk is not None for o in outs) and len(worker.requests) >= 2


def test_stale_joint_state_holds_and_recovers() -> None:
    runtime, _ = _runtime()
    runtime.activate(0.0)
    _run(runtime, 0.0, 20)
    t = 20 * PERIOD
    outs = [runtime.tick(t + i * PERIOD) for i in range(12)]  # no inputs for 0.24 s
    assert runtime.state == RuntimeState.HOLDING and "joint state" in runtime.status(t).reason
    held = [o.command for o in outs if o.hold]
    assert held and all(np.array_equal(held[0], h) for h in held)  # forward: the last command repeated
    _run(runtime, t + 12 * PERIOD, 10)
    assert runtime.state == RuntimeState.RUNNING


def test_trajectory_hold_without_a_fresh_state_stays_on_the_commanded_path() -> None:
    """Issue 21, item 1: the hold lands on the path the newest trajectory sent the robot along (between
    where it started and its first point, which it had not reached yet), not at a value the robot was
    never sent; it comes no sooner than the velocity limit allows from the last measurement."""
    runtime, _ = _runtime(mode="trajectory")
    runtime.activate(0.0)
    outs = _run(runtime, 0.0, 4)
    sent = [o.trajectory for o in outs if o.trajectory is not None]
    assert sent and not sent[0].hold
    traj = sent[0]
    t = 4 * PERIOD
    for _ in range(20):  # the joint state stops; the camera keeps coming
        t += PERIOD
        _feed(runtime, t, None)
        out = runtime.tick(t)
        if out.trajectory is not None and not out.hold:
            traj = out.trajectory  # a chunk asked for while the state was fresh
        elif out.trajectory is not None:
            break
    assert out.hold and out.trajectory is not None and out.trajectory.positions.shape == (1, 4)
    assert t - traj.stamp < traj.time_from_start[0]  # the robot is still on the way to the first point
    hold = out.trajectory.positions[0]
    assert np.all(hold >= 0.0 - 1e-12) and np.all(hold <= traj.positions[0] + 1e-12)
    assert np.all(hold > 0.0)  # it moved on from the measured position with what was commanded
    # reached within the limit from the last (stale) measurement too: the robot may not have moved
    assert out.trajectory.time_from_start[0] == pytest.approx(max(PERIOD, float(np.max(hold)) / VMAX))


def test_trajectory_mode_sends_a_chunk_once_and_a_hold_once() -> None:
    runtime, _ = _runtime(mode="trajectory")
    runtime.activate(0.0)
    outs = _run(runtime, 0.0, 6)
    assert sum(o.trajectory is not None for o in outs) == 1
    first = next(o.trajectory for o in outs if o.trajectory is not None)
    assert np.all(np.abs(first.positions[0]) <= VMAX * first.time_from_start[0] + 1e-9)  # from measured
    stale = [runtime.tick(6 * PERIOD + 0.2 + i * PERIOD) for i in range(5)]
    assert sum(o.trajectory is not None for o in stale) == 1 and stale[0].hold


def test_clock_jump_back_holds_drops_the_chunk_and_recovers() -> None:
    runtime, _ = _runtime()
    runtime.activate(100.0)
    outs = _run(runtime, 100.0, 30)
    last = next(o.command for o in reversed(outs) if o.command is not None)
    jumped = runtime.tick(95.0)
    assert runtime.state == RuntimeState.HOLDING and "clock jumped back by 5.5" in runtime.status(95.0).reason
    np.testing.assert_allclose(jumped.command, last)  # held where the robot was commanded
    assert runtime.scheduler.current is None
    _run(runtime, 95.0 + PERIOD, 10)
    assert runtime.state == RuntimeState.RUNNING


def test_an_inference_error_is_a_fault_with_backoff_and_recovers() -> None:
    worker = ScriptedWorker()
    worker.errors = 2
    runtime, _ = _runtime(worker)
    runtime.activate(0.0)
    outs = _run(runtime, 0.0, 6)
    assert any(o.state == RuntimeState.FAULT for o in outs)
    assert "scripted failure" in next(o.reason for o in outs if o.state == RuntimeState.FAULT)
    _run(runtime, 6 * PERIOD, 30)
    assert runtime.state == RuntimeState.RUNNING and runtime.status(1.0).inference["errors"] == 2


def test_a_dead_worker_is_restarted_and_running_resumes() -> None:
    runtime, worker = _runtime()
    worker.start(1.0)
    worker.started.clear()
    runtime.activate(0.0)
    _run(runtime, 0.0, 20)
    worker.dead = True
    out = _run(runtime, 20 * PERIOD, 1)[0]
    assert out.state == RuntimeState.FAULT and "SIGKILL" in out.reason and out.hold
    assert worker.started.wait(30.0), "the worker was not restarted"
    outs = _run(runtime, 21 * PERIOD, 20)
    assert outs[-1].state == RuntimeState.RUNNING and runtime.status(1.0).worker["restarts"] == 1


def test_a_hung_inference_is_detected_by_the_timeout_and_the_worker_restarted() -> None:
    wall = WallClock()
    runtime, worker = _runtime(wall=wall)
    runtime.activate(0.0)
    _run(runtime, 0.0, 5)
    worker.hang = True
    worker.started.clear()
    t = 5 * PERIOD
    for _ in range(40):  # the chunk in flight never comes back; wall time runs on
        wall.t += PERIOD
        t += PERIOD
        _feed(runtime, t, np.zeros(4))
        if runtime.tick(t).state == RuntimeState.FAULT:
            break
    assert "inference hung" in runtime.status(t).reason
    assert worker.started.wait(30.0)


def test_reset_drops_the_inference_in_flight() -> None:
    runtime, worker = _runtime(ScriptedWorker(latency=0.1))
    runtime.activate(0.0)
    _run(runtime, 0.0, 2)  # a request is in flight
    runtime.reset()
    outs = _run(runtime, 2 * PERIOD, 5)
    assert all(o.chunk is None for o in outs[:3])  # the old answer is never executed
    assert len(worker.requests) >= 2


def test_watchdog_reports_a_stalled_control_loop() -> None:
    runtime, _ = _runtime()
    runtime.activate(0.0)
    _run(runtime, 0.0, 5)
    assert runtime.status(5 * PERIOD).state == RuntimeState.RUNNING
    stalled = runtime.status(5 * PERIOD + 3 * PERIOD)
    assert stalled.state == RuntimeState.FAULT and "control loop stalled" in stalled.reason


def test_deactivate_returns_a_hold() -> None:
    runtime, _ = _runtime(mode="trajectory")
    runtime.activate(0.0)
    _run(runtime, 0.0, 10)
    state = np.array([0.1, 0.2, 0.0, 0.0])
    runtime.observe_joints(state, 10 * PERIOD)
    out = runtime.deactivate(10 * PERIOD)
    assert out.hold and out.state == RuntimeState.READY
    np.testing.assert_allclose(out.trajectory.positions[0], state)
    assert runtime.tick(11 * PERIOD).trajectory is None  # inactive: nothing is sent


def test_synchronous_mode_accepts_the_chunk_in_the_tick_that_asked() -> None:
    runtime, _ = _runtime(synchronous=True)
    runtime.activate(0.0)
    out = _run(runtime, 0.0, 1)[0]
    assert out.chunk is not None and out.command is not None


def test_an_instruction_with_replacement_characters_holds_with_the_reason() -> None:
    runtime, _ = _runtime()
    runtime.activate(0.0)
    _run(runtime, 0.0, 10)
    assert runtime.observe_instruction("pick up the \ufffd cube") is not None
    _run(runtime, 10 * PERIOD, 2)
    status = runtime.status(12 * PERIOD)
    assert status.state == RuntimeState.HOLDING and "not valid UTF-8" in status.reason


def test_an_older_message_never_replaces_a_newer_one() -> None:
    runtime, _ = _runtime()
    assert runtime.observe_joints(np.zeros(4), 1.0) is None
    reason = runtime.observe_joints(np.ones(4), 0.9)
    assert reason is not None and "out of order" in reason
    latest = runtime.buffer.latest_state()
    assert latest is not None and latest[1] == 1.0 and np.all(latest[0] == 0)
    assert runtime.status(1.0).inputs["dropped"]["joint_states"] == 1


def test_new_limits_take_effect_at_once() -> None:
    runtime, _ = _runtime()
    runtime.activate(0.0)
    _run(runtime, 0.0, 10)
    runtime.set_limits(SafetyFilterConfig(position_lower=(-1.0,), position_upper=(1.0,), max_velocity=(0.1,)))
    outs = _run(runtime, 10 * PERIOD, 10)
    commands = np.array([o.command for o in outs if o.command is not None])
    assert np.all(np.abs(np.diff(commands, axis=0)) <= 0.1 * PERIOD + 1e-9)


def test_cameras_that_do_not_match_the_model_are_refused() -> None:
    with pytest.raises(ConfigError, match="do not match the checkpoint's cameras"):
        _runtime(buffer=ObservationBufferConfig(cameras=("front",)))
