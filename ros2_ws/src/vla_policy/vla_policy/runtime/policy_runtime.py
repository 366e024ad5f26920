"""``PolicyRuntime``: the whole control logic, ROS-free, driven the same way by the node (wall or sim
clock), offline evaluation (simulated clock) and the simulation's closed loop.

It owns the ``ObservationBuffer``, the ``ChunkScheduler``, the ``SafetyFilter``, the state machine
(RUNNING / HOLDING / FAULT with backoff), the reset epoch, and the inference worker's supervision. The
caller pushes inputs (``observe_*``), calls ``tick(now)`` at the control rate and publishes what it
returns; ``status(now)`` says what the runtime is doing, including a watchdog on the ticks themselves.

Threads: ``tick`` is called from one thread (the control loop); ``observe_*``, ``status`` and ``reset``
may come from others. The model never runs under the runtime's lock: the worker runs it elsewhere, and
in lock-step mode ``tick`` waits for it with the lock released.

States (the numbers of ``vla_msgs/PolicyStatus``):
- READY: configured, not active (no command is sent);
- RUNNING: commands from the policy;
- HOLDING: the inputs are not usable (stale, missing, malformed, no instruction, the clock jumped back):
  the robot holds where it is, and the runtime recovers when good input returns;
- FAULT: inference failed, or the worker crashed or hung: the robot holds, the runtime retries with a
  doubling backoff (restarting the worker when it is gone) and goes back to RUNNING by itself.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any

import numpy as np

from vla_policy.latency_stats import summarize
from vla_policy.runtime.chunk_scheduler import ChunkScheduler, ChunkSchedulerConfig
from vla_policy.runtime.inference import (
    InferenceRequest,
    InferenceResult,
    InferenceWorker,
    ModelInfo,
    WorkerFailure,
)
from vla_policy.runtime.joint_groups import ActionLayout, JointGroups
from vla_policy.runtime.observation_buffer import (
    InstructionRejected,
    ObservationBuffer,
    ObservationBufferConfig,
    ObservationNotReady,
)
from vla_policy.runtime.safety_filter import SafetyFilter, SafetyFilterConfig, Trajectory
from vla_policy.runtime.settings import PolicySettings
from vla_policy.strict_config import replace, require

log = logging.getLogger(__name__)

CLOCK_JUMP_TOLERANCE = 1e-6  # seconds: a tick earlier than the previous one by more is a jump back
MIN_HANG_TIMEOUT = 2.0  # seconds: the default hang timeout is one chunk, but at least this


class RuntimeState(IntEnum):
    UNCONFIGURED = 0
    READY = 1
    RUNNING = 2
    HOLDING = 3
    FAULT = 4


@dataclass(frozen=True)
class RuntimeConfig:
    control_period: float  # seconds between ticks
    scheduler: ChunkSchedulerConfig = field(default_factory=ChunkSchedulerConfig)
    buffer: ObservationBufferConfig = field(default_factory=ObservationBufferConfig)
    safety: SafetyFilterConfig = field(default_factory=SafetyFilterConfig)
    output_mode: str = "forward"  # forward | trajectory
    forward_hold: str = "repeat"  # repeat | stop
    seed: int | None = None
    retry_backoff_initial: float = 0.5
    retry_backoff_max: float = 10.0
    inference_timeout: float = 0.0  # wall seconds before an inference counts as hung; 0 = DEFAULT_HANG
    worker_start_timeout: float = 300.0
    synchronous: bool = False  # lock-step: a due inference completes inside the tick
    deadline_factor: float = 1.5  # a tick later than this many periods after the previous is a miss

    def __post_init__(self) -> None:
        require(
            math.isfinite(self.control_period) and self.control_period > 0,
            f"RuntimeConfig.control_period must be > 0, got {self.control_period}",
        )
        require(self.output_mode in ("forward", "trajectory"), f"unknown output_mode {self.output_mode!r}")
        require(self.forward_hold in ("repeat", "stop"), f"unknown forward_hold {self.forward_hold!r}")
        require(self.retry_backoff_initial > 0, "RuntimeConfig.retry_backoff_initial must be > 0")
        require(
            self.retry_backoff_max >= self.retry_backoff_initial,
            "RuntimeConfig.retry_backoff_max must be >= retry_backoff_initial",
        )
        require(self.inference_timeout >= 0, "RuntimeConfig.inference_timeout must be >= 0")
        require(self.deadline_factor > 1, "RuntimeConfig.deadline_factor must be > 1")

    @classmethod
    def from_settings(cls, settings: PolicySettings, model: ModelInfo) -> RuntimeConfig:
        """The runtime's config for the loaded ``model`` (its dt, cameras and history frames)."""
        return cls(
            control_period=settings.control_period(model.dt),
            scheduler=settings.scheduler,
            buffer=replace(settings.buffer, history_frames=model.history_frames),
            safety=settings.safety,
            output_mode=settings.output_mode,
            forward_hold=settings.forward_hold,
            seed=settings.seed,
            retry_backoff_initial=settings.retry_backoff_initial,
            retry_backoff_max=settings.retry_backoff_max,
            inference_timeout=settings.inference_timeout,
            worker_start_timeout=settings.worker_start_timeout,
            synchronous=settings.lockstep,
            deadline_factor=settings.deadline_factor,
        )


