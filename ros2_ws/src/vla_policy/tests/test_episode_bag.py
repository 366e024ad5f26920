"""Episode bag format: write/read round trip (MCAP and sqlite3), metadata, QoS, and the one-line errors."""

from __future__ import annotations

import os
import shutil

import numpy as np
import pytest
import yaml
from vla_policy.data.episode_bag import (
    DEFAULT_JOINTS,
    INSTRUCTION_TOPIC,
    JOINT_STATES_TOPIC,
    EpisodeBagError,
    EpisodeBagWriter,
    MissingTopicError,
    TruncatedBagError,
    UnknownMessageTypeError,
    camera_topic,
    get_typestore,
    image_from_msg,
    open_bag,
)
from vla_policy.data.synthetic_episode import JointMotion, SyntheticEpisodeConfig, write_synthetic_episode

SMALL = dict(duration=1.0, image_height=24, image_width=32, camera_rate=10.0, joint_rate=20.0)


@pytest.fixture(scope="module")
def sample_bag(tmp_path_factory):
    path = tmp_path_factory.mktemp("bags") / "ep"
    write_synthetic_episode(path, SyntheticEpisodeConfig(**SMALL, command_mode="both", clock_rate=10.0))
    return path


@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
def test_sample_round_trip(tmp_path, storage):
    path = tmp_path / "ep"
    meta = write_synthetic_episode(path, SyntheticEpisodeConfig(**SMALL, storage=storage))
    info = yaml.safe_load((path / "metadata.yaml").read_text())["rosbag2_bagfile_information"]
    assert info["storage_identifier"] == storage
    assert info["ros_distro"] == "kilted"
    assert info["custom_data"]["task"] == meta.task
    assert info["custom_data"]["success"] == "true"
    qos = {
        t["topic_metadata"]["name"]: t["topic_metadata"]["offered_qos_profiles"]
        for t in info["topics_with_message_count"]
    }
    assert qos[INSTRUCTION_TOPIC][0]["durability"] == "transient_local"
    assert qos[JOINT_STATES_TOPIC][0]["reliability"] == "best_effort"
    with open_bag(path) as bag:
        assert bag.metadata.instruction == meta.instruction
        assert bag.metadata.joints == DEFAULT_JOINTS
        topics = bag.topics()
        assert topics[camera_topic("head")].count == 11
        assert topics[JOINT_STATES_TOPIC].count == 21
        msgs = list(bag.messages())
    stamps = [m.timestamp for m in msgs]
    assert stamps == sorted(stamps)
    assert len(msgs) == info["message_count"]
    img = next(m for m in msgs if m.topic == camera_topic("head"))
    rgb = image_from_msg(img.msg, img.msgtype)
    assert rgb.shape == (24, 32, 3) and rgb.dtype == np.uint8


def test_sample_is_deterministic_and_moves(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    write_synthetic_episode(a, SyntheticEpisodeConfig(**SMALL, seed=3))
    write_synthetic_episode(b, SyntheticEpisodeConfig(**SMALL, seed=3))
    with open_bag(a) as ra, open_bag(b) as rb:
        ma, mb = list(ra.messages(decode=False)), list(rb.messages(decode=False))
        assert [(m.topic, m.timestamp, bytes(m.raw)) for m in ma] == [
            (m.topic, m.timestamp, bytes(m.raw)) for m in mb
        ]
        frames = [image_from_msg(m.msg, m.msgtype) for m in ra.messages(topics=[camera_topic("head")])]
    assert np.abs(frames[0].astype(int) - frames[-1].astype(int)).mean() > 1.0  # something moves
    q = JointMotion(DEFAULT_JOINTS, 3)(np.linspace(0, 1, 101))
    assert np.abs(np.diff(q, n=2, axis=0)).max() < 1e-2  # smooth


def test_clock_trajectory_and_vla_types(sample_bag):
    with open_bag(sample_bag) as bag:
        topics = bag.topics()
        assert topics["/clock"].msgtype == "rosgraph_msgs/msg/Clock"
        assert topics["/left_arm_controller/joint_trajectory"].count == 21
        traj = next(bag.messages(topics=["/left_arm_controller/joint_trajectory"])).msg
        assert list(traj.joint_names) == list(DEFAULT_JOINTS.left_arm)
    assert "vla_msgs/msg/ActionChunk" in get_typestore().fielddefs


def test_missing_topic(sample_bag):
    with open_bag(sample_bag) as bag, pytest.raises(MissingTopicError, match=r"no topic /nope"):
        bag.require_topics({"/nope": []})


def test_truncated_bag(tmp_path, sample_bag):
    no_meta = tmp_path / "no_meta"
    shutil.copytree(sample_bag, no_meta)
    (no_meta / "metadata.yaml").unlink()
    with pytest.raises(TruncatedBagError, match=r"metadata\.yaml"):
        open_bag(no_meta)
    cut = tmp_path / "cut"
    shutil.copytree(sample_bag, cut)
    data = next(cut.glob("*.mcap"))
    os.truncate(data, data.stat().st_size // 2)
    with pytest.raises(TruncatedBagError) as info, open_bag(cut) as bag:
        list(bag.messages())
    assert "\n" not in str(info.value)


def test_unknown_message_type(tmp_path):
    from rosbags.rosbag2 import StoragePlugin, Writer

    path = tmp_path / "unknown"
    w = Writer(path, version=9, storage_plugin=StoragePlugin.MCAP)
    w.open()
    conn = w.add_connection("/x", "nobody_msgs/msg/Nothing", msgdef="", rihs01="RIHS01_" + "0" * 64)
    w.write(conn, 1, b"\x00\x01\x00\x00")
    w.close()
    with open_bag(path) as bag, pytest.raises(UnknownMessageTypeError, match="nobody_msgs/msg/Nothing"):
        list(bag.messages())
    with pytest.raises(UnknownMessageTypeError):
        EpisodeBagWriter(tmp_path / "w").add_topic("/y", "nobody_msgs/msg/Nothing")


def test_writer_refuses_existing_path(tmp_path):
    with pytest.raises(EpisodeBagError, match="already exists"):
        EpisodeBagWriter(tmp_path)
