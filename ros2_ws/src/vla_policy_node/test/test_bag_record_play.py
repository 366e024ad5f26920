"""vla-bag record and play against real processes over DDS (random ROS_DOMAIN_ID per test)."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest
import yaml
from ros_harness import output, stop, wait_for_output
from vla_policy.data.episode_bag import JOINT_STATES_TOPIC, open_bag
from vla_policy.data.synthetic_episode import SyntheticEpisodeConfig, write_synthetic_episode

pytestmark = pytest.mark.ros
CLI = [sys.executable, "-m", "vla_policy_node.bag_cli"]
# rosbag2's own talker bags (see their README); CI clones the repository without ../shared
TALKER = Path(__file__).resolve().parents[4].parent / "shared" / "data" / "rosbag2-talker"

PUBLISHER = r"""
import sys, time, rclpy
from rclpy.qos import QoSProfile, ReliabilityPolicy, DurabilityPolicy
from std_msgs.msg import String
from sensor_msgs.msg import JointState
from vla_msgs.msg import ControlTick
rclpy.init()
node = rclpy.create_node("test_pub")
latched = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                     durability=DurabilityPolicy.TRANSIENT_LOCAL)
pub_s = node.create_publisher(String, "/chatter", QoSProfile(depth=50))
pub_i = node.create_publisher(String, "/instruction", latched)
pub_j = node.create_publisher(JointState, "/joint_states", QoSProfile(depth=50))
pub_t = node.create_publisher(ControlTick, "/tick", QoSProfile(depth=50)) if TICKS else None
deadline = time.monotonic() + 20
def ready():
    subs = [pub_s, pub_j] + ([pub_t] if pub_t else [])
    return all(p.get_subscription_count() > 0 for p in subs)
while not ready() and time.monotonic() < deadline:
    time.sleep(0.05)
pub_i.publish(String(data="do the thing"))
for i in range(COUNT):
    pub_s.publish(String(data=f"msg {i}"))
    js = JointState(name=["a", "b"], position=[float(i), -float(i)])
    js.header.stamp.sec = 100 + i
    pub_j.publish(js)
    if pub_t:
        pub_t.publish(ControlTick(commands_published=i, state=2))
    time.sleep(0.01)
