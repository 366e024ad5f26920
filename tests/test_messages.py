"""vla_msgs: generated types, serialization round trips, and an ActionChunk across a process boundary."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import ros_harness

pytestmark = pytest.mark.ros

MSG_DIR = ros_harness.REPO_ROOT / "ros2_ws" / "src" / "vla_msgs"


def test_action_chunk_round_trips_through_rclpy_serialization():
    from rclpy.serialization import deserialize_message, serialize_message
    from vla_msgs.msg import ActionChunk

    msg = ros_harness.sample_action_chunk(chunk_id=2**63 + 5)
    back = deserialize_message(serialize_message(msg), ActionChunk)
    assert back == msg
    assert back.chunk_id == 2**63 + 5
    assert back.header.stamp.nanosec == 123_456_789
    assert back.inference_latency.nanosec == 47_900_000
    assert [len(t.joint_names) for t in (back.left_arm, back.right_arm, back.claw)] == [7, 7, 2]
    assert back.claw.points[-1].time_from_start.nanosec == 80_000_000
    assert list(back.left_arm.points[1].positions) == pytest.approx([0.1 * j + 0.01 for j in range(7)])


def test_policy_status_fields_and_constants():
    from rclpy.serialization import deserialize_message, serialize_message
    from vla_msgs.msg import PolicyStatus

    assert (
        PolicyStatus.UNCONFIGURED,
        PolicyStatus.READY,
        PolicyStatus.RUNNING,
        PolicyStatus.HOLDING,
        PolicyStatus.FAULT,
    ) == (0, 1, 2, 3, 4)
    status = PolicyStatus(
        state=PolicyStatus.HOLDING,
        instruction="fold the towel",
        last_chunk_id=41,
        observation_age=0.25,
        latency_mean=0.05,
        latency_p50=0.048,
        latency_p99=0.09,
        latency_max=0.12,
        deadline_misses=3,
        inference_overruns=1,
        reason="camera 'top' stale for 0.25 s",
    )
    assert deserialize_message(serialize_message(status), PolicyStatus) == status


def test_reset_service_type():
    from vla_msgs.srv import Reset

    assert Reset.Request.get_fields_and_field_types() == {}
    assert Reset.Response.get_fields_and_field_types() == {"success": "boolean", "message": "string"}


def test_rosbags_cdr_of_action_chunk_decodes_in_rclpy():
    """Bags written with rosbags (offline evaluation) carry ActionChunks that rclpy reads back."""
    from rclpy.serialization import deserialize_message
    from rosbags.typesys import Stores, get_types_from_msg, get_typestore
    from vla_msgs.msg import ActionChunk

    store = get_typestore(Stores.ROS2_KILTED)
    store.register(
        get_types_from_msg((MSG_DIR / "msg" / "ActionChunk.msg").read_text(), "vla_msgs/msg/ActionChunk")
    )
    cls = store.types["vla_msgs/msg/ActionChunk"]
    Time, Header = store.types["builtin_interfaces/msg/Time"], store.types["std_msgs/msg/Header"]
    Duration = store.types["builtin_interfaces/msg/Duration"]
    JT, JTP = (
        store.types["trajectory_msgs/msg/JointTrajectory"],
        store.types["trajectory_msgs/msg/JointTrajectoryPoint"],
    )
    import numpy as np

    header = Header(stamp=Time(sec=5, nanosec=6), frame_id="base_link")
    empty = np.zeros(0, dtype=np.float64)
    point = JTP(
        positions=np.array([1.0, 2.0]),
        velocities=empty,
        accelerations=empty,
        effort=empty,
        time_from_start=Duration(sec=0, nanosec=20_000_000),
    )
    traj = JT(header=header, joint_names=["a", "b"], points=[point])
    raw = store.serialize_cdr(
        cls(
            header=header,
            chunk_id=9,
            policy="p@1",
            dt=0.02,
            inference_latency=Duration(sec=0, nanosec=1),
            left_arm=traj,
            right_arm=traj,
            claw=traj,
        ),
        "vla_msgs/msg/ActionChunk",
    )
    msg = deserialize_message(bytes(raw), ActionChunk)
    assert (msg.chunk_id, msg.policy, msg.claw.joint_names, list(msg.left_arm.points[0].positions)) == (
        9,
        "p@1",
        ["a", "b"],
        [1.0, 2.0],
    )


_PUBLISHER = r"""
import sys, time
sys.path.insert(0, {harness_dir!r})
import rclpy
from rclpy.executors import ExternalShutdownException
from rclpy.qos import QoSProfile, ReliabilityPolicy
from vla_msgs.msg import ActionChunk
import ros_harness

rclpy.init()
node = rclpy.create_node("chunk_publisher")
qos = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
pub = node.create_publisher(ActionChunk, {topic!r}, qos)
print("READY", flush=True)
n = 0
try:
    while rclpy.ok():
        pub.publish(ros_harness.sample_action_chunk(chunk_id=1000 + n))
        n += 1
        time.sleep(0.1)
except (KeyboardInterrupt, ExternalShutdownException):
    pass
finally:
    print("PUBLISHED", n, flush=True)
    node.destroy_node()
    rclpy.try_shutdown()
"""


def test_action_chunk_crosses_a_process_boundary_over_fast_dds(ros_env, spawn):
    import rclpy
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from vla_msgs.msg import ActionChunk

    topic = "/vla_test/action_chunk"
    child = spawn(_PUBLISHER.format(harness_dir=str(Path(ros_harness.__file__).parent), topic=topic), ros_env)
    assert ros_harness.wait_for_output(child, "READY"), ros_harness.output(child)

    received: list[ActionChunk] = []
    context = rclpy.context.Context()
    rclpy.init(context=context)  # ROS_DOMAIN_ID etc. come from os.environ, set by the ros_env fixture
    try:
        node = rclpy.create_node("chunk_listener", context=context)
        node.create_subscription(
            ActionChunk, topic, received.append, QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
        )
        executor = rclpy.executors.SingleThreadedExecutor(context=context)
        executor.add_node(node)
        deadline = time.monotonic() + 60.0  # discovery on a loaded machine; not a performance check
        while not received and time.monotonic() < deadline and child.poll() is None:
            executor.spin_once(timeout_sec=0.1)
        executor.shutdown()
        node.destroy_node()
    finally:
        rclpy.try_shutdown(context=context)

    assert received, (
        f"no ActionChunk received on domain {ros_env['ROS_DOMAIN_ID']}:\n{ros_harness.output(child)}"
    )
    got = received[0]
    assert got.chunk_id >= 1000
    expected = ros_harness.sample_action_chunk(chunk_id=got.chunk_id)
    assert got == expected
    assert ros_harness.stop(child) == 0, ros_harness.output(child)
