"""Publish an episode bag with its original timing (``vla-bag play``), usable in place of ``ros2 bag play``.

The CDR bytes stored in the bag are published as they are (``Publisher.publish(bytes)``), on publishers
with the bag's offered QoS (or the project's default QoS of the topic). Bag time maps to wall time as
``bag_start + start_offset + (wall - wall_start) * rate``. With ``clock`` it publishes ``/clock`` with that
bag time at ``clock_hz`` (and drops a ``/clock`` stored in the bag), so nodes with ``use_sim_time`` run
on the bag's clock.
"""

from __future__ import annotations

import importlib
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vla_policy.data.episode_bag import CLOCK_TOPIC, EpisodeBagReader, MissingTopicError, default_qos

logger = logging.getLogger(__name__)


class PlayerError(RuntimeError):
    """The bag cannot be played; one line says why."""


def message_class(msgtype: str) -> Any:
    """The rclpy message class of ``pkg/msg/Name``."""
    parts = msgtype.split("/")
    if len(parts) != 3:
        raise PlayerError(f"malformed message type '{msgtype}'")
    pkg, kind, name = parts
    try:
        return getattr(importlib.import_module(f"{pkg}.{kind}"), name)
    except (ImportError, AttributeError) as exc:
        raise PlayerError(
            f"message type '{msgtype}' is not available in this ROS environment ({exc})"
        ) from exc


def rclpy_qos(qos: Any) -> Any:
    """rclpy ``QoSProfile`` from a rosbags ``Qos``."""
    from rclpy.duration import Duration
    from rclpy.qos import DurabilityPolicy, HistoryPolicy, LivelinessPolicy, QoSProfile, ReliabilityPolicy

    def dur(t: Any) -> Duration:
        return Duration(seconds=int(t.sec), nanoseconds=int(t.nsec))

    def pick(enum: Any, name: str, default: Any) -> Any:
        return getattr(enum, name, default) if name not in ("UNKNOWN", "BEST_AVAILABLE") else default

    profile = QoSProfile(
        history=pick(HistoryPolicy, qos.history.name, HistoryPolicy.KEEP_LAST),
        depth=max(1, int(qos.depth)),
        reliability=pick(ReliabilityPolicy, qos.reliability.name, ReliabilityPolicy.RELIABLE),
        durability=pick(DurabilityPolicy, qos.durability.name, DurabilityPolicy.VOLATILE),
        liveliness=pick(LivelinessPolicy, qos.liveliness.name, LivelinessPolicy.AUTOMATIC),
    )
    # "infinite" (huge) durations are left at the default
    for attr, value in (
        ("deadline", qos.deadline),
        ("lifespan", qos.lifespan),
        ("liveliness_lease_duration", qos.liveliness_lease_duration),
    ):
        if 0 < int(value.sec) < 2**31 - 1:
            setattr(profile, attr, dur(value))
    return profile


@dataclass(frozen=True)
class PlayOptions:
    rate: float = 1.0
    loop: bool = False
    start_offset: float = 0.0  # seconds into the bag
    clock: bool = False
    clock_hz: float = 100.0
    topics: tuple[str, ...] = ()  # only these (empty = all)
    exclude: tuple[str, ...] = ()
    delay: float = 0.0  # seconds to wait after creating the publishers (discovery)
    reliable: bool = False  # publish every topic reliable (for loss-free replay)