@dataclass(frozen=True)
class AcceptedChunk:
    """A chunk the scheduler took: the model's raw output, for ``~/action_chunk`` and reports."""

    chunk_id: int
    actions: np.ndarray  # float32 [T, action_dim] unnormalised
    obs_stamp: float
    dt: float
    compute_s: float  # wall seconds the worker spent on it
    timings: Mapping[str, float] = field(default_factory=dict)  # stage -> seconds


@dataclass(frozen=True)
class TickOutput:
    """What to send for one tick. ``command``: forward output, joint positions [J] (state-vector order).
    ``trajectory``: trajectory output (a chunk, or a one-point hold). ``hold``: the command or trajectory
    holds the robot. ``chunk``: a chunk accepted at this tick."""

    state: RuntimeState
    reason: str
    command: np.ndarray | None = None
    trajectory: Trajectory | None = None
    hold: bool = False
    chunk: AcceptedChunk | None = None


@dataclass
class RuntimeStatus:
    """A consistent snapshot for ``~/status`` and ``/diagnostics``."""

    state: RuntimeState
    reason: str
    instruction: str
    last_chunk_id: int
    observation_age: float  # seconds of the oldest input, -1 when none
    latencies: list[float]  # recent inference compute times (s)
    ticks: int
    deadline_misses: int
    jitter: dict[str, float]  # rate_hz, |tick interval - period|: jitter_p50_ms, _p99_ms, _max_ms
    inference: dict[str, float]
    inputs: dict[str, Any]
    safety: dict[str, Any]
    worker: dict[str, Any]


@dataclass
class _InFlight:
    request_id: int
    observation_stamp: float
    submitted_at: float  # runtime clock
    submitted_wall: float  # monotonic


@dataclass
class _Counters:
    messages: dict[str, int] = field(default_factory=dict)
    errors: dict[str, int] = field(default_factory=dict)
    last_error: dict[str, str] = field(default_factory=dict)


