"""The episode bag format: rosbag2 (MCAP by default, sqlite3 supported), written as rosbag2 Kilted writes it
(:mod:`vla_policy.data.rosbag2_writer`) and read with ``rosbags``.

An episode bag holds:

- cameras: ``sensor_msgs/msg/Image`` or ``sensor_msgs/msg/CompressedImage`` (``/cameras/<name>/image_raw``
  by default),
- ``/joint_states`` (``sensor_msgs/msg/JointState``),
- ``/instruction`` (``std_msgs/msg/String``),
- the commanded actions, the ground truth: ``<group>_controller/commands``
  (``std_msgs/msg/Float64MultiArray``,
  the group's joints in config order) and/or ``<group>_controller/joint_trajectory``
  (``trajectory_msgs/msg/JointTrajectory``),
- optionally ``/clock`` (``rosgraph_msgs/msg/Clock``).

Episode metadata goes in the bag's ``custom_data`` (rosbag2 ``metadata.yaml``, all values strings):
``task``, ``instruction``, ``embodiment``, ``success`` ("true"/"false"/"unknown"), and, written by this
module, ``vla.joint_groups`` and ``vla.cameras`` (JSON) so that a reader knows the joint order of the
commands and the camera names. ``ros_distro`` is ``kilted`` in metadata.yaml and in the storage file.

Reading never loses messages silently: each topic's message count in metadata.yaml is checked against what a
read delivered. When ``rosbags`` cannot map the storage's topics onto metadata.yaml's (it yields nothing
from rosbag2's own test bags, whose storage files carry the QoS in another form than metadata.yaml), the
reader falls back to reading the storage files by topic name (:mod:`vla_policy.data.rosbag2_storage_reader`).

ROS-free: never imports rclpy. Errors are ``EpisodeBagError`` subclasses with a one-line message.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from vla_policy.runtime.joint_groups import GROUP_NAMES, JointGroups

logger = logging.getLogger(__name__)

IMAGE_TYPE = "sensor_msgs/msg/Image"
COMPRESSED_IMAGE_TYPE = "sensor_msgs/msg/CompressedImage"
JOINT_STATE_TYPE = "sensor_msgs/msg/JointState"
STRING_TYPE = "std_msgs/msg/String"
FLOAT_ARRAY_TYPE = "std_msgs/msg/Float64MultiArray"
TRAJECTORY_TYPE = "trajectory_msgs/msg/JointTrajectory"
CLOCK_TYPE = "rosgraph_msgs/msg/Clock"

JOINT_STATES_TOPIC = "/joint_states"
INSTRUCTION_TOPIC = "/instruction"
CLOCK_TOPIC = "/clock"
DEFAULT_CAMERAS: tuple[str, ...] = ("head", "left_wrist", "right_wrist")
DEFAULT_JOINTS = JointGroups(
    left_arm=tuple(f"left_joint_{i}" for i in range(6)),
    right_arm=tuple(f"right_joint_{i}" for i in range(6)),
    claw=("left_gripper", "right_gripper"),
)
DEFAULT_CONTROLLERS: dict[str, str] = {g: f"{g}_controller" for g in GROUP_NAMES}
STORAGES: tuple[str, ...] = ("mcap", "sqlite3")
METADATA_KEYS: tuple[str, ...] = ("task", "instruction", "embodiment", "success")
ROS_DISTRO = "kilted"


class EpisodeBagError(RuntimeError):
    """A bag cannot be used as an episode; the message (one line) says why."""


class TruncatedBagError(EpisodeBagError):
    """The bag is incomplete or corrupt (no metadata, truncated storage file)."""


class MissingTopicError(EpisodeBagError):
    """A topic the episode needs is not in the bag."""


class UnknownMessageTypeError(EpisodeBagError):
    """A topic has a message type that is not known (not in the typestore, no definition in the bag)."""


class JointNamesMismatchError(EpisodeBagError):
    """Joint names in the bag do not match the configured joint groups."""


def camera_topic(name: str) -> str:
    return f"/cameras/{name}/image_raw"


def command_topic(controller: str) -> str:
    return f"/{controller.strip('/')}/commands"


def trajectory_topic(controller: str) -> str:
    return f"/{controller.strip('/')}/joint_trajectory"


def one_line(text: object) -> str:
    s = str(text).strip()
    return s.splitlines()[0] if s else type(text).__name__


# --- typestore ------------------------------------------------------------------------------------------
def _vla_msgs_dirs() -> list[Path]:
    dirs: list[Path] = []
    env = os.environ.get("VLA_MSGS_DIR")
    if env:
        dirs.append(Path(env))
    for prefix in os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep):
        if prefix:
            dirs.append(Path(prefix) / "share" / "vla_msgs" / "msg")
    # source tree: ros2_ws/src/vla_policy/vla_policy/data/episode_bag.py -> ros2_ws/src/vla_msgs/msg
    dirs.append(Path(__file__).resolve().parents[3] / "vla_msgs" / "msg")
    return dirs


def find_vla_msgs_dir() -> Path | None:
    for d in _vla_msgs_dirs():
        if (d / "ActionChunk.msg").is_file():
            return d
    return None


def _installed_msg_file(msgtype: str) -> Path | None:
    """``share/<pkg>/msg/<Name>.msg`` of an installed interface package (AMENT_PREFIX_PATH), if any."""
    pkg, _, name = msgtype.partition("/msg/")
    if not name:
        return None
    prefixes = [p for p in os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep) if p]
    dirs = [Path(p) / "share" / pkg / "msg" for p in prefixes]
    if pkg == "vla_msgs":
        dirs += _vla_msgs_dirs()
    for d in dirs:
        if (d / f"{name}.msg").is_file():
            return d / f"{name}.msg"
    return None


_TYPESTORE: Any = None
_TYPESTORE_LOCK = threading.Lock()


def _register_installed(store: Any, msgtype: str, seen: set[str]) -> bool:
    """Register ``msgtype`` and the types it uses from their installed .msg files; False if one is missing."""
    from rosbags.typesys import get_types_from_msg

    if msgtype in store.fielddefs:
        return True
    if msgtype in seen:
        return False
    seen.add(msgtype)
    path = _installed_msg_file(msgtype)
    if path is None:
        return False
    types = get_types_from_msg(path.read_text(), msgtype)
    for fields in types.values():
        for ref in _referenced_types(fields):
            if not _register_installed(store, ref, seen):
                logger.debug("type %s (used by %s) is not installed", ref, msgtype)
                return False
    store.register(types)
    return True


def _referenced_types(fields: Any) -> list[str]:
    """The message types that the fields of a parsed message (rosbags' (consts, fields)) refer to."""
    refs: list[str] = []
    for _name, (node_type, detail) in fields[1]:
        if node_type.name in ("ARRAY", "SEQUENCE"):
            node_type, detail = detail[0]
        if node_type.name == "NAME":
            refs.append(str(detail))
    return refs


def get_typestore() -> Any:
    """The ROS 2 Kilted typestore with the ``vla_msgs`` types registered (when their .msg files are found).
    Other installed message types are added on demand by :func:`ensure_message_type`."""
    global _TYPESTORE
    with _TYPESTORE_LOCK:
        if _TYPESTORE is None:
            from rosbags.typesys import Stores
            from rosbags.typesys import get_typestore as _get

            store = _get(Stores.ROS2_KILTED)
            msg_dir = find_vla_msgs_dir()
            if msg_dir is not None:
                for path in sorted(msg_dir.glob("*.msg")):
                    _register_installed(store, f"vla_msgs/msg/{path.stem}", set())
            else:
                logger.debug("vla_msgs .msg files not found; vla_msgs types are not registered")
            _TYPESTORE = store
        return _TYPESTORE


def ensure_message_type(msgtype: str) -> bool:
    """Make ``msgtype`` known to the typestore (from its installed .msg file when the store lacks it)."""
    store = get_typestore()
    with _TYPESTORE_LOCK:
        return _register_installed(store, msgtype, set())


# --- QoS ------------------------------------------------------------------------------------------------
def make_qos(
    reliability: str = "reliable", durability: str = "volatile", depth: int = 10, history: str = "keep_last"
) -> Any:
    """A rosbags ``Qos`` from simple names (reliable|best_effort, volatile|transient_local)."""
    from rosbags.interfaces import (
        Qos,
        QosDurability,
        QosHistory,
        QosLiveliness,
        QosReliability,
        QosTime,
    )

    zero = QosTime(0, 0)
    return Qos(
        history=QosHistory[history.upper()],
        depth=int(depth),
        reliability=QosReliability[reliability.upper()],
        durability=QosDurability[durability.upper()],
        deadline=zero,
        lifespan=zero,
        liveliness=QosLiveliness.AUTOMATIC,
        liveliness_lease_duration=zero,
        avoid_ros_namespace_conventions=False,
    )


def default_qos(topic: str, msgtype: str) -> Any:
    """The QoS the project uses for a topic (architecture.md): sensor data, latched instruction, reliable."""
    if msgtype in (IMAGE_TYPE, COMPRESSED_IMAGE_TYPE, JOINT_STATE_TYPE):
        return make_qos("best_effort", "volatile", 5)
    if topic == INSTRUCTION_TOPIC:
        return make_qos("reliable", "transient_local", 1)
    if msgtype == CLOCK_TYPE:
        return make_qos("best_effort", "volatile", 1)
    return make_qos("reliable", "volatile", 10)


# --- metadata -------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class EpisodeMetadata:
    task: str = ""
    instruction: str = ""
    embodiment: str = ""
    success: bool | None = None
    joints: JointGroups = DEFAULT_JOINTS
    cameras: tuple[str, ...] = DEFAULT_CAMERAS
    camera_topics: tuple[str, ...] = ()  # one per camera; empty = camera_topic(name)
    controllers: Mapping[str, str] = field(default_factory=lambda: dict(DEFAULT_CONTROLLERS))
    extra: Mapping[str, str] = field(default_factory=dict)

    def topics_of_cameras(self) -> dict[str, str]:
        topics = self.camera_topics or tuple(camera_topic(c) for c in self.cameras)
        return dict(zip(self.cameras, topics, strict=True))

    def summary(self) -> dict[str, object]:
        """The episode fields that evaluation reports carry (task, instruction, embodiment, success)."""
        return {
            "task": self.task,
            "instruction": self.instruction,
            "embodiment": self.embodiment,
            "success": self.success,
        }

    def to_custom_data(self) -> dict[str, str]:
        success = "unknown" if self.success is None else ("true" if self.success else "false")
        data = {
            "task": self.task,
            "instruction": self.instruction,
            "embodiment": self.embodiment,
            "success": success,
            "vla.joint_groups": json.dumps({g: list(self.joints.group(g)) for g in GROUP_NAMES}),
            "vla.cameras": json.dumps(self.topics_of_cameras()),
            "vla.controllers": json.dumps(dict(self.controllers)),
        }
        data.update({str(k): str(v) for k, v in self.extra.items()})
        return data

    @classmethod
    def from_custom_data(cls, data: Mapping[str, str] | None) -> EpisodeMetadata:
        data = dict(data or {})
        success_text = data.get("success", "unknown").lower()
        success = {"true": True, "false": False}.get(success_text)
        kwargs: dict[str, Any] = {}
        try:
            if "vla.joint_groups" in data:
                groups = json.loads(data["vla.joint_groups"])
                kwargs["joints"] = JointGroups(**{g: tuple(groups.get(g, ())) for g in GROUP_NAMES})
            if "vla.cameras" in data:
                cams = json.loads(data["vla.cameras"])
                kwargs["cameras"] = tuple(cams)
                kwargs["camera_topics"] = tuple(cams.values())
            if "vla.controllers" in data:
                kwargs["controllers"] = dict(json.loads(data["vla.controllers"]))
        except (ValueError, TypeError) as exc:
            raise EpisodeBagError(f"invalid vla.* custom metadata in the bag: {one_line(exc)}") from exc
        known = {*METADATA_KEYS, "vla.joint_groups", "vla.cameras", "vla.controllers"}
        return cls(
            task=data.get("task", ""),
            instruction=data.get("instruction", ""),
            embodiment=data.get("embodiment", ""),
            success=success,
            extra={k: v for k, v in data.items() if k not in known},
            **kwargs,
        )


# --- writing --------------------------------------------------------------------------------------------
def _check_storage(storage: str) -> str:
    if storage not in STORAGES:
        raise EpisodeBagError(f"unknown storage '{storage}'; use one of {', '.join(STORAGES)}")
    return storage


def sec_to_ns(t: float) -> int:
    return round(t * 1e9)


def stamp_dict(t: float) -> tuple[int, int]:
    ns = sec_to_ns(t)
    return ns // 1_000_000_000, ns % 1_000_000_000


class EpisodeBagWriter:
    """Writes an episode bag: ``add_topic`` (type + QoS), then ``write_raw`` (CDR bytes) or ``write`` (a
    rosbags message object), then ``close``. A context manager; the path must not exist yet.

    ``bag_name`` names the storage file (``<bag_name>_0.mcap``) when the directory is written under a
    temporary name and renamed afterwards; by default the directory's own name. Not thread-bound: callers
    that add topics and write from different threads hold one lock around both."""

    def __init__(
        self,
        path: str | Path,
        storage: str = "mcap",
        metadata: EpisodeMetadata | None = None,
        custom_data: Mapping[str, str] | None = None,
        bag_name: str | None = None,
    ) -> None:
        from vla_policy.data.rosbag2_writer import Rosbag2Writer

        self.path = Path(path)
        if self.path.exists():
            raise EpisodeBagError(f"{self.path} already exists; choose a new path")
        self.typestore = get_typestore()
        self._writer = Rosbag2Writer(self.path, _check_storage(storage), name=bag_name, ros_distro=ROS_DISTRO)
        self.counts: dict[str, int] = {}
        data = dict(metadata.to_custom_data() if metadata is not None else {})
        data.update(custom_data or {})
        for k, v in data.items():
            self.set_custom_data(str(k), str(v))
        self._closed = False

    def __enter__(self) -> EpisodeBagWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def storage_file(self) -> Path:
        return self.path / self._writer.file_name

    def set_custom_data(self, key: str, value: str) -> None:
        self._writer.custom_data[key] = str(value)

    def add_topic(self, topic: str, msgtype: str, qos: Sequence[Any] | Any | None = None) -> None:
        if topic in self.counts:
            return
        if not ensure_message_type(msgtype):
            raise UnknownMessageTypeError(f"unknown message type '{msgtype}' for topic {topic}")
        from rosbags.interfaces import Qos

        if qos is None:
            qos = [default_qos(topic, msgtype)]
        elif isinstance(qos, Qos):
            qos = [qos]
        msgdef, _ = self.typestore.generate_msgdef(msgtype, ros_version=2)
        self._writer.add_topic(topic, msgtype, msgdef, self.typestore.hash_rihs01(msgtype), list(qos))
        self.counts[topic] = 0

    def write_raw(self, topic: str, timestamp_ns: int, data: bytes | memoryview) -> None:
        self._writer.write(topic, int(timestamp_ns), data)
        self.counts[topic] += 1

    def write(self, topic: str, timestamp_ns: int, msg: Any) -> None:
        msgtype = self._writer.topics[topic].msgtype
        self.write_raw(topic, timestamp_ns, self.typestore.serialize_cdr(msg, msgtype))

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._writer.close()


# --- message builders (rosbags objects) ------------------------------------------------------------------
class MessageFactory:
    """Builds rosbags message objects of the standard types (for sample bags and tests)."""

    def __init__(self, typestore: Any | None = None) -> None:
        self.ts = typestore or get_typestore()
        self._types = self.ts.types

    def _t(self, name: str) -> Any:
        return self._types[name]

    def time(self, t: float) -> Any:
        sec, nsec = stamp_dict(t)
        return self._t("builtin_interfaces/msg/Time")(sec=sec, nanosec=nsec)

    def duration(self, t: float) -> Any:
        sec, nsec = stamp_dict(max(0.0, t))
        return self._t("builtin_interfaces/msg/Duration")(sec=sec, nanosec=nsec)

    def header(self, t: float, frame_id: str = "") -> Any:
        return self._t("std_msgs/msg/Header")(stamp=self.time(t), frame_id=frame_id)

    def image(self, rgb: np.ndarray, t: float, frame_id: str = "", encoding: str = "rgb8") -> Any:
        arr = np.ascontiguousarray(rgb if encoding == "rgb8" else rgb[..., ::-1])
        h, w = arr.shape[:2]
        return self._t(IMAGE_TYPE)(
            header=self.header(t, frame_id),
            height=h,
            width=w,
            encoding=encoding,
            is_bigendian=0,
            step=w * 3,
            data=arr.reshape(-1),
        )

    def compressed_image(self, rgb: np.ndarray, t: float, frame_id: str = "", fmt: str = "jpeg") -> Any:
        from vla_policy.data.image_codec import encode_compressed

        data = np.frombuffer(encode_compressed(rgb, fmt), dtype=np.uint8)
        return self._t(COMPRESSED_IMAGE_TYPE)(header=self.header(t, frame_id), format=fmt, data=data)

    def joint_state(
        self, names: Sequence[str], positions: np.ndarray, t: float, velocities: np.ndarray | None = None
    ) -> Any:
        vel = np.zeros(0) if velocities is None else np.asarray(velocities, dtype=np.float64)
        return self._t(JOINT_STATE_TYPE)(
            header=self.header(t),
            name=list(names),
            position=np.asarray(positions, dtype=np.float64),
            velocity=vel,
            effort=np.zeros(0, dtype=np.float64),
        )

    def string(self, text: str) -> Any:
        return self._t(STRING_TYPE)(data=text)

    def float_array(self, values: np.ndarray) -> Any:
        layout = self._t("std_msgs/msg/MultiArrayLayout")(dim=[], data_offset=0)
        return self._t(FLOAT_ARRAY_TYPE)(layout=layout, data=np.asarray(values, dtype=np.float64))

    def trajectory(
        self, names: Sequence[str], positions: np.ndarray, times: Sequence[float], t: float
    ) -> Any:
        point_t = self._t("trajectory_msgs/msg/JointTrajectoryPoint")
        empty = np.zeros(0, dtype=np.float64)
        points = [
            point_t(
                positions=np.asarray(p, dtype=np.float64),
                velocities=empty,
                accelerations=empty,
                effort=empty,
                time_from_start=self.duration(tt),
            )
            for p, tt in zip(positions, times, strict=True)
        ]
        return self._t(TRAJECTORY_TYPE)(header=self.header(t), joint_names=list(names), points=points)

    def clock(self, t: float) -> Any:
        return self._t(CLOCK_TYPE)(clock=self.time(t))


# --- reading --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class BagMessage:
    topic: str
    msgtype: str
    timestamp: int  # nanoseconds (log time)
    raw: bytes | memoryview
    msg: Any | None  # decoded (rosbags object) unless read with decode=False

    @property
    def time(self) -> float:
        return self.timestamp * 1e-9


@dataclass(frozen=True)
class TopicSummary:
    topic: str
    msgtype: str
    count: int
    qos: list[Any]


class EpisodeBagReader:
    """Opens an episode bag (a context manager); ``messages()`` yields time-ordered ``BagMessage``s."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._reader: Any = None
        self.typestore = get_typestore()
        self.fallback = False  # True: messages come from the storage files by topic name, not from rosbags

    def open(self) -> EpisodeBagReader:
        from rosbags.rosbag2 import Reader
        from rosbags.rosbag2.errors import ReaderError

        if not self.path.exists():
            raise EpisodeBagError(f"bag {self.path} does not exist")
        if not (self.path / "metadata.yaml").is_file():
            raise TruncatedBagError(
                f"bag {self.path} has no metadata.yaml: it was not closed properly (truncated or still open)"
            )
        try:
            reader = Reader(self.path)
            reader.open()
        except ReaderError as exc:
            raise TruncatedBagError(f"bag {self.path} cannot be opened: {one_line(exc)}") from exc
        except Exception as exc:
            raise TruncatedBagError(f"bag {self.path} is corrupt: {one_line(exc)}") from exc
        self._reader = reader
        self._register_bag_types()
        self.fallback = not self._rosbags_maps_every_topic()
        if self.fallback:
            logger.info(
                "bag %s: rosbags does not map its storage topics onto metadata.yaml's; reading the storage "
                "files by topic name",
                self.path,
            )
        return self

    def _rosbags_maps_every_topic(self) -> bool:
        """Whether rosbags delivers a first message of every topic that metadata.yaml says has some (it
        yields nothing from a topic whose storage copy differs from metadata.yaml's, e.g. in its QoS)."""
        for topic, conns in self._connections_by_topic().items():
            if not sum(c.msgcount for c in conns):
                continue
            try:
                it = self._reader.messages(connections=conns)
                first = next(it, None)
                close = getattr(it, "close", None)
                if close is not None:
                    close()
            except Exception as exc:
                raise TruncatedBagError(f"bag {self.path} is truncated or corrupt: {one_line(exc)}") from exc
            if first is None:
                logger.debug("rosbags yields no message of %s from %s", topic, self.path)
                return False
        return True

    def _connections_by_topic(self) -> dict[str, list[Any]]:
        out: dict[str, list[Any]] = {}
        for conn in self._reader.connections:
            out.setdefault(conn.topic, []).append(conn)
        return out

    def _register_bag_types(self) -> None:
        """Register types whose definitions the bag carries but the typestore lacks (custom messages)."""
        from rosbags.typesys import get_types_from_msg

        for conn in self._reader.connections:
            if conn.msgtype in self.typestore.fielddefs:
                continue
            msgdef = getattr(conn, "msgdef", None)
            text = getattr(msgdef, "data", "") if msgdef is not None else ""
            if not text:
                continue
            try:
                self.typestore.register(_types_from_concatenated(text, conn.msgtype, get_types_from_msg))
            except Exception as exc:
                logger.debug("cannot register %s from the bag: %s", conn.msgtype, exc)

    def __enter__(self) -> EpisodeBagReader:
        return self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._reader is not None:
            self._reader.close()
            self._reader = None

    @property
    def reader(self) -> Any:
        if self._reader is None:
            raise EpisodeBagError("bag is not open")
        return self._reader

    @property
    def custom_data(self) -> dict[str, str]:
        meta = getattr(self.reader, "storage", self.reader).metadata
        return {str(k): str(v) for k, v in (meta.custom or {}).items()}

    @property
    def metadata(self) -> EpisodeMetadata:
        return EpisodeMetadata.from_custom_data(self.custom_data)

    @property
    def start_time(self) -> int:
        return int(self.reader.start_time)

    @property
    def end_time(self) -> int:
        return int(self.reader.end_time)

    @property
    def duration(self) -> float:
        return max(0, self.end_time - self.start_time) * 1e-9

    def topics(self) -> dict[str, TopicSummary]:
        out: dict[str, TopicSummary] = {}
        for conn in self.reader.connections:
            prev = out.get(conn.topic)
            count = conn.msgcount + (prev.count if prev else 0)
            qos = list(getattr(conn.ext, "offered_qos_profiles", []) or [])
            out[conn.topic] = TopicSummary(conn.topic, conn.msgtype, count, qos)
        return out

    def require_topics(self, topics: Mapping[str, Sequence[str]]) -> None:
        """``topics``: topic -> accepted types. Raises MissingTopicError / UnknownMessageTypeError."""
        have = self.topics()
        for topic, types in topics.items():
            if topic not in have:
                raise MissingTopicError(
                    f"bag {self.path} has no topic {topic} (has: {', '.join(sorted(have)) or 'none'})"
                )
            if types and have[topic].msgtype not in types:
                raise UnknownMessageTypeError(
                    f"topic {topic} has type {have[topic].msgtype}, expected {' or '.join(types)}"
                )

    def messages(
        self,
        topics: Iterable[str] | None = None,
        decode: bool = True,
        start: int | None = None,
        stop: int | None = None,
    ) -> Iterator[BagMessage]:
        """Messages in log-time order, optionally only ``topics`` and within [start, stop) nanoseconds.

        A read of whole topics (no ``start``/``stop``) that ends with another count of messages than
        metadata.yaml gives raises :class:`TruncatedBagError`: a reader never loses messages silently."""
        wanted = None if topics is None else set(topics)
        conns = [c for c in self.reader.connections if wanted is None or c.topic in wanted]
        if wanted:
            missing = wanted - {c.topic for c in conns}
            if missing:
                raise MissingTopicError(f"bag {self.path} has no topic {', '.join(sorted(missing))}")
        for conn in conns:
            if decode and conn.msgtype not in self.typestore.fielddefs:
                raise UnknownMessageTypeError(
                    f"unknown message type '{conn.msgtype}' on topic {conn.topic} (no definition in the bag "
                    "or the typestore)"
                )
        if not conns:
            return
        expected: dict[str, int] = {}
        for c in conns:
            expected[c.topic] = expected.get(c.topic, 0) + int(c.msgcount)
        got = dict.fromkeys(expected, 0)
        msgtypes = {c.topic: c.msgtype for c in conns}
        try:
            for topic, timestamp, raw in self._raw_messages(conns, start, stop):
                msgtype = msgtypes[topic]
                msg = None
                if decode:
                    try:
                        msg = self.typestore.deserialize_cdr(raw, msgtype)
                    except Exception as exc:
                        raise TruncatedBagError(
                            f"bag {self.path}: cannot decode a {msgtype} message on {topic} at "
                            f"{timestamp} ns: {one_line(exc)}"
                        ) from exc
                got[topic] += 1
                yield BagMessage(topic, msgtype, int(timestamp), raw, msg)
        except EpisodeBagError:
            raise
        except Exception as exc:
            raise TruncatedBagError(f"bag {self.path} is truncated or corrupt: {one_line(exc)}") from exc
        if start is None and stop is None and got != expected:
            short = [f"{t} {got[t]} of {n}" for t, n in expected.items() if got[t] != n]
            raise TruncatedBagError(
                f"bag {self.path}: read {', '.join(short)} messages that metadata.yaml lists"
                + (" (storage files read by topic name)" if self.fallback else " (rosbags)")
            )

    def _raw_messages(
        self, conns: Sequence[Any], start: int | None, stop: int | None
    ) -> Iterator[tuple[str, int, bytes | memoryview]]:
        if not self.fallback:
            for conn, timestamp, raw in self.reader.messages(connections=conns, start=start, stop=stop):
                yield conn.topic, int(timestamp), raw
            return
        from vla_policy.data.rosbag2_storage_reader import storage_messages

        info = self._bag_info()
        if info.get("compression_mode"):
            raise EpisodeBagError(
                f"bag {self.path}: rosbags cannot map its topics; compressed bags are not read by topic name"
            )
        yield from storage_messages(
            self.path,
            str(info.get("storage_identifier", "")),
            list(info.get("relative_file_paths") or []),
            {c.topic for c in conns},
            start,
            stop,
        )

    def _bag_info(self) -> dict[str, Any]:
        import yaml

        try:
            data = yaml.safe_load((self.path / "metadata.yaml").read_text())
            return dict(data["rosbag2_bagfile_information"])
        except (OSError, yaml.YAMLError, KeyError, TypeError) as exc:
            raise TruncatedBagError(f"bag {self.path}: unreadable metadata.yaml: {one_line(exc)}") from exc


def _types_from_concatenated(text: str, msgtype: str, parse: Any) -> dict[str, Any]:
    """Types from a rosbag2 message definition (main type, then ``MSG: pkg/Name`` sections)."""
    sep = "=" * 80
    parts = [p.strip("\n") for p in text.split(sep)]
    types: dict[str, Any] = dict(parse(parts[0], msgtype))
    for part in parts[1:]:
        lines = part.strip("\n").splitlines()
        if not lines or not lines[0].startswith("MSG: "):
            continue
        name = lines[0][5:].strip()
        if "/msg/" not in name:
            pkg, _, base = name.partition("/")
            name = f"{pkg}/msg/{base}"
        types.update(parse("\n".join(lines[1:]), name))
    return types


def open_bag(path: str | Path) -> EpisodeBagReader:
    return EpisodeBagReader(path).open()


# --- decoding helpers -----------------------------------------------------------------------------------
def image_from_msg(msg: Any, msgtype: str, expected_size: tuple[int, int] | None = None) -> np.ndarray:
    """uint8 [H, W, 3] RGB from a decoded Image/CompressedImage (the node's ``image_codec`` path)."""
    from vla_policy.data.image_codec import decode_compressed, decode_raw

    if msgtype == COMPRESSED_IMAGE_TYPE:
        return decode_compressed(msg.format, np.asarray(msg.data, dtype=np.uint8), expected_size)
    return decode_raw(
        msg.encoding,
        int(msg.height),
        int(msg.width),
        int(msg.step),
        np.asarray(msg.data, dtype=np.uint8),
        expected_size,
    )


def check_joint_names(names: Sequence[str], joints: JointGroups, where: str) -> None:
    missing = [n for n in joints.joint_names if n not in set(names)]
    if missing:
        raise JointNamesMismatchError(
            f"joint names in {where} do not match the config: missing {missing} (bag has {list(names)[:20]})"
        )
