"""The VLA policy lifecycle node: ROS messages in, the core's ``PolicyRuntime``, ROS messages out.

The control logic (buffer, scheduler, safety filter, RUNNING / HOLDING / FAULT, worker supervision) is the
runtime's; this node only converts messages, keeps the clock and the threads, and publishes.
- configure: parameters (one schema), the inference worker (a process of its own by default) loads and
  warms up the model, then the runtime and the I/O are created;
- activate: the control thread ticks the runtime at the control rate on the node clock (sim time too; a
  backward jump of the clock wakes it and the runtime holds); deactivate and shutdown send a final hold;
- ``lockstep`` (simulation evaluation): each tick waits for the inputs stamped at the tick, runs a due
  inference to completion and then publishes ``~/tick``; the simulator steps only after it;
- ``~/reset`` (vla_msgs/Reset): drop the chunk and the observation history, keep the configuration.
"""

from __future__ import annotations

import gc
import threading
import time
from typing import Any

from diagnostic_msgs.msg import DiagnosticArray
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.clock import JumpThreshold
from rclpy.duration import Duration
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from sensor_msgs.msg import CompressedImage, Image, JointState
from std_msgs.msg import Float64MultiArray, String
from trajectory_msgs.msg import JointTrajectory
from vla_msgs.msg import ActionChunk, ControlTick, PolicyStatus
from vla_msgs.srv import Reset
from vla_policy.data.image_codec import ImageDecodeError
from vla_policy.runtime.inference import WorkerFailure
from vla_policy.runtime.joint_groups import JointMappingError
from vla_policy.runtime.policy_runtime import PolicyRuntime, RuntimeConfig, RuntimeState, TickOutput
from vla_policy.runtime.settings import ParameterError, PolicySettings, build_settings
from vla_policy.runtime.workers import make_worker, policy_spec, resolve_checkpoint
from vla_policy.strict_config import ConfigError

from vla_policy_node import conversions as conv
from vla_policy_node.parameters import declare_parameters, dynamic_changes, make_validator, read_parameters
from vla_policy_node.realtime import raise_priority

NODE_NAME = "vla_policy_node"


