"""A rosbag2 writer (metadata version 9, MCAP or sqlite3 storage) that writes what rosbag2 itself writes.

rosbags' own writer (0.11.9) puts ``ros_distro: rosbags`` into the copies of the metadata that the storage
file carries (the MCAP ``rosbag2`` metadata record, the sqlite3 ``schema`` and ``metadata`` tables), names
the storage file ``<bag>.mcap`` instead of rosbag2's ``<bag>_0.mcap``, leaves ``topic_type_hash`` off the
MCAP channels, and binds a sqlite3 connection to the thread that opened the bag. This writer keeps to
rosbag2 Kilted instead:

- the storage file is ``<name>_0.mcap`` / ``<name>_0.db3`` (``name``: the bag directory's name, or the
  name the directory will be renamed to),
- MCAP: profile ``ros2``; one schema per type (``ros2msg``), one channel per topic with the metadata
  ``offered_qos_profiles`` (YAML) and ``topic_type_hash`` (RIHS01); a ``rosbag2`` metadata record with
  ``serialized_metadata`` and ``ROS_DISTRO``,
- sqlite3: schema version 4 (tables ``schema``, ``metadata``, ``topics``, ``message_definitions``,
  ``messages``), ``ros_distro`` in ``schema`` and in the serialized metadata,
- QoS durations as rosbag2 writes them: infinite is ``{sec: 9223372036, nsec: 854775807}``
  (``RMW_DURATION_INFINITE``), the same in metadata.yaml and in the storage file.

Message definitions and RIHS01 type hashes come from the rosbags typestore; messages are CDR bytes.
Not thread-bound: the caller serialises access (one writer thread, or a lock).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

METADATA_VERSION = 9
SQLITE_SCHEMA_VERSION = 4
INFINITE_DURATION = (9_223_372_036, 854_775_807)  # RMW_DURATION_INFINITE: 2**63 - 1 ns
STORAGE_SUFFIX = {"mcap": ".mcap", "sqlite3": ".db3"}

_SQLITE_TABLES = """
CREATE TABLE schema(schema_version INTEGER PRIMARY KEY, ros_distro TEXT NOT NULL);
CREATE TABLE metadata(id INTEGER PRIMARY KEY, metadata_version INTEGER NOT NULL, metadata TEXT NOT NULL);
CREATE TABLE topics(id INTEGER PRIMARY KEY, name TEXT NOT NULL, type TEXT NOT NULL,
    serialization_format TEXT NOT NULL, offered_qos_profiles TEXT NOT NULL,
    type_description_hash TEXT NOT NULL);
CREATE TABLE message_definitions(id INTEGER PRIMARY KEY, topic_type TEXT NOT NULL, encoding TEXT NOT NULL,
    encoded_message_definition TEXT NOT NULL, type_description_hash TEXT NOT NULL);
CREATE TABLE messages(id INTEGER PRIMARY KEY, topic_id INTEGER NOT NULL, timestamp INTEGER NOT NULL,
    data BLOB NOT NULL);
CREATE INDEX timestamp_idx ON messages (timestamp ASC);
"""


def storage_file_name(name: str, storage: str) -> str:
    """rosbag2's name of the first (only) storage file of bag ``name``: ``<name>_0.mcap``."""
    return f"{name}_0{STORAGE_SUFFIX[storage]}"


def qos_profiles(qos: Sequence[Any]) -> list[dict[str, Any]]:
    """rosbags ``Qos`` objects as rosbag2's version-9 QoS mappings (enum names in lower case)."""

    def t(d: Any) -> dict[str, int]:
        return {"sec": int(d.sec), "nsec": int(d.nsec)}

    return [
        {
            "history": q.history.name.lower(),
            "depth": int(q.depth),
            "reliability": q.reliability.name.lower(),
            "durability": q.durability.name.lower(),
            "deadline": t(q.deadline),
            "lifespan": t(q.lifespan),
            "liveliness": q.liveliness.name.lower(),
            "liveliness_lease_duration": t(q.liveliness_lease_duration),
            "avoid_ros_namespace_conventions": bool(q.avoid_ros_namespace_conventions),
        }
        for q in qos
    ]