print("PUBLISHED", COUNT, flush=True)
time.sleep(30)
"""


def publisher(count: int, ticks: bool = False) -> str:
    return PUBLISHER.replace("COUNT", str(count)).replace("TICKS", str(ticks))


@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
def test_record_captures_publisher(tmp_path, ros_env, spawn, storage):
    """Every message of every type (vla_msgs/ControlTick included) lands, in MCAP and in sqlite3."""
    out = tmp_path / "rec"
    n = 100
    rec = spawn(
        [
            *CLI,
            "record",
            "--out",
            str(out),
            "--storage",
            storage,
            "/chatter",
            "/joint_states",
            "/instruction",
            "/tick",
            "--task",
            "unit",
            "--success",
            "true",
        ],
        ros_env,
    )
    assert wait_for_output(rec, "recording to", 30), output(rec)
    pub = spawn([sys.executable, "-c", publisher(n, ticks=True)], ros_env)
    assert wait_for_output(pub, "PUBLISHED", 60), output(pub)
    time.sleep(0.5)
    assert stop(rec) == 0, output(rec)
    assert "skipping" not in output(rec), output(rec)
    assert f"recorded {3 * n + 1} messages" in output(rec), output(rec)
    with open_bag(out) as bag:
        assert bag.custom_data["task"] == "unit" and bag.custom_data["success"] == "true"
        texts = [m.msg.data for m in bag.messages(topics=["/chatter"])]
        assert texts == [f"msg {i}" for i in range(n)]
        js = [m.msg for m in bag.messages(topics=[JOINT_STATES_TOPIC])]
        assert [int(m.position[0]) for m in js] == list(range(n))
        assert js[5].header.stamp.sec == 105
        assert [m.msg.data for m in bag.messages(topics=["/instruction"])] == ["do the thing"]
        ticks = [m.msg for m in bag.messages(topics=["/tick"])]
        assert [(t.commands_published, t.state) for t in ticks] == [(i, 2) for i in range(n)]
    assert [p.name for p in out.iterdir() if p.name != "metadata.yaml"] == [
        f"rec_0.{'mcap' if storage == 'mcap' else 'db3'}"
    ]
    info = yaml.safe_load((out / "metadata.yaml").read_text())["rosbag2_bagfile_information"]
    qos = {
        t["topic_metadata"]["name"]: t["topic_metadata"]["offered_qos_profiles"][0]
        for t in info["topics_with_message_count"]
    }
    assert qos["/instruction"]["durability"] == "transient_local"
    assert qos["/chatter"]["reliability"] == "reliable"
    # rclpy's default publisher QoS has infinite durations, written as rosbag2 writes them
    assert qos["/chatter"]["deadline"] == {"sec": 9223372036, "nsec": 854775807}
    assert info["ros_distro"] == "kilted"


def test_sigterm_finalises_bag(tmp_path, ros_env, spawn):
    out = tmp_path / "rec"
    rec = spawn([*CLI, "record", "--out", str(out), "/chatter", "/joint_states"], ros_env)
    assert wait_for_output(rec, "recording to", 30), output(rec)
    pub = spawn([sys.executable, "-c", publisher(30)], ros_env)
    assert wait_for_output(pub, "PUBLISHED", 60), output(pub)
    time.sleep(0.3)
    rec.terminate()
    assert rec.wait(timeout=15) == 0, output(rec)
    with open_bag(out) as bag:
        assert bag.topics()["/chatter"].count == 30


BURST_PUBLISHER = r"""
import sys, time, rclpy
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image, JointState
rclpy.init()
node = rclpy.create_node("burst_pub")
qos = QoSProfile(depth=1000, reliability=ReliabilityPolicy.RELIABLE)
pub_i = node.create_publisher(Image, "/burst_test/image_raw", qos)
pub_j = node.create_publisher(JointState, "/burst_test/joint_states", qos)
deadline = time.monotonic() + 20
while time.monotonic() < deadline and not (
    pub_i.get_subscription_count() > 0 and pub_j.get_subscription_count() > 0
):
    time.sleep(0.05)
img = Image(height=240, width=320, encoding="rgb8", step=320 * 3, data=bytes(240 * 320 * 3))
for i in range(N_IMAGES):
    img.header.stamp.sec = i
    pub_i.publish(img)
for i in range(N_JOINTS):
    pub_j.publish(JointState(name=["a"], position=[float(i)]))
