"""The VLA policy lifecycle node: messages -> arrays -> core (buffer, scheduler, safety) -> messages.

- configure: read and validate parameters, load the checkpoint, run warm-up inference, create I/O.
- activate: start the control timer; deactivate: hold; cleanup: free the model.
- Inference runs on its own thread (never two at once); the control timer has its own callback group
  in a MultiThreadedExecutor, so it never waits on the model.
- ``lockstep`` (simulation evaluation, sim time): each tick waits for the inputs stamped at the tick,
  runs a due inference inline (sim time stands still meanwhile) and then publishes ``~/tick``; the
  simulator steps only after it, so a closed loop is deterministic whatever the inference time.
- ``~/reset`` (vla_msgs/Reset): drop the chunk and the observation history, keep the configuration.
"""

from __future__ import annotations

import gc
import signal
import sys
import threading
import time
import traceback
from collections import deque
from pathlib import Path
from typing import Any

import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor
from rclpy.impl.implementation_singleton import rclpy_implementation as _rclpy
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from rclpy.signals import SignalHandlerOptions
from sensor_msgs.msg import CompressedImage, Image, JointState
from std_msgs.msg import Float64MultiArray, String
from trajectory_msgs.msg import JointTrajectory
from vla_msgs.msg import ActionChunk, ControlTick, PolicyStatus
from vla_msgs.srv import Reset
from vla_policy.data.image_codec import ImageDecodeError
from vla_policy.latency_stats import summarize
from vla_policy.runtime.chunk_scheduler import ChunkScheduler
from vla_policy.runtime.joint_groups import JointMappingError
from vla_policy.runtime.observation_buffer import InstructionRejected, ObservationBuffer, ObservationNotReady
from vla_policy.runtime.safety_filter import SafetyFilter
from vla_policy.strict_config import replace

from vla_policy_node import conversions as conv
from vla_policy_node.parameters import (
    NodeSettings,
    ParameterError,
    build_settings,
    declare_parameters,
    make_set_callback,
    read_parameters,
)

NODE_NAME = "vla_policy_node"
UNCONFIGURED = PolicyStatus.UNCONFIGURED
READY = PolicyStatus.READY
RUNNING = PolicyStatus.RUNNING
HOLDING = PolicyStatus.HOLDING
FAULT = PolicyStatus.FAULT
STATE_NAMES = {
    UNCONFIGURED: "UNCONFIGURED",
    READY: "READY",
    RUNNING: "RUNNING",
    HOLDING: "HOLDING",
    FAULT: "FAULT",
}


def resolve_checkpoint(path: str) -> Path:
    """The checkpoint directory as a resolved absolute path, checked before anything is read from it:
    it must exist, be a directory and hold ``config.json`` (``ValueError`` with the reason)."""
    if not path or "\x00" in path:
        raise ValueError("checkpoint path is empty or invalid")
    resolved = Path(path).expanduser().resolve()
    if not resolved.exists():
        raise ValueError(f"{resolved}: checkpoint directory not found")
    if not resolved.is_dir():
        raise ValueError(f"{resolved}: a checkpoint must be a directory (with config.json and safetensors)")
    if not (resolved / "config.json").is_file():
        raise ValueError(f"{resolved}: not a checkpoint directory (no config.json)")
    return resolved


def load_policy(settings: NodeSettings) -> Any:
    """The policy, with the first prefix backend of ``settings.backend_order`` that loads."""
    import torch
    from vla_policy.model.policy import VLAPolicy

    checkpoint = resolve_checkpoint(settings.checkpoint)
    if settings.torch_threads > 0:
        torch.set_num_threads(settings.torch_threads)
    policy = VLAPolicy.from_checkpoint(checkpoint, device=settings.device)
    policy.use_prefix_backend(settings.backend_order, settings.onnx_dir or None, settings.engine_dir or None)
    return policy