def _dump(data: Any) -> str:
    return yaml.safe_dump(data, default_flow_style=False, sort_keys=False)


@dataclass
class _Topic:
    id: int
    name: str
    msgtype: str
    type_hash: str
    qos: list[dict[str, Any]]
    count: int = 0


class _McapStorage:
    def __init__(self, path: Path, ros_distro: str) -> None:
        from mcap.writer import CompressionType, Writer

        self.ros_distro = ros_distro
        self._file = path.open("xb")
        self._w = Writer(self._file, compression=CompressionType.NONE)
        self._w.start(profile="ros2", library="vla_policy rosbag2_writer")
        self._schemas: dict[str, int] = {}
        self._channels: dict[int, int] = {}

    def add_topic(self, topic: _Topic, msgdef: str, qos_yaml: str) -> None:
        if topic.msgtype not in self._schemas:
            self._schemas[topic.msgtype] = self._w.register_schema(topic.msgtype, "ros2msg", msgdef.encode())
        self._channels[topic.id] = self._w.register_channel(
            topic.name,
            "cdr",
            self._schemas[topic.msgtype],
            {"offered_qos_profiles": qos_yaml, "topic_type_hash": topic.type_hash},
        )

    def write(self, topic_id: int, timestamp: int, data: bytes | memoryview) -> None:
        self._w.add_message(self._channels[topic_id], timestamp, bytes(data), timestamp)

    def close(self, serialized_metadata: str) -> None:
        self._w.add_metadata(
            "rosbag2", {"serialized_metadata": serialized_metadata, "ROS_DISTRO": self.ros_distro}
        )
        self._w.finish()
        self._file.close()

    def abort(self) -> None:
        self._file.close()


class _Sqlite3Storage:
    def __init__(self, path: Path, ros_distro: str) -> None:
        if path.exists():
            raise FileExistsError(f"{path} exists already")
        # The recorder adds topics from the executor's thread and writes from its writer thread, under
        # one lock: the connection must not be bound to the thread that opened it.
        self._db = sqlite3.connect(str(path), check_same_thread=False)
        self._db.executescript(_SQLITE_TABLES)
        self._db.execute(
            "INSERT INTO schema(schema_version, ros_distro) VALUES (?, ?)",
            (SQLITE_SCHEMA_VERSION, ros_distro),
        )
        self._types: set[str] = set()

    def add_topic(self, topic: _Topic, msgdef: str, qos_yaml: str) -> None:
        if topic.msgtype not in self._types:
            self._types.add(topic.msgtype)
            self._db.execute(
                "INSERT INTO message_definitions(topic_type, encoding, encoded_message_definition, "
                "type_description_hash) VALUES (?, ?, ?, ?)",
                (topic.msgtype, "ros2msg", msgdef, topic.type_hash),
            )
        self._db.execute(
            "INSERT INTO topics(id, name, type, serialization_format, offered_qos_profiles, "
            "type_description_hash) VALUES (?, ?, ?, ?, ?, ?)",
            (topic.id, topic.name, topic.msgtype, "cdr", qos_yaml, topic.type_hash),
        )

    def write(self, topic_id: int, timestamp: int, data: bytes | memoryview) -> None:
        self._db.execute(
            "INSERT INTO messages(topic_id, timestamp, data) VALUES (?, ?, ?)",
            (topic_id, timestamp, bytes(data)),
        )

    def close(self, serialized_metadata: str) -> None:
        self._db.execute(
            "INSERT INTO metadata(metadata_version, metadata) VALUES (?, ?)",
            (METADATA_VERSION, serialized_metadata),
        )
        self._db.commit()
        self._db.close()

    def abort(self) -> None:
        self._db.close()


