"""Test-side ROS plumbing for the node tests: a synthetic robot/camera publisher, a command monitor,
lifecycle and parameter clients. Runs in the test process on its own rclpy context and thread."""

from __future__ import annotations

import json
import math
import random
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from vla_policy.stamps import to_seconds
from vla_policy_node.child_process import ChildProcess

CAMERAS = ("head", "left_wrist", "right_wrist")
CAMERA_TYPES = ("Image", "Image", "CompressedImage")
LEFT = tuple(f"left_joint_{i}" for i in range(6))
RIGHT = tuple(f"right_joint_{i}" for i in range(6))
CLAW = ("left_gripper", "right_gripper")
GROUP_JOINTS = {"left_arm": LEFT, "right_arm": RIGHT, "claw": CLAW}
LOWER, UPPER, MAX_VELOCITY = -1.0, 1.0, 1.0
MAX_STATE_AGE = 0.3  # node_params': the node plans from no older measurement
MEASUREMENT_WINDOW = MAX_STATE_AGE + 0.2  # ... plus its delivery and the trajectory's, on a loaded machine
IMAGE_SIZE = 64
NODE = "vla_policy_node"


def node_params(checkpoint: str | Path, **overrides: Any) -> dict[str, Any]:
    params: dict[str, Any] = {
        "checkpoint": str(checkpoint),
        "autostart": True,
        "torch_threads": 1,
        "output_mode": "forward",
        "cameras.names": list(CAMERAS),
        "cameras.topics": [f"/test_cam/{c}" for c in CAMERAS],
        "cameras.types": list(CAMERA_TYPES),
        "image_height": IMAGE_SIZE,
        "image_width": IMAGE_SIZE,
        "joints.left_arm": list(LEFT),
        "joints.right_arm": list(RIGHT),
        "joints.claw": list(CLAW),
        "limits.position_lower": [LOWER],
        "limits.position_upper": [UPPER],
        "limits.max_velocity": [MAX_VELOCITY],
        "max_image_age": 0.5,
        "max_state_age": MAX_STATE_AGE,
        "max_camera_skew": 0.3,
        "max_instruction_length": 1000,
        "status_rate_hz": 10.0,
        "diagnostics_rate_hz": 2.0,
        "retry_backoff_initial": 0.2,
        "retry_backoff_max": 1.0,
    }
    params.update(overrides)
    return params


def write_params_file(path: Path, params: dict[str, Any]) -> Path:
    """A ROS params file (JSON is YAML) for every node name."""
    path.write_text(json.dumps({"/**": {"ros__parameters": params}}, indent=1))
    return path


@dataclass
class Inputs:
    """What the synthetic publisher sends; tests flip these to inject bad input."""

    # ok | off | bad_encoding | wrong_size | short_data | corrupt (CompressedImage only)
    camera_mode: dict[str, str] = field(default_factory=lambda: dict.fromkeys(CAMERAS, "ok"))
    # ok | nan | inf | huge | missing | unknown | off | duplicate (a name twice) | empty (no positions) |
    # extra (more positions than names)
    joint_mode: str = "ok"
    camera_every: dict[str, int] = field(default_factory=lambda: dict.fromkeys(CAMERAS, 1))  # rate divider
    stamp_mode: str = "ok"  # ok | old (10 s in the past) | out_of_order (every other stamp 0.1 s older)
    positions: dict[str, float] = field(
        default_factory=lambda: {n: 0.0 for g in GROUP_JOINTS.values() for n in g}
    )
    echo_commands: bool = True  # a fake robot: measured = last forward command, or follows trajectories


