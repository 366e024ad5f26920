"""Record topics into an episode bag (``vla-bag record``).

- Subscriptions are raw (``raw=True``): the exact CDR bytes the publisher sent are stored (rclpy's
  ``serialize_message`` adds trailing bytes that rosbags refuses).
- Topics are discovered from the graph (types and the publishers' QoS); each topic's offered QoS goes into
  ``metadata.yaml``. The subscription matches the publishers: reliable when all of them are reliable,
  transient local when all of them are.
- Timestamps are the receive time on the node clock (``use_sim_time`` gives bag time from ``/clock``).
- ``stop()`` (SIGINT / SIGTERM in the CLI) drains what has arrived, then closes the bag: metadata.yaml is
  written and the storage file is complete.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from vla_policy.episode_bag import EpisodeBagWriter, make_qos

from vla_policy_node.bag_player import message_class

logger = logging.getLogger(__name__)

RECORD_DEPTH = 1000  # history depth of reliable subscriptions (no loss under bursts)


def rosbags_qos(profile: Any) -> Any:
    """A rosbags ``Qos`` from an rclpy ``QoSProfile`` (the publisher's offered QoS)."""
    from rosbags.interfaces import Qos, QosDurability, QosHistory, QosLiveliness, QosReliability, QosTime

    def name(policy: Any) -> str:
        return str(getattr(policy, "name", policy)).upper()

    def t(d: Any) -> Any:
        ns = int(getattr(d, "nanoseconds", 0))
        sec, nsec = divmod(ns, 1_000_000_000)
        return QosTime(min(sec, 2**31 - 1), nsec)

    def enum(cls: Any, value: Any) -> Any:
        try:
            return cls[name(value)]
        except KeyError:
            return cls.SYSTEM_DEFAULT

    return Qos(
        history=enum(QosHistory, profile.history),
        depth=int(profile.depth),
        reliability=enum(QosReliability, profile.reliability),
        durability=enum(QosDurability, profile.durability),
        deadline=t(profile.deadline),
        lifespan=t(profile.lifespan),
        liveliness=enum(QosLiveliness, profile.liveliness),
        liveliness_lease_duration=t(profile.liveliness_lease_duration),
        avoid_ros_namespace_conventions=bool(profile.avoid_ros_namespace_conventions),
    )


class BagRecorder:
    """Records ``topics`` (empty = every topic seen) on ``node`` into a new bag at ``out``."""

    def __init__(
        self,
        node: Any,
        out: str | Path,
        topics: Sequence[str] = (),
        exclude: Sequence[str] = (),
        storage: str = "mcap",
        custom_data: Mapping[str, str] | None = None,
        discovery_period: float = 0.2,
        log: Callable[[str], None] | None = None,
    ) -> None:
        self.node = node
        self.topics = tuple(topics)
        self.exclude = set(exclude)
        self.log = log or logger.info
        self.writer = EpisodeBagWriter(out, storage=storage, custom_data=custom_data)
        self._lock = threading.Lock()
        self._subs: dict[str, Any] = {}
        self._skipped: set[str] = set()
        self.received: dict[str, int] = {}
        self._closed = False
        self._timer = node.create_timer(discovery_period, self.discover)
        self.discover()

    @property
    def subscribed(self) -> tuple[str, ...]:
        return tuple(self._subs)

    def discover(self) -> None:
        if self._closed:
            return
        for topic, types in self.node.get_topic_names_and_types():
            if topic in self._subs or topic in self._skipped or topic in self.exclude:
                continue
            if self.topics and topic not in self.topics:
                continue
            if not self.topics and topic in ("/rosout", "/parameter_events"):
                continue
            if len(types) != 1:
                self.log(f"skipping {topic}: several types {types}")
                self._skipped.add(topic)
                continue
            pubs = self.node.get_publishers_info_by_topic(topic)
            if not pubs:
                continue
            self._subscribe(topic, types[0], [p.qos_profile for p in pubs])

    def _subscribe(self, topic: str, msgtype: str, offered: list[Any]) -> None:
        from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

        try:
            cls = message_class(msgtype)
            qos = [rosbags_qos(p) for p in offered] or [make_qos()]
            self.writer.add_topic(topic, msgtype, qos)
        except Exception as exc:
            self.log(f"skipping {topic}: {exc}")
            self._skipped.add(topic)
            return
        reliable = all(p.reliability == ReliabilityPolicy.RELIABLE for p in offered)
        latched = all(p.durability == DurabilityPolicy.TRANSIENT_LOCAL for p in offered)
        profile = QoSProfile(
            history=HistoryPolicy.KEEP_LAST,
            depth=RECORD_DEPTH if reliable else 100,
            reliability=ReliabilityPolicy.RELIABLE if reliable else ReliabilityPolicy.BEST_EFFORT,
            durability=DurabilityPolicy.TRANSIENT_LOCAL if latched else DurabilityPolicy.VOLATILE,
        )
        self.received[topic] = 0
        self._subs[topic] = self.node.create_subscription(
            cls, topic, lambda data, t=topic: self._on_message(t, data), profile, raw=True
        )
        self.log(
            f"subscribed {topic} [{msgtype}] ({'reliable' if reliable else 'best effort'}"
            f"{', transient local' if latched else ''})"
        )

    def _on_message(self, topic: str, data: bytes) -> None:
        stamp = self.node.get_clock().now().nanoseconds
        with self._lock:
            if self._closed:
                return
            self.writer.write_raw(topic, stamp, data)
            self.received[topic] += 1

    def close(self) -> dict[str, int]:
        with self._lock:
            if self._closed:
                return dict(self.writer.counts)
            self._closed = True
            self.node.destroy_timer(self._timer)
            for sub in self._subs.values():
                self.node.destroy_subscription(sub)
            self.writer.close()
        return dict(self.writer.counts)


def spin_until(executor: Any, stop: threading.Event, deadline: float | None = None) -> None:
    while not stop.is_set():
        if deadline is not None and time.monotonic() >= deadline:
            break
        executor.spin_once(timeout_sec=0.05)


def drain(executor: Any, seconds: float = 0.5) -> None:
    """Handle what has already arrived (without waiting for new traffic beyond ``seconds``)."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        executor.spin_once(timeout_sec=0.02)