class VLAPolicyNode(LifecycleNode):
    def __init__(self, node_name: str = NODE_NAME, **kwargs: Any) -> None:
        super().__init__(node_name, **kwargs)
        for warning in declare_parameters(self):
            self.get_logger().warning(warning)
        self.add_on_set_parameters_callback(make_validator(self))
        self._runtime: PolicyRuntime | None = None
        self._settings: PolicySettings | None = None
        self._reason = "not configured"
        self._subs: list[Any] = []
        self._pubs: dict[str, Any] = {}
        self._post_set: Any = None
        self._control: threading.Thread | None = None
        self._running = threading.Event()
        self._wake = threading.Event()  # a /clock update or a stop
        self._inputs = threading.Event()  # a new input (lock-step waits on it)
        self._commands_published = 0
        self._told: RuntimeState | None = None  # the state of the last tick, said on ~/status
        self._last_counts: tuple[float, dict[str, int]] | None = None
        group = MutuallyExclusiveCallbackGroup()
        self._sensor_group = MutuallyExclusiveCallbackGroup()
        self._status_pub = self.create_publisher(PolicyStatus, "~/status", 10)
        self._diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        for rate, publish in (
            ("status_rate_hz", self._publish_status),
            ("diagnostics_rate_hz", self._publish_diagnostics),
        ):
            self.create_timer(1.0 / float(self.get_parameter(rate).value), publish, callback_group=group)
        self.create_service(Reset, "~/reset", self._on_reset, callback_group=group)
        threshold = JumpThreshold(
            min_forward=Duration(nanoseconds=1), min_backward=Duration(nanoseconds=-1), on_clock_change=True
        )
        self._jump_handle = self.get_clock().create_jump_callback(threshold, post_callback=self._on_clock)

    def _now(self) -> float:
        return self.get_clock().now().nanoseconds * 1e-9

    def _on_clock(self, jump: Any) -> None:
        self._wake.set()

    # --- lifecycle -------------------------------------------------------------------------------
    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        try:
            settings = build_settings(read_parameters(self))
            checkpoint = resolve_checkpoint(settings.checkpoint)
        except (ParameterError, ValueError) as exc:
            return self._configure_failed(str(exc))
        worker = make_worker(settings.inference_worker, policy_spec(settings, checkpoint))
        try:
            info = worker.start(settings.worker_start_timeout)
            runtime = PolicyRuntime(
                RuntimeConfig.from_settings(settings, info), settings.joints, worker, info
            )
        except (WorkerFailure, ConfigError) as exc:
            worker.close()
            return self._configure_failed(str(exc))
        if settings.default_instruction and (
            err := runtime.observe_instruction(settings.default_instruction)
        ):
            self.get_logger().warning(f"default_instruction: {err}")
        self._settings, self._runtime = settings, runtime
        self._create_io(settings)
        self._post_set = self.add_post_set_parameters_callback(self._apply_dynamic)
        # what is loaded now lives as long as the configuration: out of the collector's scans, a full
        # collection no longer walks ~390k library objects (0.3 s holding the GIL, measured) in the
        # control loop, and exit no longer takes seconds; cleanup unfreezes
        gc.freeze()
        skipped = f" (skipped {'; '.join(info.backend_skipped)})" if info.backend_skipped else ""
        self.get_logger().info(
            f"configured {info.name}: {len(settings.cameras)} cameras, {settings.joints.state_dim} joints, "
            f"control {1.0 / runtime.period:.1f} Hz, dt {info.dt:.3f} s, horizon {info.horizon}, blending "
            f"{settings.scheduler.blending}, output {settings.output_mode}, {worker.kind} worker, prefix "
            f"backend {info.backend}{skipped}; warm-up {info.warmup_s:.3f} s"
        )
        return TransitionCallbackReturn.SUCCESS

    def _configure_failed(self, reason: str) -> TransitionCallbackReturn:
        self._reason = f"configure failed: {reason}"
        self.get_logger().error(self._reason)
        return TransitionCallbackReturn.FAILURE

    def _create_io(self, s: PolicySettings) -> None:
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
            self.create_subscription(  # raw bytes: the instruction is decoded as strict UTF-8 here
                String,
                s.instruction_topic,
                self._on_instruction,
                latched,
                callback_group=self._sensor_group,
                raw=True,
            )
        )
        self._pubs["chunk"] = self.create_lifecycle_publisher(ActionChunk, "~/action_chunk", 10)
        if s.lockstep:
            self._pubs["tick"] = self.create_lifecycle_publisher(ControlTick, "~/tick", 10)
        assert self._runtime is not None
        for group in self._runtime.joints.active_groups:
            ctrl = s.controllers[group]
            if s.output_mode == "trajectory":
                topic, msg_type = f"{ctrl}/joint_trajectory", JointTrajectory
            else:
                topic, msg_type = f"{ctrl}/commands", Float64MultiArray
            self._pubs[group] = self.create_lifecycle_publisher(msg_type, topic, 10)

    def _apply_dynamic(self, params: list[Any]) -> None:
        """Post-set (registered while configured): the safety limits take effect at once."""
        if self._runtime is not None and dynamic_changes(params):
            self._runtime.set_limits(build_settings(read_parameters(self)).safety)
            self.get_logger().info(f"applied {', '.join(dynamic_changes(params))}")

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        assert self._runtime is not None
        self._runtime.activate(self._now())
        self._publish_status()  # RUNNING is said before the first command goes out
        self._running.set()
        self._control = threading.Thread(target=self._control_loop, name="vla_control", daemon=True)
        self._control.start()
        return super().on_activate(state)

    def _stop_control(self) -> None:
        self._running.clear()
        self._wake.set()
        if self._control is not None and self._control is not threading.current_thread():
            self._control.join(timeout=10.0)
        self._control = None

    def shutdown_hold(self, reason: str = "shutting down (holding)") -> None:
        """Stop the control loop and send the final hold (deactivate, shutdown, SIGINT, SIGTERM)."""
        self._stop_control()
        if self._runtime is not None and self._runtime.active:
            try:
                self._publish(self._runtime.deactivate(self._now(), reason))
                self._publish_status()
            except Exception as exc:  # the context may already be gone
                self.get_logger().warning(f"could not publish the final hold: {exc}")

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self.shutdown_hold("inactive (holding)")
        return super().on_deactivate(state)

    def _free(self, reason: str) -> None:
        self.shutdown_hold()
        if self._post_set is not None:
            self.remove_post_set_parameters_callback(self._post_set)
            self._post_set = None
        runtime, self._runtime = self._runtime, None
        if runtime is not None:
            runtime.close()
        for sub in self._subs:
            self.destroy_subscription(sub)
        for pub in self._pubs.values():
            self.destroy_lifecycle_publisher(pub)
        self._subs.clear()
        self._pubs.clear()
        self._settings = None
        self._reason = reason

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._free("cleaned up")
        gc.unfreeze()  # the freed configuration's cycles become collectable again
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._free("shut down")
        return TransitionCallbackReturn.SUCCESS

    def on_error(self, state: LifecycleState) -> TransitionCallbackReturn:
        self.get_logger().error(f"lifecycle error in state {state.label}; freeing the model")
        self._free(f"lifecycle error in {state.label}")
        return TransitionCallbackReturn.SUCCESS

    # --- inputs ----------------------------------------------------------------------------------
    def _dropped(self, source: str, reason: str | None) -> None:
        self._inputs.set()
        if reason is not None:
            self.get_logger().warning(f"dropped {source} message: {reason[:300]}", throttle_duration_sec=2.0)

    def _on_image(self, camera: str, msg: Image | CompressedImage) -> None:
        runtime, s = self._runtime, self._settings
        if runtime is None or s is None:
            return
        try:
            rgb = conv.image_to_rgb(msg, s.image_size)
        except (ImageDecodeError, ValueError) as exc:
            runtime.reject_input(camera, str(exc))
            return self._dropped(camera, str(exc))
        self._dropped(camera, runtime.observe_image(camera, rgb, conv.message_stamp(msg.header, self._now())))

    def _on_joint_state(self, msg: JointState) -> None:
        runtime = self._runtime
        if runtime is None:
            return
        try:
            state = conv.joint_state_to_state(msg, runtime.joints)
        except (JointMappingError, ValueError) as exc:
            runtime.reject_input("joint_states", str(exc))
            return self._dropped("joint_states", str(exc))
        stamp = conv.message_stamp(msg.header, self._now())
        self._dropped("joint_states", runtime.observe_joints(state, stamp))

    def _on_instruction(self, data: bytes) -> None:
        runtime = self._runtime
        if runtime is None:
            return
        try:
            text = conv.string_from_cdr(data)
        except ValueError as exc:
            return self._dropped("instruction", runtime.reject_instruction(str(exc)))
        error = runtime.observe_instruction(text)
        self._dropped("instruction", error)
        if error is None:
            self.get_logger().info(f"instruction: {text[:200]!r}")

    # --- control ---------------------------------------------------------------------------------
    def _control_loop(self) -> None:
        """Ticks at deadlines on the node clock; a late tick skips ahead instead of bursting, and a
        backward jump of the clock ticks at once (the runtime holds). Under sim time the /clock jump
        handler wakes the loop."""
        runtime, s = self._runtime, self._settings
        assert runtime is not None and s is not None
        if s.control_thread_priority > 0:
            raise_priority(s.control_thread_priority, self.get_logger())
        period = runtime.period
        next_due = last = self._now()
        while self._running.is_set():
            now = self._now()
            if now < last:
                next_due = now
            if now >= next_due:
                self._tick(runtime, now)
                last = now
                next_due = next_due + period if now - next_due < period else now + period
                continue
            self._wake.wait(min(next_due - now, 0.05))
            self._wake.clear()

    def _tick(self, runtime: PolicyRuntime, now: float) -> None:
        s = self._settings
        if s is not None and s.lockstep:
            deadline = time.monotonic() + s.lockstep_timeout
            while not runtime.inputs_current(now) and self._running.is_set():
                if time.monotonic() > deadline:
                    self.get_logger().warning(
                        f"lockstep: no inputs for t={now:.3f} after {s.lockstep_timeout} s; using the newest",
                        throttle_duration_sec=2.0,
                    )
                    break
                self._inputs.wait(0.01)
                self._inputs.clear()
        try:
            out = runtime.tick(now)
            if out.state != self._told:  # a change is said at once, before its commands
                self._told = out.state
                self._publish_status()
            self._publish(out)
        except Exception as exc:  # a tick never kills the loop; the runtime holds at the next one
            self.get_logger().error(f"control tick failed: {exc}", throttle_duration_sec=2.0)
            out = None
        if s is not None and s.lockstep and "tick" in self._pubs:
            state = out.state if out is not None else RuntimeState.FAULT
            self._pubs["tick"].publish(
                ControlTick(
                    stamp=conv.sec_to_stamp(now),
                    commands_published=self._commands_published,
                    state=int(state),
                )
            )

    def _publish(self, out: TickOutput) -> None:
        runtime = self._runtime
        if runtime is None:
            return
        joints = runtime.joints
        if out.chunk is not None:
            c = out.chunk
            self._pubs["chunk"].publish(
                conv.action_chunk_msg(
                    chunk_id=c.chunk_id,
                    policy=runtime.model.name,
                    obs_stamp=c.obs_stamp,
                    dt=c.dt,
                    latency=c.compute_s,
                    groups=joints,
                    actions=c.actions,
                )
            )
        if out.trajectory is not None:
            t = out.trajectory
            stamp = conv.sec_to_stamp(t.stamp)
            for group, values in joints.split_joints(t.positions).items():
                self._pubs[group].publish(
                    conv.trajectory(joints.group(group), values, t.time_from_start, stamp)
                )
                self._commands_published += 1
        if out.command is not None:
            for group, values in joints.split_joints(out.command).items():
                self._pubs[group].publish(conv.float_array(values))
                self._commands_published += 1

    def _on_reset(self, request: Any, response: Any) -> Any:
        """``~/reset``: a new episode; the next chunk comes from observations received after the reset."""
        runtime = self._runtime
        response.success = runtime is not None
        response.message = "chunk and observation history dropped" if runtime else "not configured"
        if runtime is not None:
            runtime.reset()
            self.get_logger().info("reset: chunk and observation history dropped")
        return response

    # --- reporting -------------------------------------------------------------------------------
    def _publish_status(self) -> None:
        now, runtime = self._now(), self._runtime
        if runtime is None:
            msg = conv.status_msg(stamp=now, state=PolicyStatus.UNCONFIGURED, reason=self._reason)
            self._status_pub.publish(msg)
        else:
            self._status_pub.publish(conv.runtime_status_msg(now, runtime.status(now)))

    def _publish_diagnostics(self) -> None:
        now, runtime, name = self._now(), self._runtime, self.get_fully_qualified_name()
        if runtime is None:
            values = {"state": "UNCONFIGURED"}
            status = conv.diagnostic_status(f"{name}: control", 1, self._reason[:200], values)
            self._diag_pub.publish(conv.diagnostic_array(now, [status]))
            return
        st, wall = runtime.status(now), time.monotonic()
        counts, (t0, prev) = dict(st.inputs["messages"]), self._last_counts or (wall, {})
        rates = {k: (v - prev.get(k, 0)) / max(wall - t0, 1e-6) for k, v in counts.items()} if prev else {}
        self._last_counts = (wall, counts)
        diagnostics = conv.runtime_diagnostics(name, st, runtime.period, rates)
        self._diag_pub.publish(conv.diagnostic_array(now, diagnostics))