class Harness:
    """Publishes cameras (15 Hz), joint states (50 Hz) and the instruction (a fake robot: the measured
    position follows the node's commands); records everything the node publishes, and every command is
    checked by an ``InvariantMonitor`` (``self.monitor``)."""

    def __init__(
        self,
        node_name: str = NODE,
        camera_hz: float = 15.0,
        joint_hz: float = 50.0,
        *,
        use_sim_time: bool = False,
        control_period: float = 0.05,
    ) -> None:
        import rclpy
        from diagnostic_msgs.msg import DiagnosticArray
        from invariant_monitor import InvariantMonitor
        from lifecycle_msgs.srv import ChangeState, GetState
        from rcl_interfaces.srv import SetParameters
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.parameter import Parameter
        from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
        from sensor_msgs.msg import CompressedImage, Image, JointState
        from std_msgs.msg import String

        self.context = rclpy.Context()
        rclpy.init(context=self.context)
        overrides = [Parameter("use_sim_time", value=True)] if use_sim_time else []
        self.node = rclpy.create_node("vla_test_harness", context=self.context, parameter_overrides=overrides)
        self.inputs = Inputs()
        self.lock = threading.RLock()
        self.diagnostics: list[Any] = []
        self._rng = np.random.default_rng(0)
        self._joint_seq = 0
        self._camera_ticks = 0
        self._following: dict[str, tuple[float, list[tuple[float, list[float]]]]] = {}
        self._reported: deque[tuple[float, dict[str, float]]] = deque(maxlen=200)  # (monotonic, positions)
        self.monitor = InvariantMonitor(
            self.node,
            GROUP_JOINTS,
            lower=LOWER,
            upper=UPPER,
            max_velocity=MAX_VELOCITY,
            control_period=control_period,
            node_name=node_name,
            measured=self.measured,
            reported=self.reported,
            on_command=self._echo_command,
            on_trajectory=self._follow_trajectory,
            lock=self.lock,
        )
        self.chunks = self.monitor.chunks
        self.statuses = self.monitor.statuses
        self.commands = self.monitor.commands
        self.trajectories = self.monitor.trajectories
        n = self.node
        self.cam_pubs = {}
        for cam, typ in zip(CAMERAS, CAMERA_TYPES, strict=True):
            msg_type = CompressedImage if typ == "CompressedImage" else Image
            self.cam_pubs[cam] = n.create_publisher(msg_type, f"/test_cam/{cam}", qos_profile_sensor_data)
        self.joint_pub = n.create_publisher(JointState, "/joint_states", qos_profile_sensor_data)
        latched = QoSProfile(
            depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL
        )
        self.instruction_pub = n.create_publisher(String, "/instruction", latched)
        self._String = String
        n.create_subscription(DiagnosticArray, "/diagnostics", self._on_diag, 10)
        self.change_state_cli = n.create_client(ChangeState, f"/{node_name}/change_state")
        self.get_state_cli = n.create_client(GetState, f"/{node_name}/get_state")
        self.set_params_cli = n.create_client(SetParameters, f"/{node_name}/set_parameters")
        self._Image, self._CompressedImage, self._JointState = Image, CompressedImage, JointState
        # wall-clock timers: the inputs keep flowing while a test drives /clock (use_sim_time)
        from rclpy.clock import Clock, ClockType

        wall = Clock(clock_type=ClockType.STEADY_TIME)
        n.create_timer(1.0 / camera_hz, self.publish_cameras, clock=wall)
        n.create_timer(1.0 / joint_hz, self.publish_joints, clock=wall)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(n)
        self._thread = threading.Thread(target=self._spin, daemon=True)
        self._thread.start()

    def _spin(self) -> None:
        try:
            while self.context.ok():
                self.executor.spin_once(timeout_sec=0.05)
        except Exception:
            pass

    def close(self) -> None:
        import rclpy

        rclpy.try_shutdown(context=self.context)
        self._thread.join(timeout=5.0)
        self.executor.shutdown()
        self.node.destroy_node()

    # --- inputs ----------------------------------------------------------------------------------
    def publish_instruction(self, text: str) -> None:
        self.instruction_pub.publish(self._String(data=text))

    def publish_instruction_bytes(self, raw: bytes) -> None:
        """A std_msgs/String whose data are these bytes, valid UTF-8 or not (serialized CDR by hand:
        rclpy would encode a str)."""
        data = raw + b"\x00"
        cdr = b"\x00\x01\x00\x00" + len(data).to_bytes(4, "little") + data
        self.instruction_pub.publish(cdr)

    def diagnostic_value(self, key: str) -> str | None:
        """The newest value of ``key`` in any /diagnostics status."""
        with self.lock:
            for arr in reversed(self.diagnostics):
                for st in arr.status:
                    for kv in st.values:
                        if kv.key == key:
                            return str(kv.value)
        return None

    @property
    def violations(self) -> list[str]:
        return self.monitor.violations

    def _stamp(self) -> Any:
        from rclpy.duration import Duration

        now = self.node.get_clock().now()
        mode = self.inputs.stamp_mode
        if mode == "old":
            now = now - Duration(seconds=10.0)
        elif mode == "out_of_order":
            self._joint_seq += 1
            if self._joint_seq % 2 == 0:
                now = now - Duration(seconds=0.1)
        return now.to_msg()

    def publish_cameras(self) -> None:
        from vla_policy.data.image_codec import encode_compressed

        stamp = self._stamp()
        self._camera_ticks += 1
        for cam, typ in zip(CAMERAS, CAMERA_TYPES, strict=True):
            mode = self.inputs.camera_mode[cam]
            if mode == "off" or self._camera_ticks % self.inputs.camera_every[cam]:
                continue
            size = IMAGE_SIZE * 2 if mode == "wrong_size" else IMAGE_SIZE
            rgb = self._rng.integers(0, 256, size=(size, size, 3), dtype=np.uint8)
            if typ == "CompressedImage":
                msg = self._CompressedImage()
                msg.header.stamp = stamp
                msg.format = "jpeg"
                data = encode_compressed(rgb, "jpeg")
                if mode == "corrupt":
                    data = data[:20] + bytes(50)
                msg.data = data
            else:
                msg = self._Image()
                msg.header.stamp = stamp
                msg.height = msg.width = size
                msg.encoding = "32FC1" if mode == "bad_encoding" else "rgb8"
                msg.step = size * 3
                data = rgb.tobytes()
                msg.data = data[: len(data) // 2] if mode == "short_data" else data
            self.cam_pubs[cam].publish(msg)

    def publish_joints(self) -> None:
        mode = self.inputs.joint_mode
        if mode == "off":
            return
        msg = self._JointState()
        msg.header.stamp = self._stamp()
        with self.lock:
            self._advance_following()
            items = list(self.inputs.positions.items())
            if mode == "ok":
                self._reported.append((time.monotonic(), dict(items)))
        random.Random(len(self.chunks)).shuffle(items)  # any order
        names = [k for k, _ in items] + ["torso_joint"]  # an extra joint the node ignores
        pos = [v for _, v in items] + [0.3]
        if mode == "nan":
            pos[0] = math.nan
        elif mode == "inf":
            pos[0] = math.inf
        elif mode == "huge":
            pos[0] = 1e300
        elif mode == "missing":
            names, pos = names[1:], pos[1:]
        elif mode == "unknown":
            names = [f"mystery_{i}" for i in range(len(names))]
        elif mode == "duplicate":
            names[1] = names[0]
        elif mode == "empty":
            pos = []
        elif mode == "extra":
            pos = [*pos, 0.0, 0.0]
        msg.name = names
        msg.position = [float(p) for p in pos]
        self.joint_pub.publish(msg)

    # --- outputs and the fake robot ------------------------------------------------------------
    def _on_diag(self, msg: Any) -> None:
        with self.lock:
            self.diagnostics.append(msg)

    def measured(self, group: str) -> list[float]:
        """Where the fake robot is now for ``group`` (what the node measures)."""
        with self.lock:
            self._advance_following()
            return [self.inputs.positions[n] for n in GROUP_JOINTS[group]]

    def reported(self, group: str) -> list[list[float]]:
        """The valid positions of ``group`` published within the last ``MEASUREMENT_WINDOW`` seconds: the
        node may have planned from any of them (it refuses ones older than ``MAX_STATE_AGE`` on arrival)."""
        since = time.monotonic() - MEASUREMENT_WINDOW
        with self.lock:
            return [[p[n] for n in GROUP_JOINTS[group]] for t, p in self._reported if t >= since]

    def push_arm(self, delta: float) -> None:
        """Every joint is pushed by ``delta`` rad (within the limits) and stops following what it was
        following: with ``inputs.echo_commands`` off it stays there."""
        with self.lock:
            self._advance_following()
            self._following.clear()
            for name, value in self.inputs.positions.items():
                self.inputs.positions[name] = max(LOWER + 0.1, min(UPPER - 0.1, value + delta))

    def _echo_command(self, group: str, values: list[float]) -> None:
        if not self.inputs.echo_commands:
            return
        with self.lock:
            self._following.pop(group, None)
            for name, v in zip(GROUP_JOINTS[group], values, strict=False):
                self.inputs.positions[name] = v

    def _follow_trajectory(self, group: str, msg: Any) -> None:
        """A fake joint trajectory controller: from where the arm is when the trajectory arrives, linearly
        through the points at their times after the header stamp (as ros2_control's JTC interpolates)."""
        if not self.inputs.echo_commands or not msg.points:
            return
        points = [
            (to_seconds(p.time_from_start), [float(v) for v in p.positions])
            for p in msg.points
        ]
        stamp = to_seconds(msg.header.stamp)
        with self.lock:
            self._advance_following()
            start = [self.inputs.positions[n] for n in GROUP_JOINTS[group]]
            self._following[group] = (stamp, [(0.0, start), *points])

    def _advance_following(self) -> None:
        now = self.node.get_clock().now().nanoseconds * 1e-9
        for group, (stamp, points) in list(self._following.items()):
            t = now - stamp
            times = [pt for pt, _ in points]
            for j, name in enumerate(GROUP_JOINTS[group]):
                value = float(np.interp(t, times, [pos[j] for _, pos in points]))
                if math.isfinite(value):
                    self.inputs.positions[name] = value

    # --- queries ---------------------------------------------------------------------------------
    def latest_status(self) -> Any | None:
        with self.lock:
            return self.statuses[-1] if self.statuses else None

    def wait_for(self, predicate: Callable[[], bool], timeout: float = 30.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return True
            time.sleep(0.05)
        return predicate()

    def wait_status(self, predicate: Callable[[Any], bool], timeout: float = 30.0) -> Any | None:
        found: list[Any] = []

        def _check() -> bool:
            s = self.latest_status()
            if s is not None and predicate(s):
                found.append(s)
                return True
            return False

        return found[0] if self.wait_for(_check, timeout) else None

    def count_commands(self) -> int:
        with self.lock:
            return sum(len(v) for v in self.commands.values())

    def count_chunks(self) -> int:
        with self.lock:
            return len(self.chunks)

    # --- services --------------------------------------------------------------------------------
    def _call(self, client: Any, request: Any, timeout: float = 60.0) -> Any:
        if not client.wait_for_service(timeout_sec=timeout):
            raise TimeoutError(f"service {client.srv_name} not available")
        future = client.call_async(request)
        if not self.wait_for(future.done, timeout):
            raise TimeoutError(f"service {client.srv_name} did not answer")
        return future.result()

    def change_state(self, transition_id: int) -> bool:
        from lifecycle_msgs.srv import ChangeState

        req = ChangeState.Request()
        req.transition.id = transition_id
        return bool(self._call(self.change_state_cli, req).success)

    def lifecycle_state(self) -> str:
        from lifecycle_msgs.srv import GetState

        return str(self._call(self.get_state_cli, GetState.Request()).current_state.label)

    def set_parameter(self, name: str, value: Any) -> tuple[bool, str]:
        from rcl_interfaces.srv import SetParameters
        from rclpy.parameter import Parameter

        req = SetParameters.Request()
        req.parameters = [Parameter(name, value=value).to_parameter_msg()]
        result = self._call(self.set_params_cli, req).results[0]
        return bool(result.successful), str(result.reason)


def start_node(params_file: Path, env: dict[str, str], log_path: Path) -> ChildProcess:
    """The node as a child process, its output in ``log_path``; stop it with ``.stop()`` (SIGINT first)."""
    cmd = [sys.executable, "-m", "vla_policy_node.main", "--ros-args", "--params-file", str(params_file)]
    return ChildProcess(cmd, env=env, log_path=log_path)