class PolicyRuntime:
    """The control logic for one loaded model; see the module docstring."""

    def __init__(
        self,
        config: RuntimeConfig,
        joints: JointGroups,
        worker: InferenceWorker,
        model: ModelInfo,
        *,
        wall_clock: Any = time.monotonic,
    ) -> None:
        self.joints = joints.with_layout(ActionLayout.from_spans(model.action_layout, model.action_dim))
        missing = sorted(set(model.cameras) ^ set(config.buffer.cameras))
        require(
            not missing,
            f"cameras {list(config.buffer.cameras)} do not match the checkpoint's cameras "
            f"{list(model.cameras)}",
        )
        require(
            self.joints.state_dim <= model.max_state_dim,
            f"{self.joints.state_dim} joints > the model's max_state_dim {model.max_state_dim}",
        )
        self.config = config
        self.model = model
        self.worker = worker
        self._wall = wall_clock
        self.period = config.control_period
        self.buffer = ObservationBuffer(replace(config.buffer, history_frames=model.history_frames))
        self.scheduler = ChunkScheduler(
            replace(config.scheduler, control_period=self.period, action_dt=model.dt)
        )
        self.safety = SafetyFilter(config.safety, self.joints.state_dim, self.period, config.output_mode)
        # A hang is declared late enough that a slow inference on a loaded machine is not one (the robot is
        # safe meanwhile: it holds once the chunk runs out), early enough to restart within seconds.
        self.inference_timeout = config.inference_timeout or max(model.horizon * model.dt, MIN_HANG_TIMEOUT)
        self._lock = threading.RLock()
        self._state = RuntimeState.READY
        self._reason = f"configured ({model.name}); warm-up {model.warmup_s:.3f} s"
        self._logged_at = -math.inf
        self._active = False
        self._held = False  # the hold of the current episode was sent (trajectory mode sends it once)
        self._next_request = 1
        self._discard_below = 1  # results of requests older than this (a reset) are dropped
        self._inflight: _InFlight | None = None
        self._fault_until: float | None = None
        self._fault_reason = ""
        self._backoff = 0.0
        self._restart: threading.Thread | None = None
        self._closing = threading.Event()
        self._worker_problem: str | None = None  # set while the worker is being restarted
        self._last_tick: float | None = None  # runtime clock of the last tick
        self._last_tick_wall: float | None = None
        self._ticks = 0
        self._deadline_misses = 0
        self._intervals: deque[float] = deque(maxlen=2000)
        self._latencies: deque[float] = deque(maxlen=200)
        self._inference_errors = 0
        self._worker_restarts = 0
        self._chunk_id = 0
        self._clock_jumps = 0
        self._counters = _Counters()

    # --- inputs ------------------------------------------------------------------------------------
    def _count(self, source: str, error: str | None = None) -> str | None:
        with self._lock:
            c = self._counters
            c.messages[source] = c.messages.get(source, 0) + 1
            if error is not None:
                c.errors[source] = c.errors.get(source, 0) + 1
                c.last_error[source] = error
        return error

    def observe_image(self, camera: str, rgb: np.ndarray, stamp: float) -> str | None:
        """An RGB image [H, W, 3] uint8 of ``camera`` stamped ``stamp``; the reason when it was dropped."""
        try:
            self.buffer.update_image(camera, rgb, stamp)
        except (KeyError, ValueError) as exc:
            reason = str(exc).strip("'\"")
            self.buffer.report_error(camera, reason)
            return self._count(camera, reason)
        return self._count(camera)

    def observe_joints(self, state: np.ndarray, stamp: float) -> str | None:
        """Joint positions [J] in state-vector order (``joints.state_from_joint_state``)."""
        try:
            self.buffer.update_state(state, stamp)
        except ValueError as exc:
            self.buffer.report_error("joint_states", str(exc))
            return self._count("joint_states", str(exc))
        return self._count("joint_states")

    def observe_instruction(self, text: str) -> str | None:
        """A new instruction; a rejected one clears the active instruction (the runtime holds)."""
        try:
            self.buffer.set_instruction(text)
        except InstructionRejected as exc:
            return self._count("instruction", f"instruction rejected: {exc.reason}")
        return self._count("instruction")

    def reject_instruction(self, reason: str) -> str:
        """An instruction message the adapter could not decode (e.g. invalid UTF-8): refused like any bad
        instruction, so the runtime holds until a valid one arrives."""
        self.buffer.reject_instruction(reason)
        return self._count("instruction", f"instruction rejected: {reason}") or reason

    def reject_input(self, source: str, reason: str) -> None:
        """A message the adapter could not convert (wrong encoding, bad joint names, ...)."""
        self.buffer.report_error(source, reason)
        self._count(source, reason)

    def measured(self, now: float) -> tuple[np.ndarray | None, float | None]:
        """(joint positions, their stamp) when fresh (at most ``max_state_age`` old), else (None, None)."""
        latest = self.buffer.latest_state()
        if latest is None or not 0 <= now - latest[1] <= self.buffer.config.max_state_age:
            return None, None
        return latest[0].astype(np.float64), latest[1]

    def inputs_current(self, now: float) -> bool:
        """Lock-step: every input has a message stamped at ``now`` (or later)."""
        return all(a is not None and a <= 1e-6 for a in self.buffer.ages(now).values())

    # --- lifecycle ---------------------------------------------------------------------------------
    @property
    def state(self) -> RuntimeState:
        return self._state

    @property
    def active(self) -> bool:
        return self._active

    def _set_state(self, state: RuntimeState, reason: str) -> None:
        """Change state; logged at each change, and a new reason within a state at most once a second."""
        wall = time.monotonic()
        if state != self._state or (reason != self._reason and wall - self._logged_at >= 1.0):
            level = logging.WARNING if state in (RuntimeState.HOLDING, RuntimeState.FAULT) else logging.INFO
            log.log(level, "%s: %s", state.name, reason[:500])
            self._logged_at = wall
        self._state, self._reason = state, reason

    def activate(self, now: float) -> None:
        """Start commanding; the first command ramps from the measured position."""
        with self._lock:
            self.scheduler.reset()
            self.safety.reset()
            self._fault_until = None
            self._backoff = 0.0
            self._held = False
            self._last_tick = None
            self._last_tick_wall = None
            self._active = True
            self._set_state(RuntimeState.RUNNING, "active")

    def deactivate(self, now: float, reason: str = "inactive (holding)") -> TickOutput:
        """Stop commanding; returns the final hold at the measured position (send it)."""
        with self._lock:
            out = self._hold_output(now, force=True) if self._active else TickOutput(self._state, reason)
            self._active = False
            self._discard_inflight()
            self.scheduler.reset()
            self._set_state(RuntimeState.READY, reason)
            return replace(out, state=RuntimeState.READY, reason=reason)

    def reset(self) -> None:
        """A new episode: drop the chunk, any inference in flight and the observation history; the next
        chunk comes from observations received after the reset."""
        with self._lock:
            self._discard_inflight()
            self.scheduler.reset()
            self.buffer.clear()
            self.safety.reset()
            self._held = False

    def set_limits(self, limits: SafetyFilterConfig) -> None:
        """New safety limits, at once (``ConfigError`` when they do not fit the joints)."""
        with self._lock:
            self.safety.set_limits(limits)

    def close(self) -> None:
        """Stop supervising and close the worker (the runtime cannot be used afterwards)."""
        self._closing.set()
        with self._lock:
            self._active = False
        restart = self._restart
        if restart is not None:
            restart.join(timeout=self.config.worker_start_timeout)
        self.worker.close()

    def _discard_inflight(self) -> None:
        self._discard_below = self._next_request
        if self._inflight is not None:
            self.scheduler.cancel_inference()
            self._inflight = None

    # --- the tick ----------------------------------------------------------------------------------
    def tick(self, now: float) -> TickOutput:
        """One control tick at ``now`` (seconds on the runtime's clock): what to send."""
        wall = self._wall()
        with self._lock:
            if not self._active:
                return TickOutput(self._state, self._reason)
            self._time_tick(now, wall)
            if self._last_tick is not None and now < self._last_tick - CLOCK_JUMP_TOLERANCE:
                return self._clock_jumped_back(now)
            self._last_tick = now
            accepted = self._collect_result(now, wall)
            problem = self._check_worker(now, wall)
            out = self._before_command(now, problem)
            if out is not None:
                return out
            request = self._maybe_submit(now, wall)
        if request is not None and self.config.synchronous:
            result, failure = self._wait_synchronously(wall)
            with self._lock:
                if result is None:
                    self._worker_failed(failure)
                    return self._hold_output(now)
                accepted = self._take_result(result, now, wall) or accepted
        with self._lock:
            if not self._active or self._state == RuntimeState.FAULT:
                return self._hold_output(now)
            return self._command(now, accepted)

    def _wait_synchronously(self, submitted_wall: float) -> tuple[InferenceResult | None, str]:
        """Lock-step: the in-flight result, waited for while the worker lives (sim time stands still
        meanwhile, so a slow machine changes nothing); with ``inference_timeout`` set, at most that long.
        (None, why) when the worker died or the timeout passed."""
        limit = self.config.inference_timeout or math.inf
        while True:
            try:
                result = self.worker.wait(0.5)
            except WorkerFailure as exc:
                return None, str(exc)
            if result is not None:
                return result, ""
            health = self.worker.health()
            if health is not None:
                return None, health
            if self._wall() - submitted_wall > limit:
                return None, f"inference hung: no result after {limit:.2f} s"

    def _time_tick(self, now: float, wall: float) -> None:
        if self._last_tick_wall is not None:
            interval = wall - self._last_tick_wall
            self._intervals.append(interval)
            if interval > self.period * self.config.deadline_factor:
                self._deadline_misses += 1
        self._last_tick_wall = wall
        self._ticks += 1

    def _clock_jumped_back(self, now: float) -> TickOutput:
        assert self._last_tick is not None
        jump = self._last_tick - now
        self._clock_jumps += 1
        self.safety.shift_time(-jump)  # the robot is where it was commanded before the jump
        self._discard_inflight()
        self.scheduler.reset()
        self.buffer.clear()  # its stamps lie in the new past's future
        self._last_tick = now
        self._held = False
        self._set_state(
            RuntimeState.HOLDING,
            f"clock jumped back by {jump:.3f} s (a looping bag?): chunk and inputs dropped, holding",
        )
        return self._hold_output(now)

    def _collect_result(self, now: float, wall: float) -> AcceptedChunk | None:
        if self._inflight is None:
            return None
        try:
            result = self.worker.poll(now)
        except WorkerFailure as exc:
            self._worker_failed(str(exc))
            return None
        return None if result is None else self._take_result(result, now, wall)

    def _take_result(self, result: InferenceResult, now: float, wall: float) -> AcceptedChunk | None:
        inflight = self._inflight
        if inflight is None or result.request_id != inflight.request_id:
            return None  # an answer to a request dropped by a reset or deactivation
        self._inflight = None
        if result.request_id < self._discard_below or not self._active:
            self.scheduler.cancel_inference()
            return None
        if result.error is not None or result.actions is None:
            self._inference_failed(now, result.error or "no actions")
            return None
        self._latencies.append(result.compute_s)
        if self._state == RuntimeState.HOLDING:  # the inputs went bad meanwhile: never execute it
            self.scheduler.cancel_inference()
            return None
        actions = np.asarray(result.actions, dtype=np.float32)
        switch = self.scheduler.accept(
            actions, inflight.observation_stamp, latency=now - inflight.submitted_at, now=now, dt=result.dt
        )
        if not switch.accepted:
            log.warning("chunk dropped: %s", switch.reason)
            return None
        self._chunk_id = switch.chunk_id
        self._backoff = 0.0
        self._fault_until = None
        if self._state == RuntimeState.FAULT:
            self._set_state(RuntimeState.RUNNING, "inference recovered")
        stamp = inflight.observation_stamp
        return AcceptedChunk(switch.chunk_id, actions, stamp, result.dt, result.compute_s, result.timings)

    def _check_worker(self, now: float, wall: float) -> str | None:
        """Why the worker cannot serve now (None when it can); starts a restart when it is gone."""
        if self._worker_problem is not None:
            return self._worker_problem
        health = self.worker.health()
        if health is None and self._inflight is not None:
            waited = wall - self._inflight.submitted_wall
            if waited > self.inference_timeout:
                health = (
                    f"inference hung: no result after {waited:.2f} s (timeout {self.inference_timeout:.2f} s)"
                )
        if health is not None:
            self._worker_failed(health)
            return self._worker_problem
        return None

    def _worker_failed(self, reason: str) -> None:
        """The worker is gone or hung: hold, FAULT, restart it in the background after the backoff."""
        self._discard_inflight()
        self.scheduler.reset()
        self._backoff = self._next_backoff()
        self._worker_problem = f"inference worker failed ({reason}); restarting in {self._backoff:.2f} s"
        self._set_state(RuntimeState.FAULT, self._worker_problem)
        delay = self._backoff
        self._restart = threading.Thread(
            target=self._restart_worker, args=(delay,), name="vla_worker_restart", daemon=True
        )
        self._restart.start()

    def _restart_worker(self, delay: float) -> None:
        if self._closing.wait(delay):
            return
        try:
            self.worker.close()
            info = self.worker.start(self.config.worker_start_timeout)
            if info.action_dim != self.model.action_dim or info.horizon != self.model.horizon:
                raise WorkerFailure(f"the restarted worker loaded another model ({info.name})")
        except Exception as exc:  # a failed start: try again after a longer backoff
            with self._lock:
                self._worker_restarts += 1
                if not self._closing.is_set():
                    self._worker_failed(f"restart failed: {exc}")
            return
        with self._lock:
            self._worker_restarts += 1
            self._worker_problem = None
            self._fault_until = None
            if self._state == RuntimeState.FAULT:
                self._set_state(RuntimeState.RUNNING, "inference worker restarted")
        log.info("inference worker restarted (%s)", info.name)

    def _next_backoff(self) -> float:
        cfg = self.config
        doubled = cfg.retry_backoff_initial if self._backoff <= 0 else self._backoff * 2
        return min(cfg.retry_backoff_max, doubled)

    def _inference_failed(self, now: float, reason: str) -> None:
        self._inference_errors += 1
        self._backoff = self._next_backoff()
        self._fault_until = now + self._backoff
        self.scheduler.cancel_inference()
        self.scheduler.reset()
        self._fault_reason = f"inference failed: {reason}; retrying in {self._backoff:.2f} s"
        self._set_state(RuntimeState.FAULT, self._fault_reason)

    def _before_command(self, now: float, problem: str | None) -> TickOutput | None:
        """A hold when the inputs, the backoff or the worker forbid commanding; None to go on."""
        not_ready = self.buffer.check(now)
        if not_ready is not None:
            if self._state != RuntimeState.HOLDING:
                self.scheduler.reset()
                self._held = False
            if self._state != RuntimeState.FAULT or problem is None:
                self._set_state(RuntimeState.HOLDING, not_ready)
            return self._hold_output(now)
        if problem is not None:
            if self._state != RuntimeState.FAULT:
                self._set_state(RuntimeState.FAULT, problem)
            return self._hold_output(now)
        if self._fault_until is not None and now < self._fault_until:
            self._set_state(RuntimeState.FAULT, self._fault_reason)
            return self._hold_output(now)
        if self._state == RuntimeState.HOLDING:
            self._set_state(RuntimeState.RUNNING, "inputs recovered")
            self._held = False
        elif self._state == RuntimeState.FAULT:
            self._set_state(RuntimeState.RUNNING, "retrying inference")
            self._held = False
        return None

    def _maybe_submit(self, now: float, wall: float) -> InferenceRequest | None:
        if self._inflight is not None or not self.scheduler.needs_inference(now):
            return None
        try:
            observation = self.buffer.snapshot(now)
        except ObservationNotReady:
            return None
        rtc = self.scheduler.rtc_guidance(observation.stamp, now, self.model.horizon, self.model.dt)
        request = InferenceRequest(self._next_request, observation, seed=self.config.seed, rtc=rtc)
        try:
            self.worker.submit(request, now)
        except WorkerFailure as exc:
            self._worker_failed(str(exc))
            return None
        self._next_request += 1
        self.scheduler.begin_inference(now)
        self._inflight = _InFlight(request.request_id, observation.stamp, now, wall)
        return request

    def _command(self, now: float, accepted: AcceptedChunk | None) -> TickOutput:
        measured, measured_at = self.measured(now)
        if self.config.output_mode == "trajectory":
            trajectory = None
            if accepted is not None:
                actions, times = self.scheduler.remaining(now)
                if actions.shape[0]:
                    trajectory = self.safety.trajectory(
                        self.joints.select_actions(actions), times, now, measured, measured_at
                    )
            if trajectory is None and self.scheduler.next_action(now) is None:
                self._note_waiting()  # the controller stays at the last trajectory's end meanwhile
            if trajectory is not None:
                self._held = False
            return TickOutput(self._state, self._reason, trajectory=trajectory, chunk=accepted)
        action = self.scheduler.next_action(now)
        if action is None:
            self._note_waiting()
            if self.safety.active:  # repeat the last command (or send nothing, forward_hold: stop)
                return self._hold_output(now, chunk=accepted)
            return TickOutput(self._state, self._reason, chunk=accepted)
        result = self.safety.command(self.joints.select_actions(action), now, measured)
        if result.command is None:
            return TickOutput(self._state, self._reason, chunk=accepted)
        self._held = False
        return TickOutput(self._state, self._reason, command=result.command, chunk=accepted)

    def _note_waiting(self) -> None:
        if self.scheduler.current is not None and self._state == RuntimeState.RUNNING:
            self._reason = (
                f"waiting for a chunk: inference slower than the chunk ({self.scheduler.overruns} overruns)"
            )

    def _hold_output(
        self, now: float, force: bool = False, chunk: AcceptedChunk | None = None
    ) -> TickOutput:
        """Trajectory mode: one hold trajectory per hold episode (the controller keeps it); forward
        mode: the hold command every tick (``forward_hold: repeat``) or nothing (``stop``)."""
        base = TickOutput(self._state, self._reason, chunk=chunk)
        if self.config.output_mode == "trajectory":
            if self._held and not force:
                return base
        elif self.config.forward_hold == "stop" and not force:
            return base
        latest = self.buffer.latest_state()
        hold = self.safety.hold(now, *self.measured(now), None if latest is None else latest[0])
        if hold is None:
            return base
        self._held = True
        if self.config.output_mode == "trajectory":
            return replace(base, trajectory=hold, hold=True)
        return replace(base, command=hold.positions[0], hold=True)

    # --- status ------------------------------------------------------------------------------------
    def samples(self) -> tuple[list[float], list[float], int]:
        """(recent tick intervals [s, wall], recent inference compute times [s], last chunk id), for
        benchmarks that measure a window of their own."""
        with self._lock:
            return list(self._intervals), list(self._latencies), self._chunk_id

    def status(self, now: float) -> RuntimeStatus:
        """What the runtime is doing. A control loop that has not ticked for two periods while active is
        reported as FAULT (the watchdog), whatever the state it last set."""
        with self._lock:
            state, reason = self._state, self._reason
            if self._active and self._last_tick is not None and now - self._last_tick > 2 * self.period:
                state = RuntimeState.FAULT
                reason = (
                    f"control loop stalled: no tick for {now - self._last_tick:.3f} s "
                    f"(period {self.period:.3f} s)"
                )
            ages = [a for a in self.buffer.ages(now).values() if a is not None]
            intervals = np.asarray(self._intervals, dtype=np.float64)
            jitter: dict[str, float] = {}
            if intervals.size:
                stats = summarize(np.abs(intervals - self.period))
                jitter = {
                    "rate_hz": 1.0 / max(float(intervals.mean()), 1e-9),
                    "jitter_p50_ms": stats.median * 1e3,
                    "jitter_p99_ms": stats.p99 * 1e3,
                    "jitter_max_ms": stats.max * 1e3,
                }
            inference: dict[str, float] = {
                "warmup_s": self.model.warmup_s,
                "errors": float(self._inference_errors),
                "last_chunk_id": float(self._chunk_id),
                "timeout_s": self.inference_timeout,
                **self.scheduler.stats(),
            }
            if self._latencies:
                lat = summarize(list(self._latencies))
                inference.update(
                    latency_mean_s=lat.mean,
                    latency_p50_s=lat.median,
                    latency_p99_s=lat.p99,
                    latency_max_s=lat.max,
                )
            c = self._counters
            inputs: dict[str, Any] = {
                "messages": dict(c.messages),
                "dropped": dict(c.errors),
                "last_error": {k: v[:200] for k, v in c.last_error.items()},
                "ages_s": {k: (-1.0 if v is None else v) for k, v in self.buffer.ages(now).items()},
                "clock_jumps_back": self._clock_jumps,
            }
            st = self.safety.stats
            return RuntimeStatus(
                state=state,
                reason=reason,
                instruction=self.buffer.instruction or "",
                last_chunk_id=self._chunk_id,
                observation_age=max(ages) if ages else -1.0,
                latencies=list(self._latencies),
                ticks=self._ticks,
                deadline_misses=self._deadline_misses,
                jitter=jitter,
                inference=inference,
                inputs=inputs,
                safety={
                    "commands": st.commands,
                    "trajectories": st.trajectories,
                    "holds": st.holds,
                    "refused": st.held,
                    "clipped": st.clipped,
                    "rate_limited": st.rate_limited,
                },
                worker={
                    "kind": self.worker.kind,
                    "pid": getattr(self.worker, "pid", None) or 0,
                    "restarts": self._worker_restarts,
                    "problem": self._worker_problem or "",
                    "backend": self.model.backend,
                    "model": self.model.name,
                },
            )