print("PUBLISHED", flush=True)
time.sleep(30)
"""


@pytest.mark.parametrize("sig", ["SIGINT", "SIGTERM"])
def test_stop_right_after_burst_keeps_everything(tmp_path, ros_env, spawn, sig):
    """A burst published just before the signal (still in flight or queued for the writer) all lands."""
    import json
    import signal

    out, stats_json = tmp_path / "rec", tmp_path / "stats.json"
    n_images, n_joints = 60, 500
    rec = spawn(
        [
            *CLI,
            "record",
            "--out",
            str(out),
            "--stats-json",
            str(stats_json),
            "/burst_test/image_raw",
            "/burst_test/joint_states",
        ],
        ros_env,
    )
    assert wait_for_output(rec, "recording to", 30), output(rec)
    code = BURST_PUBLISHER.replace("N_IMAGES", str(n_images)).replace("N_JOINTS", str(n_joints))
    pub = spawn([sys.executable, "-c", code], ros_env)
    assert wait_for_output(pub, "PUBLISHED", 60), output(pub)
    rec.send_signal(getattr(signal, sig))  # no pause: the burst is still being taken and written
    assert rec.wait(timeout=60) == 0, output(rec)
    assert "/burst_test/joint_states: received 500, written 500" in output(rec), output(rec)
    with open_bag(out) as bag:
        topics = bag.topics()
        assert topics["/burst_test/image_raw"].count == n_images
        assert topics["/burst_test/joint_states"].count == n_joints
        stamps = [m.msg.header.stamp.sec for m in bag.messages(topics=["/burst_test/image_raw"])]
        assert stamps == list(range(n_images))
        positions = [int(m.msg.position[0]) for m in bag.messages(topics=["/burst_test/joint_states"])]
        assert positions == list(range(n_joints))
    stats = json.loads(stats_json.read_text())
    assert stats["lost_in_recorder"] == 0 and stats["error"] is None
    img = stats["topics"]["/burst_test/image_raw"]
    assert img["received"] == img["written"] == n_images and img["bytes"] > n_images * 240 * 320 * 3


def test_close_drains_writer_queue(tmp_path, ros_env):
    """In process, with a slow disk: callbacks only enqueue, and close() writes the whole backlog."""
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from std_msgs.msg import String
    from vla_policy_node.bag_recorder import BagRecorder, drain

    n = 200
    rclpy.init()
    try:
        node = rclpy.create_node("rec_unit")
        pub_node = rclpy.create_node("pub_unit")
        pub = pub_node.create_publisher(
            String, "/drain_test/chatter", QoSProfile(depth=1000, reliability=ReliabilityPolicy.RELIABLE)
        )
        executor = SingleThreadedExecutor()
        executor.add_node(node)
        rec = BagRecorder(node, tmp_path / "rec", topics=["/drain_test/chatter"], log=lambda s: None)
        write_raw = rec.writer.write_raw

        def slow_write(topic, stamp, data):
            time.sleep(0.02)  # 200 messages take ~4 s to write
            write_raw(topic, stamp, data)

        rec.writer.write_raw = slow_write
        deadline = time.monotonic() + 20
        while "/drain_test/chatter" not in rec.subscribed or pub.get_subscription_count() == 0:
            assert time.monotonic() < deadline, "no discovery"
            executor.spin_once(timeout_sec=0.05)
        for i in range(n):
            pub.publish(String(data=f"m{i}"))
        t0 = time.monotonic()
        while rec.received["/drain_test/chatter"] < n and time.monotonic() - t0 < 10:
            executor.spin_once(timeout_sec=0.02)
        assert time.monotonic() - t0 < 2.0, "intake waited on the (slow) writer"
        assert rec.received["/drain_test/chatter"] == n
        assert rec.queued > n // 2  # most of the burst is still waiting for the disk
        drain(executor, 0.1, rec)
        counts = rec.close()
        assert counts == {"/drain_test/chatter": n}
        assert rec.stats()["max_queued_messages"] > n // 2
        executor.shutdown()
        node.destroy_node()
        pub_node.destroy_node()
    finally:
        rclpy.try_shutdown()
    with open_bag(tmp_path / "rec") as bag:
        assert [m.msg.data for m in bag.messages()] == [f"m{i}" for i in range(n)]


def test_queue_cap_drops_oldest_per_topic_and_counts(tmp_path, ros_env):
    """A disk slower than the input: the queue stays under its cap (plus the newest message and the one
    being written), the oldest queued messages of the topic are dropped, and every drop is counted in the
    stats and in the bag's metadata."""
    import json

    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from std_msgs.msg import String
    from vla_policy_node.bag_recorder import BagRecorder, drain

    n, size, topic = 200, 1000, "/cap_test/chatter"
    cap = 20 * size
    rclpy.init()
    try:
        node = rclpy.create_node("rec_cap")
        pub_node = rclpy.create_node("pub_cap")
        pub = pub_node.create_publisher(
            String, topic, QoSProfile(depth=1000, reliability=ReliabilityPolicy.RELIABLE)
        )
        executor = SingleThreadedExecutor()
        executor.add_node(node)
        rec = BagRecorder(node, tmp_path / "rec", topics=[topic], log=lambda s: None, max_queue_bytes=cap)
        write_raw = rec.writer.write_raw
        largest: list[int] = []

        def slow_write(t, stamp, data):  # a throttled disk: ~50 messages per second
            largest.append(rec.queued_bytes)
            time.sleep(0.02)
            write_raw(t, stamp, data)

        rec.writer.write_raw = slow_write
        deadline = time.monotonic() + 20
        while topic not in rec.subscribed or pub.get_subscription_count() == 0:
            assert time.monotonic() < deadline, "no discovery"
            executor.spin_once(timeout_sec=0.05)
        for i in range(n):
            pub.publish(String(data=f"{i:04d}".ljust(size, "x")))
        deadline = time.monotonic() + 30
        while rec.received[topic] < n:
            assert time.monotonic() < deadline, f"received {rec.received[topic]} of {n}"
            executor.spin_once(timeout_sec=0.02)
        drain(executor, 0.1, rec)
        counts = rec.close()
        stats = rec.stats()
        executor.shutdown()
        node.destroy_node()
        pub_node.destroy_node()
    finally:
        rclpy.try_shutdown()
    one = size + 16  # a message's CDR bytes
    assert stats["max_queued_mb"] * 1e6 <= cap + 2 * one
    assert max(largest) <= cap + 2 * one
    t = stats["topics"][topic]
    assert t["dropped"] > 0 and t["received"] == n and t["written"] + t["dropped"] == n
    assert stats["lost_in_recorder"] == 0 and counts[topic] == t["written"]
    with open_bag(tmp_path / "rec") as bag:
        assert json.loads(bag.custom_data["vla.recorder.dropped"]) == {topic: t["dropped"]}
        assert bag.custom_data["vla.recorder.drop_policy"] == "drop_oldest_per_topic"
        kept = [int(m.msg.data[:4]) for m in bag.messages()]
    assert kept == sorted(kept) and len(kept) == t["written"]
    assert kept[-1] == n - 1  # the newest messages are kept, the oldest queued ones dropped


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