class VLAPolicyNode(LifecycleNode):
    def __init__(self, node_name: str = NODE_NAME, **kwargs: Any) -> None:
        super().__init__(node_name, **kwargs)
        declare_parameters(self)
        self.add_on_set_parameters_callback(make_set_callback(self))
        self._lock = threading.RLock()
        self._state = UNCONFIGURED
        self._reason = "not configured"
        self._settings: NodeSettings | None = None
        self._policy: Any = None
        self._buffer: ObservationBuffer | None = None
        self._scheduler: ChunkScheduler | None = None
        self._safety: SafetyFilter | None = None
        self._active = False
        self._period = 0.0
        self._subs: list[Any] = []
        self._pubs: dict[str, Any] = {}
        self._control_timer: Any = None
        self._control_thread: threading.Thread | None = None
        self._control_run = threading.Event()
        self._worker: threading.Thread | None = None
        self._stop = threading.Event()
        self._infer_event = threading.Event()
        self._chunk_id = 0
        self._latencies: deque[float] = deque(maxlen=200)
        self._intervals: deque[float] = deque(maxlen=2000)
        self._last_tick_wall: float | None = None
        self._deadline_misses = 0
        self._ticks = 0
        self._inference_errors = 0
        self._fault_until: float | None = None
        self._backoff = 0.0
        self._warmup_time = float("nan")
        self._msg_counts: dict[str, int] = {}
        self._msg_errors: dict[str, int] = {}
        self._last_diag: tuple[float, dict[str, int]] | None = None
        self._held_published = False
        self._commands_published = 0  # read by ~/tick; exact in lockstep, where one thread publishes
        self._resets = 0  # a chunk inferred before a reset is never executed

        self._sensor_group = MutuallyExclusiveCallbackGroup()
        self._control_group = MutuallyExclusiveCallbackGroup()
        self._report_group = MutuallyExclusiveCallbackGroup()
        self._status_pub = self.create_publisher(PolicyStatus, "~/status", 10)
        self._diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        status_rate = float(self.get_parameter("status_rate_hz").value)
        diag_rate = float(self.get_parameter("diagnostics_rate_hz").value)
        group = self._report_group
        self.create_timer(1.0 / max(status_rate, 0.1), self._publish_status, callback_group=group)
        self.create_timer(1.0 / max(diag_rate, 0.1), self._publish_diagnostics, callback_group=group)
        self.create_service(Reset, "~/reset", self._on_reset, callback_group=group)

    # --- helpers ---------------------------------------------------------------------------------
    def _now(self) -> float:
        return self.get_clock().now().nanoseconds * 1e-9

    def _set_state(self, state: int, reason: str) -> None:
        if state != self._state or reason != self._reason:
            if state in (HOLDING, FAULT) and (state != self._state or reason != self._reason):
                self.get_logger().warning(f"{STATE_NAMES[state]}: {reason[:500]}", throttle_duration_sec=1.0)
            elif state != self._state:
                self.get_logger().info(f"{STATE_NAMES[state]}: {reason[:500]}")
        self._state = state
        self._reason = reason

    @property
    def policy_state(self) -> int:
        return self._state

    # --- lifecycle -------------------------------------------------------------------------------
    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        try:
            settings = build_settings(read_parameters(self))
        except ParameterError as exc:
            return self._configure_failed(f"invalid parameters: {exc}")
        try:
            policy = load_policy(settings)
        except Exception as exc:
            return self._configure_failed(f"cannot load checkpoint '{settings.checkpoint}': {exc}")
        model_cams = tuple(policy.config.backbone.cameras)
        node_cams = tuple(c.name for c in settings.cameras)
        if set(model_cams) != set(node_cams):
            return self._configure_failed(
                f"cameras.names {list(node_cams)} do not match the checkpoint's cameras {list(model_cams)}"
            )
        max_state = policy.config.action_head.max_state_dim
        if settings.joints.state_dim > max_state:
            return self._configure_failed(f"{settings.joints.state_dim} joints > max_state_dim {max_state}")
        dt = float(policy.config.dt)
        rate = settings.control_rate_hz if settings.control_rate_hz > 0 else 1.0 / dt
        self._period = 1.0 / rate
        sched_cfg = replace(settings.scheduler, control_period=self._period, action_dt=dt)
        try:
            warmup = self._warm_up(policy, settings, sched_cfg)
        except Exception as exc:
            self.get_logger().error(traceback.format_exc())
            return self._configure_failed(f"warm-up inference failed: {exc}")
        with self._lock:
            self._settings = settings
            self._policy = policy
            history = policy.config.backbone.history_frames
            self._buffer = ObservationBuffer(replace(settings.buffer, history_frames=history))
            self._scheduler = ChunkScheduler(sched_cfg)
            self._safety = SafetyFilter(settings.safety, settings.joints.state_dim)
            self._warmup_time = warmup
            if settings.default_instruction:
                try:
                    self._buffer.set_instruction(settings.default_instruction)
                except InstructionRejected as exc:
                    self.get_logger().warning(f"default_instruction rejected: {exc.reason}")
        self._create_io(settings)
        self._stop.clear()
        self._worker = threading.Thread(target=self._worker_loop, name="vla_inference", daemon=True)
        self._worker.start()
        self.get_logger().info(
            f"configured {policy.name}: {len(settings.cameras)} cameras, {settings.joints.state_dim} joints, "
            f"control {rate:.1f} Hz, dt {dt:.3f} s, horizon {policy.config.action_horizon}, "
            f"blending {sched_cfg.blending}, output {settings.output_mode}; warm-up {warmup:.3f} s; "
            f"prefix backend {policy.prefix_backend.name}"
            + (
                f" (skipped {'; '.join(policy.prefix_backend.skipped)})"
                if policy.prefix_backend.skipped
                else ""
            )
        )
        self._set_state(READY, f"configured ({policy.name}); warm-up inference {warmup:.3f} s")
        return TransitionCallbackReturn.SUCCESS

    def _configure_failed(self, reason: str) -> TransitionCallbackReturn:
        self.get_logger().error(f"configure failed: {reason}")
        self._set_state(UNCONFIGURED, f"configure failed: {reason}")
        return TransitionCallbackReturn.FAILURE

    def _warm_up(self, policy: Any, settings: NodeSettings, sched_cfg: Any) -> float:
        """Run the warm-up inferences (and one RTC-guided one when blending is rtc); total seconds."""
        from vla_policy.observation import synthetic_observation

        size = policy.config.backbone.vision.image_size
        bb = policy.config.backbone
        obs = synthetic_observation(tuple(bb.cameras), size, settings.joints.state_dim, bb.history_frames)
        t0 = time.perf_counter()
        result = None
        for _ in range(max(1, settings.warmup_runs)):
            result = policy.predict_chunk(obs, seed=0)
        if sched_cfg.blending == "rtc" and result is not None:
            warm = ChunkScheduler(sched_cfg)
            warm.accept(result.actions, 0.0, 0.0, 0.0, dt=result.dt)
            guidance = warm.rtc_guidance(0.0, 0.0, policy.config.action_horizon, result.dt)
            policy.predict_chunk(obs, seed=0, rtc=guidance)
        return time.perf_counter() - t0

    def _create_io(self, s: NodeSettings) -> None:
        for cam in s.cameras:
            msg_type = CompressedImage if cam.type == "CompressedImage" else Image
            self._subs.append(
                self.create_subscription(
                    msg_type,
                    cam.topic,
                    lambda msg, name=cam.name: self._on_image(name, msg),
                    qos_profile_sensor_data,
                    callback_group=self._sensor_group,
                )
            )
        self._subs.append(
            self.create_subscription(
                JointState,
                s.joint_states_topic,
                self._on_joint_state,
                qos_profile_sensor_data,
                callback_group=self._sensor_group,
            )
        )
        latched = QoSProfile(
            depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL
        )
        self._subs.append(
            self.create_subscription(
                String, s.instruction_topic, self._on_instruction, latched, callback_group=self._sensor_group
            )
        )
        self._pubs["chunk"] = self.create_publisher(ActionChunk, "~/action_chunk", 10)
        if s.lockstep:
            self._pubs["tick"] = self.create_publisher(ControlTick, "~/tick", 10)
        for group in s.joints.active_groups:
            ctrl = s.controllers[group]
            if s.output_mode == "trajectory":
                self._pubs[group] = self.create_publisher(JointTrajectory, f"{ctrl}/joint_trajectory", 10)
            else:
                self._pubs[group] = self.create_publisher(Float64MultiArray, f"{ctrl}/commands", 10)

    def _destroy_io(self) -> None:
        for sub in self._subs:
            self.destroy_subscription(sub)
        for pub in self._pubs.values():
            self.destroy_publisher(pub)
        self._subs.clear()
        self._pubs.clear()

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        with self._lock:
            assert self._scheduler is not None and self._safety is not None
            self._scheduler.reset()
            self._safety.reset()  # the first command ramps from the measured position
            self._fault_until = None
            self._backoff = 0.0
            self._held_published = False
            self._last_tick_wall = None
            self._active = True
            self._set_state(RUNNING, "active")
        assert self._settings is not None
        if self._settings.control_loop == "timer":
            self._control_timer = self.create_timer(
                self._period, self._control_tick, callback_group=self._control_group
            )
        else:
            self._control_run.set()
            self._control_thread = threading.Thread(
                target=self._control_loop, name="vla_control", daemon=True
            )
            self._control_thread.start()
        return super().on_activate(state)

    def _control_loop(self) -> None:
        """Control ticks at absolute deadlines on the node clock (sim time included); a tick later than a
        whole period skips ahead instead of bursting."""
        from rclpy.duration import Duration

        clock = self.get_clock()
        period = Duration(nanoseconds=round(self._period * 1e9))
        deadline = clock.now()
        while self._control_run.is_set() and self.context.ok():
            deadline = deadline + period
            try:
                if not clock.sleep_until(deadline, self.context):
                    deadline = clock.now()
                    continue
            except Exception:  # context shut down, clock reset
                break
            if not self._control_run.is_set():
                break
            self._control_tick()
            now = clock.now()
            if (now - deadline).nanoseconds > period.nanoseconds:
                deadline = now

    def _stop_control(self) -> None:
        if self._control_timer is not None:
            self.destroy_timer(self._control_timer)
            self._control_timer = None
        self._control_run.clear()
        if self._control_thread is not None and self._control_thread is not threading.current_thread():
            self._control_thread.join(timeout=max(1.0, 5 * self._period))
            self._control_thread = None

    def shutdown_hold(self) -> None:
        """On SIGINT/SIGTERM while active: stop control and command a hold (trajectory mode: the measured
        position; forward mode: repeat the last safe command), so the controllers are not left executing
        a chunk after the node exits."""
        if not self._active:
            return
        self._stop_control()
        with self._lock:
            self._active = False
            self._held_published = False
            try:
                self._hold(self._measured(self._now()), publish_once=True)
            except Exception as exc:  # the context may already be gone
                self.get_logger().warning(f"could not publish the final hold: {exc}")
            self._set_state(READY, "shutting down (holding)")

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._stop_control()
        with self._lock:
            self._active = False
            self._hold(self._measured(self._now()), publish_once=True)
            if self._scheduler is not None:
                self._scheduler.reset()
            self._set_state(READY, "inactive (holding)")
        return super().on_deactivate(state)

    def _free(self) -> None:
        self._stop.set()
        self._infer_event.set()
        if self._worker is not None:
            self._worker.join(timeout=30.0)
            self._worker = None
        self._stop_control()
        self._destroy_io()
        with self._lock:
            self._active = False
            self._policy = None
            self._buffer = None
            self._scheduler = None
            self._safety = None
            self._settings = None
        gc.collect()

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._free()
        self._set_state(UNCONFIGURED, "cleaned up")
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._free()
        self._set_state(UNCONFIGURED, "shut down")
        return TransitionCallbackReturn.SUCCESS

    def on_error(self, state: LifecycleState) -> TransitionCallbackReturn:
        self.get_logger().error(f"lifecycle error in state {state.label}; freeing the model")
        self._free()
        self._set_state(UNCONFIGURED, f"lifecycle error in {state.label}")
        return TransitionCallbackReturn.SUCCESS

    # --- inputs ----------------------------------------------------------------------------------
    def _count(self, source: str, error: str | None = None) -> None:
        self._msg_counts[source] = self._msg_counts.get(source, 0) + 1
        if error is not None:
            self._msg_errors[source] = self._msg_errors.get(source, 0) + 1
            self.get_logger().warning(f"dropped {source} message: {error[:300]}", throttle_duration_sec=2.0)

    def _on_image(self, camera: str, msg: Image | CompressedImage) -> None:
        buf, s = self._buffer, self._settings
        if buf is None or s is None:
            return
        try:
            rgb = conv.image_to_rgb(msg, s.image_size)
            buf.update_image(camera, rgb, conv.message_stamp(msg.header, self._now()))
            self._count(camera)
        except (ImageDecodeError, ValueError, KeyError) as exc:
            buf.report_error(camera, str(exc))
            self._count(camera, str(exc))
        except Exception as exc:  # never let a message kill the node
            buf.report_error(camera, f"unexpected: {exc}")
            self._count(camera, f"unexpected: {exc}")

    def _on_joint_state(self, msg: JointState) -> None:
        buf, s = self._buffer, self._settings
        if buf is None or s is None:
            return
        try:
            state = conv.joint_state_to_state(msg, s.joints)
            buf.update_state(state, conv.message_stamp(msg.header, self._now()))
            self._count("joint_states")
        except (JointMappingError, ValueError) as exc:
            buf.report_error("joint_states", str(exc))
            self._count("joint_states", str(exc))
        except Exception as exc:
            buf.report_error("joint_states", f"unexpected: {exc}")
            self._count("joint_states", f"unexpected: {exc}")

    def _on_instruction(self, msg: String) -> None:
        buf = self._buffer
        if buf is None:
            return
        try:
            text = buf.set_instruction(msg.data)
            self._count("instruction")
            self.get_logger().info(f"instruction: {text[:200]!r}")
        except InstructionRejected as exc:
            self._count("instruction", f"instruction rejected: {exc.reason}")
        except Exception as exc:
            self._count("instruction", f"unexpected: {exc}")

    def _measured(self, now: float) -> np.ndarray | None:
        buf, s = self._buffer, self._settings
        if buf is None or s is None:
            return None
        latest = buf.latest_state()
        if latest is None or now - latest[1] > s.buffer.max_state_age:
            return None
        return latest[0]

    # --- control ---------------------------------------------------------------------------------
    def _control_tick(self) -> None:
        t_wall = time.perf_counter()
        if self._last_tick_wall is not None:
            interval = t_wall - self._last_tick_wall
            self._intervals.append(interval)
            s = self._settings
            if s is not None and interval > self._period * s.deadline_factor:
                self._deadline_misses += 1
        self._last_tick_wall = t_wall
        self._ticks += 1
        now = self._now()
        s = self._settings
        lockstep = s is not None and s.lockstep
        try:
            if lockstep:
                self._await_inputs(now)
            self._control_step(now)
        except Exception as exc:  # keep the loop alive; hold
            self.get_logger().error(f"control tick failed: {exc}\n{traceback.format_exc()}")
            with self._lock:
                self._set_state(FAULT, f"control tick failed: {exc}")
                self._hold(None, publish_once=True)
        if lockstep:
            self._publish_tick(now)

    def _await_inputs(self, now: float) -> None:
        """Lockstep: wait (wall clock, bounded) until every input has a message stamped at ``now``."""
        buf, s = self._buffer, self._settings
        if buf is None or s is None:
            return
        deadline = time.perf_counter() + s.lockstep_timeout
        while True:
            ages = buf.ages(now).values()
            if all(a is not None and a <= 1e-6 for a in ages):
                return
            if time.perf_counter() > deadline or not self._active:
                self.get_logger().warning(
                    f"lockstep: no inputs for t={now:.3f} after {s.lockstep_timeout} s; using the newest",
                    throttle_duration_sec=2.0,
                )
                return
            time.sleep(0.0005)

    def _publish_tick(self, now: float) -> None:
        pub = self._pubs.get("tick")
        if pub is None:
            return
        try:
            pub.publish(
                ControlTick(
                    stamp=conv.sec_to_stamp(now),
                    commands_published=self._commands_published,
                    state=self._state,
                )
            )
        except Exception as exc:  # the context may be shutting down
            self.get_logger().warning(f"could not publish ~/tick: {exc}", throttle_duration_sec=2.0)

    def _control_step(self, now: float) -> None:
        with self._lock:
            buf, sched, safety, s = self._buffer, self._scheduler, self._safety, self._settings
            if not self._active or buf is None or sched is None or safety is None or s is None:
                return
            measured = self._measured(now)
            not_ready = buf.check(now)
            if not_ready is not None:
                if self._state != HOLDING:
                    sched.reset()
                self._set_state(HOLDING, not_ready)
                self._hold(measured, publish_once=True)
                return
            if self._fault_until is not None and now < self._fault_until:
                self._hold(measured, publish_once=True)
                return
            if self._state == HOLDING:
                self._set_state(RUNNING, "inputs recovered")
                self._held_published = False
            if sched.needs_inference(now):
                sched.begin_inference(now)
                if s.lockstep:
                    self._run_inference()  # inline: sim time waits for it (RLock: re-entered here)
                else:
                    self._infer_event.set()
            action = sched.next_action(now)
            if action is None:
                if sched.current is not None and self._state == RUNNING:
                    self._reason = (
                        f"waiting for a chunk: inference slower than the chunk ({sched.overruns} overruns)"
                    )
                self._hold(None, publish_once=False)
                return
            result = safety.filter(s.joints.select_actions(action), measured)
            if result.command is None:
                return
            self._held_published = False
            if s.output_mode == "forward":
                self._publish_forward(result.command)

    def _hold(self, measured: np.ndarray | None, publish_once: bool) -> None:
        """Hold: trajectory mode commands the measured position once; forward mode repeats the last safe
        command every tick (or publishes nothing with forward_hold=stop)."""
        s, safety = self._settings, self._safety
        if s is None or safety is None or not self._pubs:
            return
        if s.output_mode == "trajectory":
            if publish_once and not self._held_published:
                cmd = safety.hold_command(measured)
                if cmd is not None:
                    self._publish_trajectory(cmd[None, :], np.array([self._period]), self._now())
                    self._held_published = True
        elif s.forward_hold == "repeat":
            cmd = safety.last_command
            if cmd is None and measured is not None:
                cmd = safety.hold_command(measured)
            if cmd is not None:
                self._publish_forward(cmd)

    def _publish_forward(self, command: np.ndarray) -> None:
        s = self._settings
        assert s is not None
        parts = s.joints.split_actions(s.joints.expand_to_actions(command))
        for group, values in parts.items():
            pub = self._pubs.get(group)
            if pub is not None:
                pub.publish(conv.float_array(values))
                self._commands_published += 1

    def _publish_trajectory(self, joint_positions: np.ndarray, times: np.ndarray, now: float) -> None:
        s = self._settings
        assert s is not None
        parts = s.joints.split_actions(s.joints.expand_to_actions(joint_positions))
        stamp = conv.sec_to_stamp(now)
        for group, values in parts.items():
            pub = self._pubs.get(group)
            if pub is not None:
                pub.publish(conv.trajectory(s.joints.group(group), values, times.tolist(), stamp))
                self._commands_published += 1

    # --- inference -------------------------------------------------------------------------------
    def _worker_loop(self) -> None:
        while not self._stop.is_set():
            if not self._infer_event.wait(0.2):
                continue
            self._infer_event.clear()
            if self._stop.is_set():
                break
            try:
                self._run_inference()
            except Exception as exc:  # last resort: the worker never dies
                if self._stop.is_set() or not self.context.ok():
                    break  # shutting down: publishers may already be gone
                self.get_logger().error(f"inference worker error: {exc}\n{traceback.format_exc()}")
                with self._lock:
                    if self._scheduler is not None:
                        self._scheduler.cancel_inference()

    def _run_inference(self) -> None:
        now = self._now()
        with self._lock:
            buf, sched, policy, s = self._buffer, self._scheduler, self._policy, self._settings
            if buf is None or sched is None or policy is None or s is None or not self._active:
                if sched is not None:
                    sched.cancel_inference()
                return
            try:
                obs = buf.snapshot(now)
            except ObservationNotReady:
                sched.cancel_inference()
                return
            horizon = int(policy.config.action_horizon)
            rtc = sched.rtc_guidance(obs.stamp, now, horizon, float(policy.config.dt))
            resets = self._resets
        t0 = time.perf_counter()
        try:
            result = policy.predict_chunk(obs, seed=s.seed, rtc=rtc)
            if not np.all(np.isfinite(result.actions)):
                raise ValueError("the model returned non-finite actions")
        except Exception as exc:
            self._inference_failed(exc)
            return
        wall_latency = time.perf_counter() - t0
        done = self._now()
        with self._lock:
            if not self._active or self._scheduler is not sched or self._resets != resets:
                sched.cancel_inference()
                return
            self._latencies.append(wall_latency)
            if self._state == HOLDING:  # the inputs went bad during inference: never execute this chunk
                sched.cancel_inference()
                return
            switch = sched.accept(result.actions, obs.stamp, latency=done - now, now=done, dt=result.dt)
            if not switch.accepted:
                self.get_logger().warning(f"chunk dropped: {switch.reason}", throttle_duration_sec=2.0)
                return
            self._chunk_id = switch.chunk_id
            self._backoff = 0.0
            self._fault_until = None
            if self._state == FAULT:
                self._set_state(RUNNING, "inference recovered")
            traj = None
            if s.output_mode == "trajectory":
                traj = self._safe_trajectory(done)
        self._pubs["chunk"].publish(
            conv.action_chunk_msg(
                chunk_id=switch.chunk_id,
                policy=policy.name,
                obs_stamp=obs.stamp,
                dt=result.dt,
                latency=wall_latency,
                groups=s.joints,
                actions=result.actions,
            )
        )
        if traj is not None:
            self._publish_trajectory(traj[0], traj[1], done)

    def _safe_trajectory(self, now: float) -> tuple[np.ndarray, np.ndarray] | None:
        """The remaining chunk through the safety filter, from the current safe command."""
        sched, safety, s = self._scheduler, self._safety, self._settings
        assert sched is not None and safety is not None and s is not None
        actions, times = sched.remaining(now)
        if actions.shape[0] == 0:
            return None
        if not safety.active:
            measured = self._measured(now)
            if measured is None:
                return None
            safety.activate(measured)
        cur = sched.current
        dt = cur.dt if cur is not None else self._period
        joint = s.joints.select_actions(actions)
        # Ramp from where the robot is (the controller has been executing the previous trajectory), not
        # from the activation/hold point; the last safe command when no fresh measurement exists.
        measured = self._measured(now)
        safe = safety.filter_sequence(joint, start=measured, steps_per_point=dt / self._period)
        if safe is None:
            return None
        self._held_published = False
        return safe, times

    def _inference_failed(self, exc: Exception) -> None:
        s = self._settings
        self._inference_errors += 1
        with self._lock:
            initial = s.retry_backoff_initial if s is not None else 0.5
            maximum = s.retry_backoff_max if s is not None else 10.0
            self._backoff = min(maximum, initial if self._backoff <= 0 else self._backoff * 2.0)
            self._fault_until = self._now() + self._backoff
            if self._scheduler is not None:
                self._scheduler.cancel_inference()
                self._scheduler.reset()
            self._set_state(FAULT, f"inference failed: {exc}; retrying in {self._backoff:.2f} s")
        detail = traceback.format_exc() if self._inference_errors <= 3 else ""
        self.get_logger().error(
            f"inference failed ({self._inference_errors}): {exc}; retrying in {self._backoff:.2f} s\n{detail}"
        )

    def _on_reset(self, request: Any, response: Any) -> Any:
        """``~/reset``: a new episode; the next chunk comes from observations received after the reset."""
        with self._lock:
            if self._scheduler is None or self._buffer is None or self._safety is None:
                response.success = False
                response.message = "not configured"
                return response
            self._resets += 1
            self._scheduler.reset()
            self._buffer.clear()
            self._safety.reset()
            self._held_published = False
        self.get_logger().info("reset: chunk and observation history dropped")
        response.success = True
        response.message = "chunk and observation history dropped"
        return response

    # --- reporting -------------------------------------------------------------------------------
    def _observation_age(self, now: float) -> float:
        buf = self._buffer
        if buf is None:
            return -1.0
        ages = [a for a in buf.ages(now).values() if a is not None]
        return max(ages) if ages else -1.0

    def _publish_status(self) -> None:
        now = self._now()
        with self._lock:
            buf, sched = self._buffer, self._scheduler
            msg = conv.status_msg(
                stamp=now,
                state=self._state,
                instruction=(buf.instruction or "") if buf is not None else "",
                last_chunk_id=self._chunk_id,
                observation_age=self._observation_age(now),
                latencies=list(self._latencies),
                deadline_misses=self._deadline_misses,
                inference_overruns=sched.overruns if sched is not None else 0,
                reason=self._reason,
            )
        self._status_pub.publish(msg)

    def _publish_diagnostics(self) -> None:
        now = self._now()
        wall = time.monotonic()
        counts = dict(self._msg_counts)
        rates: dict[str, float] = {}
        if self._last_diag is not None:
            t_prev, prev = self._last_diag
            span = max(wall - t_prev, 1e-6)
            rates = {k: (v - prev.get(k, 0)) / span for k, v in counts.items()}
        self._last_diag = (wall, counts)
        with self._lock:
            buf, sched = self._buffer, self._scheduler
            intervals = np.asarray(self._intervals, dtype=np.float64)
            control: dict[str, Any] = {
                "state": STATE_NAMES[self._state],
                "reason": self._reason,
                "control_period_s": self._period,
                "ticks": self._ticks,
                "deadline_misses": self._deadline_misses,
            }
            if intervals.size:
                jitter = summarize(np.abs(intervals - self._period))
                control.update(
                    rate_hz=1.0 / max(float(intervals.mean()), 1e-9),
                    jitter_p50_ms=jitter.median * 1e3,
                    jitter_p99_ms=jitter.p99 * 1e3,
                    jitter_max_ms=jitter.max * 1e3,
                )
            inference: dict[str, Any] = {
                "warmup_s": self._warmup_time,
                "errors": self._inference_errors,
                "last_chunk_id": self._chunk_id,
            }
            if self._latencies:
                lat = summarize(list(self._latencies))
                inference.update(
                    latency_mean_s=lat.mean,
                    latency_p50_s=lat.median,
                    latency_p99_s=lat.p99,
                    latency_max_s=lat.max,
                )
            if sched is not None:
                inference.update(sched.stats())
            inputs: dict[str, Any] = {}
            if buf is not None:
                for src, age in buf.ages(now).items():
                    inputs[f"{src}.age_s"] = -1.0 if age is None else age
                for src, err in buf.errors.items():
                    inputs[f"{src}.last_error"] = err[:200]
                inputs["instruction"] = (buf.instruction or "")[:200]
            for src, rate in rates.items():
                inputs[f"{src}.rate_hz"] = rate
            for src, n in self._msg_errors.items():
                inputs[f"{src}.dropped"] = n
            state = self._state
        name = self.get_fully_qualified_name()
        ctrl_level = 0 if state in (RUNNING, READY) else (1 if state == HOLDING else 2)
        if state == UNCONFIGURED:
            ctrl_level = 1
        statuses = [
            conv.diagnostic_status(f"{name}: control", ctrl_level, self._reason[:200], control),
            conv.diagnostic_status(f"{name}: inference", 2 if state == FAULT else 0, "inference", inference),
            conv.diagnostic_status(
                f"{name}: inputs", 1 if self._msg_errors or state == HOLDING else 0, "inputs", inputs
            ),
        ]
        self._diag_pub.publish(conv.diagnostic_array(now, statuses))


