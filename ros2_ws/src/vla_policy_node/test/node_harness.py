"""Test-side ROS plumbing for the node tests: a synthetic robot/camera publisher, a command monitor,
lifecycle and parameter clients. Runs in the test process on its own rclpy context and thread."""

from __future__ import annotations

import json
import math
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

CAMERAS = ("head", "left_wrist", "right_wrist")
CAMERA_TYPES = ("Image", "Image", "CompressedImage")
LEFT = tuple(f"left_joint_{i}" for i in range(6))
RIGHT = tuple(f"right_joint_{i}" for i in range(6))
CLAW = ("left_gripper", "right_gripper")
GROUP_JOINTS = {"left_arm": LEFT, "right_arm": RIGHT, "claw": CLAW}
LOWER, UPPER, MAX_STEP = -1.0, 1.0, 0.05
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
        "limits.max_step": [MAX_STEP],
        "max_image_age": 0.5,
        "max_state_age": 0.3,
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

    camera_mode: dict[str, str] = field(default_factory=lambda: dict.fromkeys(CAMERAS, "ok"))
    joint_mode: str = "ok"  # ok | nan | missing | unknown | off
    positions: dict[str, float] = field(
        default_factory=lambda: {n: 0.0 for g in GROUP_JOINTS.values() for n in g}
    )
    echo_commands: bool = True  # a fake robot: measured = last forward command


class Harness:
    """Publishes cameras (15 Hz), joint states (50 Hz) and the instruction; records everything the node
    publishes and checks every command against the limits."""

    def __init__(self, node_name: str = NODE, camera_hz: float = 15.0, joint_hz: float = 50.0) -> None:
        import rclpy
        from diagnostic_msgs.msg import DiagnosticArray
        from lifecycle_msgs.srv import ChangeState, GetState
        from rcl_interfaces.srv import SetParameters
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
        from sensor_msgs.msg import CompressedImage, Image, JointState
        from std_msgs.msg import Float64MultiArray, String
        from trajectory_msgs.msg import JointTrajectory
        from vla_msgs.msg import ActionChunk, PolicyStatus

        self.context = rclpy.Context()
        rclpy.init(context=self.context)
        self.node = rclpy.create_node("vla_test_harness", context=self.context)
        self.inputs = Inputs()
        self.lock = threading.Lock()
        self.chunks: list[Any] = []
        self.statuses: list[Any] = []
        self.diagnostics: list[Any] = []
        self.commands: dict[str, list[tuple[float, list[float]]]] = {g: [] for g in GROUP_JOINTS}
        self.trajectories: dict[str, list[Any]] = {g: [] for g in GROUP_JOINTS}
        self.violations: list[str] = []
        self._rng = np.random.default_rng(0)
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
        n.create_subscription(ActionChunk, f"/{node_name}/action_chunk", self._on_chunk, 10)
        n.create_subscription(PolicyStatus, f"/{node_name}/status", self._on_status, 10)
        n.create_subscription(DiagnosticArray, "/diagnostics", self._on_diag, 10)
        for group in GROUP_JOINTS:
            n.create_subscription(
                Float64MultiArray, f"/{group}_controller/commands",
                lambda m, g=group: self._on_command(g, m), 10,
            )
            n.create_subscription(
                JointTrajectory, f"/{group}_controller/joint_trajectory",
                lambda m, g=group: self._on_trajectory(g, m), 10,
            )
        self.change_state_cli = n.create_client(ChangeState, f"/{node_name}/change_state")
        self.get_state_cli = n.create_client(GetState, f"/{node_name}/get_state")
        self.set_params_cli = n.create_client(SetParameters, f"/{node_name}/set_parameters")
        self._Image, self._CompressedImage, self._JointState = Image, CompressedImage, JointState
        n.create_timer(1.0 / camera_hz, self._publish_cameras)
        n.create_timer(1.0 / joint_hz, self._publish_joints)
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

    def _publish_cameras(self) -> None:
        from vla_policy.image_codec import encode_compressed

        stamp = self.node.get_clock().now().to_msg()
        for cam, typ in zip(CAMERAS, CAMERA_TYPES, strict=True):
            mode = self.inputs.camera_mode[cam]
            if mode == "off":
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
                msg.data = rgb.tobytes()
            self.cam_pubs[cam].publish(msg)

    def _publish_joints(self) -> None:
        mode = self.inputs.joint_mode
        if mode == "off":
            return
        msg = self._JointState()
        msg.header.stamp = self.node.get_clock().now().to_msg()
        with self.lock:
            items = list(self.inputs.positions.items())
        random.Random(len(self.chunks)).shuffle(items)  # any order
        names = [k for k, _ in items] + ["torso_joint"]  # an extra joint the node ignores
        pos = [v for _, v in items] + [0.3]
        if mode == "nan":
            pos[0] = math.nan
        elif mode == "missing":
            names, pos = names[1:], pos[1:]
        elif mode == "unknown":
            names = [f"mystery_{i}" for i in range(len(names))]
        msg.name = names
        msg.position = [float(p) for p in pos]
        self.joint_pub.publish(msg)

    # --- outputs ---------------------------------------------------------------------------------
    def _on_chunk(self, msg: Any) -> None:
        with self.lock:
            self.chunks.append(msg)

    def _on_status(self, msg: Any) -> None:
        with self.lock:
            self.statuses.append(msg)

    def _on_diag(self, msg: Any) -> None:
        with self.lock:
            self.diagnostics.append(msg)

    def _check(self, what: str, values: list[float], expected_len: int) -> None:
        if len(values) != expected_len:
            self.violations.append(f"{what}: {len(values)} values, expected {expected_len}")
        for v in values:
            if not math.isfinite(v) or v < LOWER - 1e-9 or v > UPPER + 1e-9:
                self.violations.append(f"{what}: value {v} outside [{LOWER}, {UPPER}]")

    def _on_command(self, group: str, msg: Any) -> None:
        now = time.monotonic()
        values = list(msg.data)
        with self.lock:
            self._check(f"{group} command", values, len(GROUP_JOINTS[group]))
            history = self.commands[group]
            if history and now - history[-1][0] < 0.3 and len(history[-1][1]) == len(values):
                step = max(abs(a - b) for a, b in zip(values, history[-1][1], strict=True))
                if step > MAX_STEP + 1e-6:
                    self.violations.append(f"{group} command: step {step:.4f} > {MAX_STEP}")
            history.append((now, values))
            if self.inputs.echo_commands:
                for name, v in zip(GROUP_JOINTS[group], values, strict=False):
                    self.inputs.positions[name] = v

    def _on_trajectory(self, group: str, msg: Any) -> None:
        with self.lock:
            if list(msg.joint_names) != list(GROUP_JOINTS[group]):
                self.violations.append(f"{group} trajectory: joint names {list(msg.joint_names)}")
            prev_t = -1.0
            for p in msg.points:
                self._check(f"{group} trajectory point", list(p.positions), len(GROUP_JOINTS[group]))
                t = p.time_from_start.sec + p.time_from_start.nanosec * 1e-9
                if t <= prev_t:
                    self.violations.append(f"{group} trajectory: time_from_start not increasing")
                prev_t = t
            self.trajectories[group].append(msg)

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
