"""vla-bag record and play against real processes over DDS (random ROS_DOMAIN_ID per test)."""

from __future__ import annotations

import sys
import time

import pytest
import yaml
from ros_harness import output, stop, wait_for_output
from vla_policy.episode_bag import JOINT_STATES_TOPIC, open_bag
from vla_policy.synthetic_episode import SyntheticEpisodeConfig, write_synthetic_episode

pytestmark = pytest.mark.ros
CLI = [sys.executable, "-m", "vla_policy_node.bag_cli"]

PUBLISHER = r"""
import sys, time, rclpy
from rclpy.qos import QoSProfile, ReliabilityPolicy, DurabilityPolicy
from std_msgs.msg import String
from sensor_msgs.msg import JointState
rclpy.init()
node = rclpy.create_node("test_pub")
latched = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                     durability=DurabilityPolicy.TRANSIENT_LOCAL)
pub_s = node.create_publisher(String, "/chatter", QoSProfile(depth=50))
pub_i = node.create_publisher(String, "/instruction", latched)
pub_j = node.create_publisher(JointState, "/joint_states", QoSProfile(depth=50))
deadline = time.monotonic() + 20
def ready():
    return pub_s.get_subscription_count() > 0 and pub_j.get_subscription_count() > 0
while not ready() and time.monotonic() < deadline:
    time.sleep(0.05)
pub_i.publish(String(data="do the thing"))
for i in range(COUNT):
    pub_s.publish(String(data=f"msg {i}"))
    js = JointState(name=["a", "b"], position=[float(i), -float(i)])
    js.header.stamp.sec = 100 + i
    pub_j.publish(js)
    time.sleep(0.01)
print("PUBLISHED", COUNT, flush=True)
time.sleep(30)
"""


def test_record_captures_publisher(tmp_path, ros_env, spawn):
    out = tmp_path / "rec"
    n = 100
    rec = spawn(
        [
            *CLI,
            "record",
            "--out",
            str(out),
            "/chatter",
            "/joint_states",
            "/instruction",
            "--task",
            "unit",
            "--success",
            "true",
        ],
        ros_env,
    )
    assert wait_for_output(rec, "recording to", 30), output(rec)
    pub = spawn([sys.executable, "-c", PUBLISHER.replace("COUNT", str(n))], ros_env)
    assert wait_for_output(pub, "PUBLISHED", 60), output(pub)
    time.sleep(0.5)
    assert stop(rec) == 0, output(rec)
    assert f"recorded {2 * n + 1} messages" in output(rec), output(rec)
    with open_bag(out) as bag:
        assert bag.custom_data["task"] == "unit" and bag.custom_data["success"] == "true"
        texts = [m.msg.data for m in bag.messages(topics=["/chatter"])]
        assert texts == [f"msg {i}" for i in range(n)]
        js = [m.msg for m in bag.messages(topics=[JOINT_STATES_TOPIC])]
        assert [int(m.position[0]) for m in js] == list(range(n))
        assert js[5].header.stamp.sec == 105
        assert [m.msg.data for m in bag.messages(topics=["/instruction"])] == ["do the thing"]
    info = yaml.safe_load((out / "metadata.yaml").read_text())["rosbag2_bagfile_information"]
    qos = {
        t["topic_metadata"]["name"]: t["topic_metadata"]["offered_qos_profiles"][0]
        for t in info["topics_with_message_count"]
    }
    assert qos["/instruction"]["durability"] == "transient_local"
    assert qos["/chatter"]["reliability"] == "reliable"
    assert info["ros_distro"] == "kilted"


def test_sigterm_finalises_bag(tmp_path, ros_env, spawn):
    out = tmp_path / "rec"
    rec = spawn([*CLI, "record", "--out", str(out), "/chatter", "/joint_states"], ros_env)
    assert wait_for_output(rec, "recording to", 30), output(rec)
    pub = spawn([sys.executable, "-c", PUBLISHER.replace("COUNT", "30")], ros_env)
    assert wait_for_output(pub, "PUBLISHED", 60), output(pub)
    time.sleep(0.3)
    rec.terminate()
    assert rec.wait(timeout=15) == 0, output(rec)
    with open_bag(out) as bag:
        assert bag.topics()["/chatter"].count == 30


def test_play_timing_and_clock(tmp_path, ros_env, spawn):
    import rclpy
    from rclpy.qos import QoSProfile, qos_profile_sensor_data
    from rosgraph_msgs.msg import Clock
    from sensor_msgs.msg import JointState

    bag = tmp_path / "ep"
    write_synthetic_episode(
        bag,
        SyntheticEpisodeConfig(
            duration=2.0, image_height=24, image_width=32, camera_rate=5.0, joint_rate=20.0
        ),
    )
    rclpy.init()
    try:
        node = rclpy.create_node("test_sub")
        got: list[tuple[float, int]] = []
        clocks: list[int] = []
        node.create_subscription(
            JointState,
            JOINT_STATES_TOPIC,
            lambda m: got.append((time.monotonic(), m.header.stamp.sec * 10**9 + m.header.stamp.nanosec)),
            qos_profile_sensor_data,
        )
        node.create_subscription(
            Clock,
            "/clock",
            lambda m: clocks.append(m.clock.sec * 10**9 + m.clock.nanosec),
            QoSProfile(depth=100),
        )
        play = spawn(
            [
                *CLI,
                "play",
                str(bag),
                "--clock",
                "--rate",
                "2",
                "--delay",
                "1.5",
                "--topics",
                JOINT_STATES_TOPIC,
            ],
            ros_env,
        )
        deadline = time.monotonic() + 30
        while play.poll() is None and time.monotonic() < deadline:
            rclpy.spin_once(node, timeout_sec=0.05)
        for _ in range(20):
            rclpy.spin_once(node, timeout_sec=0.02)
        assert play.returncode == 0, output(play)
        node.destroy_node()
    finally:
        rclpy.try_shutdown()
    assert len(got) >= 38, output(play)  # 41 sent, best effort on loopback
    span = got[-1][0] - got[0][0]
    assert 0.8 < span < 1.5, span  # 2 s of bag at rate 2
    start = 1_700_000_000 * 10**9
    assert len(clocks) > 20
    assert clocks == sorted(clocks)
    assert start <= clocks[0] and clocks[-1] <= start + 2 * 10**9 + 10**8