def main(args: list[str] | None = None) -> None:
    # Shorter GIL hand-over: the control thread waits at most ~1 ms behind the inference thread.
    sys.setswitchinterval(0.001)
    # Our own SIGINT/SIGTERM handling: rclpy's would shut the context down before the final hold is sent.
    rclpy.init(args=args, signal_handler_options=SignalHandlerOptions.NO)
    stop = threading.Event()

    def _on_signal(signum: int, frame: Any) -> None:
        stop.set()

    signal.signal(signal.SIGINT, _on_signal)
    signal.signal(signal.SIGTERM, _on_signal)
    node = VLAPolicyNode()
    executor = MultiThreadedExecutor(num_threads=4)
    executor.add_node(node)
    spinner = threading.Thread(target=_spin, args=(executor, stop), name="vla_executor", daemon=True)
    try:
        if bool(node.get_parameter("autostart").value):
            node.trigger_configure()
            if node.policy_state == READY and not stop.is_set():
                node.trigger_activate()
        spinner.start()
        while not stop.wait(0.5) and spinner.is_alive():
            pass
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        node.shutdown_hold()
        executor.shutdown()
        if spinner.is_alive():
            spinner.join(timeout=10.0)
        node._free()
        node.destroy_node()
        if rclpy.ok():
            rclpy.try_shutdown()


def _spin(executor: MultiThreadedExecutor, stop: threading.Event) -> None:
    try:
        while not stop.is_set():
            try:
                executor.spin_once(timeout_sec=0.2)
            except _rclpy.InvalidHandle:
                # cleanup destroyed an entity while the executor was waiting on it; the next wait set
                # no longer holds it, so spinning goes on (letting it end the thread froze the node)
                continue
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        stop.set()


if __name__ == "__main__":
    main()