class BagPlayer:
    """Plays one bag on ``node`` (an rclpy Node). ``play(stop)`` blocks until done or ``stop`` is set."""

    def __init__(self, node: Any, bag: str | Path, options: PlayOptions | None = None) -> None:
        self.node = node
        self.bag = Path(bag)
        self.opt = options or PlayOptions()
        if not (self.opt.rate > 0):
            raise PlayerError(f"--rate must be > 0, got {self.opt.rate}")
        if self.opt.start_offset < 0:
            raise PlayerError(f"--start-offset must be >= 0, got {self.opt.start_offset}")
        self.reader = EpisodeBagReader(self.bag).open()
        have = self.reader.topics()
        missing = [t for t in self.opt.topics if t not in have]
        if missing:
            raise MissingTopicError(f"bag {self.bag} has no topic {', '.join(missing)}")
        selected = [t for t in (self.opt.topics or tuple(have)) if t not in self.opt.exclude]
        if self.opt.clock:
            selected = [t for t in selected if t != CLOCK_TOPIC]
        self.topics = selected
        self.publishers: dict[str, Any] = {}
        for t in selected:
            info = have[t]
            qos = info.qos[0] if info.qos else default_qos(t, info.msgtype)
            profile = rclpy_qos(qos)
            if self.opt.reliable:
                from rclpy.qos import ReliabilityPolicy

                profile.reliability = ReliabilityPolicy.RELIABLE
            self.publishers[t] = node.create_publisher(message_class(info.msgtype), t, profile)
        self.clock_pub = None
        if self.opt.clock:
            from rclpy.qos import QoSProfile
            from rosgraph_msgs.msg import Clock

            self.clock_pub = node.create_publisher(Clock, CLOCK_TOPIC, QoSProfile(depth=10))
        self.published: dict[str, int] = dict.fromkeys(selected, 0)

    def close(self) -> None:
        self.reader.close()

    def _publish_clock(self, t_ns: int) -> None:
        from rosgraph_msgs.msg import Clock

        msg = Clock()
        msg.clock.sec, msg.clock.nanosec = divmod(int(t_ns), 1_000_000_000)
        assert self.clock_pub is not None
        self.clock_pub.publish(msg)

    def play(
        self, stop: threading.Event | None = None, on_start: Callable[[], None] | None = None
    ) -> dict[str, int]:
        stop = stop or threading.Event()
        if self.opt.delay > 0:
            stop.wait(self.opt.delay)
        if on_start is not None:
            on_start()
        start_ns = self.reader.start_time + round(self.opt.start_offset * 1e9)
        while not stop.is_set():
            self._play_once(start_ns, stop)
            if not self.opt.loop:
                break
        return self.published

    def _play_once(self, start_ns: int, stop: threading.Event) -> None:
        rate = self.opt.rate
        clock_period = 1.0 / self.opt.clock_hz if self.opt.clock else None
        wall0 = time.monotonic()

        def bag_now() -> int:
            return start_ns + round((time.monotonic() - wall0) * rate * 1e9)

        next_clock = wall0
        if self.clock_pub is not None:
            self._publish_clock(start_ns)
        # From the start, the reader checks that it delivered every message that metadata.yaml lists.
        start = start_ns if start_ns > self.reader.start_time else None
        for m in self.reader.messages(topics=self.topics, decode=False, start=start):
            due = wall0 + (m.timestamp - start_ns) * 1e-9 / rate
            while True:
                if stop.is_set():
                    return
                now = time.monotonic()
                if clock_period is not None and now >= next_clock:
                    self._publish_clock(bag_now())
                    next_clock = max(next_clock + clock_period, now)
                if now >= due:
                    break
                wait = due - now
                if clock_period is not None:
                    wait = min(wait, max(0.0, next_clock - now))
                time.sleep(min(wait, 0.05))
            self.publishers[m.topic].publish(bytes(m.raw))
            self.published[m.topic] += 1
        # keep the clock running to the bag's end time
        if clock_period is not None:
            end_due = wall0 + (self.reader.end_time - start_ns) * 1e-9 / rate
            while not stop.is_set() and time.monotonic() < end_due:
                self._publish_clock(bag_now())
                time.sleep(clock_period)


def play_bag(
    bag: str | Path,
    options: PlayOptions,
    stop: threading.Event,
    node_name: str = "vla_bag_player",
    log: Callable[[str], None] | None = None,
    extra_topics: Sequence[str] = (),
) -> dict[str, int]:
    """Create a node, play the bag, destroy the node (rclpy must be initialised)."""
    import rclpy

    node = rclpy.create_node(node_name)
    player = None
    try:
        player = BagPlayer(node, bag, options)
        if log:
            n = sum(player.reader.topics()[t].count for t in player.topics)
            log(
                f"playing {n} messages on {len(player.topics)} topics from {bag} at rate {options.rate:g}"
                + (" with /clock" if options.clock else "")
            )
        return player.play(stop, on_start=(lambda: log("started")) if log else None)
    finally:
        if player is not None:
            player.close()
        node.destroy_node()