class Rosbag2Writer:
    """Writes one rosbag2 bag directory: ``add_topic`` then ``write`` (CDR bytes), then ``close`` (writes
    the storage file's summary and metadata.yaml). The directory must not exist yet."""

    def __init__(
        self, path: str | Path, storage: str = "mcap", name: str | None = None, ros_distro: str = "kilted"
    ) -> None:
        if storage not in STORAGE_SUFFIX:
            raise ValueError(f"unknown storage '{storage}'; use one of {', '.join(STORAGE_SUFFIX)}")
        self.path = Path(path)
        self.storage_id = storage
        self.ros_distro = ros_distro
        self.file_name = storage_file_name(name or self.path.name, storage)
        self.path.mkdir(parents=True, exist_ok=False)
        cls = _McapStorage if storage == "mcap" else _Sqlite3Storage
        self._storage: _McapStorage | _Sqlite3Storage | None = cls(self.path / self.file_name, ros_distro)
        self.topics: dict[str, _Topic] = {}
        self.custom_data: dict[str, str] = {}
        self._t_min = 2**63 - 1
        self._t_max = 0

    def add_topic(
        self, topic: str, msgtype: str, msgdef: str, type_hash: str, qos: Sequence[Any] = ()
    ) -> None:
        """Register ``topic`` (rosbags ``Qos`` profiles; ``msgdef``: the concatenated .msg text)."""
        if topic in self.topics:
            raise ValueError(f"topic {topic} is already in the bag")
        t = _Topic(len(self.topics) + 1, topic, msgtype, type_hash, qos_profiles(qos))
        self._open().add_topic(t, msgdef, _dump(t.qos).strip())
        self.topics[topic] = t

    def write(self, topic: str, timestamp: int, data: bytes | memoryview) -> None:
        t = self.topics[topic]
        self._open().write(t.id, int(timestamp), data)
        t.count += 1
        self._t_min = min(self._t_min, int(timestamp))
        self._t_max = max(self._t_max, int(timestamp))

    def _open(self) -> _McapStorage | _Sqlite3Storage:
        if self._storage is None:
            raise ValueError(f"bag {self.path} is closed")
        return self._storage

    def metadata(self) -> dict[str, Any]:
        """The ``rosbag2_bagfile_information`` mapping (metadata.yaml, version 9)."""
        count = sum(t.count for t in self.topics.values())
        start = self._t_min if count else 0
        duration = self._t_max - self._t_min if count else 0
        return {
            "version": METADATA_VERSION,
            "storage_identifier": self.storage_id,
            "duration": {"nanoseconds": duration},
            "starting_time": {"nanoseconds_since_epoch": start},
            "message_count": count,
            "topics_with_message_count": [
                {
                    "topic_metadata": {
                        "name": t.name,
                        "type": t.msgtype,
                        "serialization_format": "cdr",
                        "offered_qos_profiles": t.qos,
                        "type_description_hash": t.type_hash,
                    },
                    "message_count": t.count,
                }
                for t in self.topics.values()
            ],
            "compression_format": "",
            "compression_mode": "",
            "relative_file_paths": [self.file_name],
            "files": [
                {
                    "path": self.file_name,
                    "starting_time": {"nanoseconds_since_epoch": start},
                    "duration": {"nanoseconds": duration},
                    "message_count": count,
                }
            ],
            "custom_data": dict(self.custom_data),
            "ros_distro": self.ros_distro,
        }

    def close(self) -> None:
        """Finish the storage file, then write metadata.yaml (atomically: a bag without it is unfinished)."""
        storage, self._storage = self._storage, None
        if storage is None:
            return
        info = self.metadata()
        storage.close(_dump(info))
        text = _dump({"rosbag2_bagfile_information": info})
        tmp = self.path / "metadata.yaml.tmp"
        tmp.write_text(text)
        tmp.replace(self.path / "metadata.yaml")

    def abort(self) -> None:
        """Close the storage file without metadata.yaml (the bag reads as unfinished)."""
        storage, self._storage = self._storage, None
        if storage is not None:
            storage.abort()