@pytest.mark.skipif(not TALKER.is_dir(), reason=f"rosbag2's talker bags are not here ({TALKER})")
@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
def test_play_bag_written_by_rosbag2(ros_env, spawn, storage):
    """rosbag2's own bags (storage QoS unlike metadata.yaml's, topic ids in another order) play all 20
    messages; rosbags 0.11.9 alone yields none of them."""
    import rclpy
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from std_msgs.msg import String

    play = spawn([*CLI, "play", str(TALKER / storage), "--rate", "10", "--delay", "0"], ros_env)
    assert play.wait(timeout=60) == 0, output(play)
    assert 'published 20 messages: {"/topic": 10, "/rosout": 10, "/parameter_events": 0}' in output(play)

    # and the messages arrive: played in a loop until a subscriber has one whole pass (discovery may miss
    # the first messages of a pass)
    want = [f"Hello, world! {i}" for i in range(10)]
    rclpy.init()
    got: list[str] = []
    try:
        node = rclpy.create_node("talker_sub")
        qos = QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE)
        node.create_subscription(String, "/topic", lambda m: got.append(m.data), qos)
        loop = spawn([*CLI, "play", str(TALKER / storage), "--rate", "10", "--loop", "--delay", "0"], ros_env)
        deadline = time.monotonic() + 60
        while not any(got[i : i + 10] == want for i in range(len(got))):
            assert time.monotonic() < deadline, f"no whole pass of /topic: {got}"
            rclpy.spin_once(node, timeout_sec=0.05)
        stop(loop)
        node.destroy_node()
    finally:
        rclpy.try_shutdown()


def test_a_sim_time_recorder_finds_a_publisher_that_appears_before_any_clock(tmp_path, ros_env):
    """`vla-bag replay-eval` and `make demo` start the recorder with use_sim_time before anything publishes
    /clock (the player starts once the recorder has subscribed): discovery must not wait for sim time."""
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.parameter import Parameter
    from std_msgs.msg import String
    from vla_policy_node.bag_recorder import BagRecorder

    rclpy.init()
    try:
        node = rclpy.create_node("rec_sim_time", parameter_overrides=[Parameter("use_sim_time", value=True)])
        executor = SingleThreadedExecutor()
        executor.add_node(node)
        rec = BagRecorder(node, tmp_path / "rec", topics=["/late_test/chatter"], log=lambda s: None)
        assert rec.subscribed == ()  # the first discovery ran before the publisher existed
        pub_node = rclpy.create_node("late_pub")
        pub_node.create_publisher(String, "/late_test/chatter", 10)
        deadline = time.monotonic() + 60
        while "/late_test/chatter" not in rec.subscribed:
            assert time.monotonic() < deadline, "the recorder never discovered the publisher"
            executor.spin_once(timeout_sec=0.05)
        rec.close()
        executor.shutdown()
        node.destroy_node()
        pub_node.destroy_node()
    finally:
        rclpy.try_shutdown()
