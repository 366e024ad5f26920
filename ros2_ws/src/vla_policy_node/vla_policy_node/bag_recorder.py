"""Record topics into an episode bag (``vla-bag record``).

- Subscriptions are raw (``raw=True``): the exact CDR bytes the publisher sent are stored (rclpy's
  ``serialize_message`` adds trailing bytes that rosbags refuses).
- Topics are discovered from the graph (types and the publishers' QoS); each topic's offered QoS goes into
  ``metadata.yaml``. The subscription matches the publishers: reliable when all of them are reliable,
  transient local when all of them are. Reliable topics are subscribed with KEEP_ALL history (the reader
  never overwrites a sample it has not handed over), best-effort ones with KEEP_LAST of a large depth.
- Intake never waits on disk: a subscription callback only stamps the message and queues ``(stamp,
  bytes)`` on its topic's queue; a dedicated writer thread writes the oldest queued message (over all
  topics) into the bag.
- The queues are bounded by ``max_queue_bytes`` (a memory cap). When the disk cannot keep up and a new
  message would take the queued bytes over the cap, the policy is **drop oldest per topic**: the oldest
  queued message of the new message's topic is dropped (of the topic holding the most queued bytes when
  that topic has nothing else queued), until the queue fits the cap again (it exceeds the cap by at most
  the newest message and the one being written). Every drop is counted per topic, logged once per topic,
  reported in ``stats()`` and the CLI's summary, and written into the bag's metadata.yaml ``custom_data``
  (``vla.recorder.dropped``: JSON topic -> count, ``vla.recorder.max_queue_bytes``,
  ``vla.recorder.drop_policy``).
- Timestamps are the receive time on the node clock (``use_sim_time`` gives bag time from ``/clock``).
- Every installed message type records (the bag's type definitions come from the installed .msg files).
- On SIGINT / SIGTERM the CLI first ``drain``s: it keeps taking messages until ``RELIABLE_DRAIN_S`` after
  the last reliable one (at most that long), since a sample lost on the wire is only resent after the
  publisher's next heartbeat. Then ``close()`` stops the subscriptions, lets the writer
  thread write everything still queued, then closes the bag: metadata.yaml is written and the storage file
  is complete. ``stats()`` gives the per-topic counts (received, written), bytes and the write rate.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from vla_policy.data.episode_bag import EpisodeBagWriter, make_qos

from vla_policy_node.bag_player import message_class

logger = logging.getLogger(__name__)

RECORD_DEPTH = 1000  # history depth of best-effort subscriptions (reliable ones keep all)
# How long the stop waits after the last reliable message: longer than a reliable writer's heartbeat period
# (3 s by default in Fast DDS), after which it resends what the recorder missed.
RELIABLE_DRAIN_S = 3.5
DEFAULT_MAX_QUEUE_BYTES = 512 * 1024 * 1024  # the writer queue's memory cap
DROP_POLICY = "drop_oldest_per_topic"


def rosbags_qos(profile: Any) -> Any:
    """A rosbags ``Qos`` from an rclpy ``QoSProfile`` (the publisher's offered QoS)."""
    from rosbags.interfaces import Qos, QosDurability, QosHistory, QosLiveliness, QosReliability, QosTime

    def name(policy: Any) -> str:
        return str(getattr(policy, "name", policy)).upper()

    def t(d: Any) -> Any:
        # rosbag2's encoding: infinite (2**63 - 1 ns) is {sec: 9223372036, nsec: 854775807}
        sec, nsec = divmod(int(getattr(d, "nanoseconds", 0)), 1_000_000_000)
        return QosTime(sec, nsec)

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
    """Records ``topics`` (empty = every topic seen) on ``node`` into a new bag at ``out``; the writer
    queue holds at most ``max_queue_bytes`` (see the module docstring for the drop policy)."""

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
        max_queue_bytes: int = DEFAULT_MAX_QUEUE_BYTES,
    ) -> None:
        if max_queue_bytes <= 0:
            raise ValueError(f"the queue cap must be > 0 bytes, got {max_queue_bytes}")
        self.node = node
        self.out = Path(out)
        self.topics = tuple(topics)
        self.exclude = set(exclude)
        self.log = log or logger.info
        self.max_queue_bytes = int(max_queue_bytes)
        self.writer = EpisodeBagWriter(out, storage=storage, custom_data=custom_data)
        # intake state (queues, counts, _closed), shared by the callbacks and the writer thread
        self._lock = threading.Lock()
        self._has_work = threading.Condition(self._lock)
        # the bag writer: add_topic from discovery, writes from the writer thread, close
        self._write_lock = threading.Lock()
        self._pending: dict[str, deque[tuple[int, int, bytes]]] = {}  # topic -> (seq, stamp, bytes)
        self._pending_bytes: dict[str, int] = {}
        self._seq = 0
        self._in_flight = 0  # 1 while the writer thread writes a message it took off the queues
        self._stopping = False
        self._subs: dict[str, Any] = {}
        self._skipped: set[str] = set()
        self.received: dict[str, int] = {}
        self.dropped: dict[str, int] = {}
        self.bytes_written: dict[str, int] = {}
        self._queued = 0  # messages received and not yet written (nor dropped)
        self._queued_bytes = 0
        self.max_queued = 0
        self.max_queued_bytes = 0
        self.last_intake = self.last_reliable_intake = float("-inf")
        self._reliable: set[str] = set()
        self.error: BaseException | None = None
        self._closed = False
        self._t_start = time.monotonic()
        self._t_first_write: float | None = None
        self._t_last_write: float | None = None
        self._close_s = 0.0
        self._thread = threading.Thread(target=self._write_loop, name="bag-writer", daemon=True)
        self._thread.start()
        # discovery runs on the steady clock: under use_sim_time a timer on the node's clock waits for
        # /clock, which a player starts only once the recorder has subscribed (a deadlock whenever the
        # first discovery ran before DDS had seen the publishers, as on a loaded machine)
        from rclpy.clock import Clock, ClockType

        steady = Clock(clock_type=ClockType.STEADY_TIME)
        self._timer = node.create_timer(discovery_period, self.discover, clock=steady)
        self.discover()

    @property
    def subscribed(self) -> tuple[str, ...]:
        return tuple(self._subs)

    @property
    def queued(self) -> int:
        """Messages received and not yet written (nor dropped)."""
        return self._queued

    @property
    def queued_bytes(self) -> int:
        return self._queued_bytes

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
            with self._write_lock:
                self.writer.add_topic(topic, msgtype, qos)
        except Exception as exc:
            self.log(f"skipping {topic}: {exc}")
            self._skipped.add(topic)
            return
        reliable = all(p.reliability == ReliabilityPolicy.RELIABLE for p in offered)
        latched = all(p.durability == DurabilityPolicy.TRANSIENT_LOCAL for p in offered)
        profile = QoSProfile(
            history=HistoryPolicy.KEEP_ALL if reliable else HistoryPolicy.KEEP_LAST,
            depth=RECORD_DEPTH,
            reliability=ReliabilityPolicy.RELIABLE if reliable else ReliabilityPolicy.BEST_EFFORT,
            durability=DurabilityPolicy.TRANSIENT_LOCAL if latched else DurabilityPolicy.VOLATILE,
        )
        with self._lock:
            self.received[topic] = 0
            self.dropped[topic] = 0
            self.bytes_written[topic] = 0
            self._pending[topic] = deque()
            self._pending_bytes[topic] = 0
            if reliable:
                self._reliable.add(topic)
        self._subs[topic] = self.node.create_subscription(
            cls, topic, lambda data, t=topic: self._on_message(t, data), profile, raw=True
        )
        self.log(
            f"subscribed {topic} [{msgtype}] ({'reliable' if reliable else 'best effort'}"
            f"{', transient local' if latched else ''})"
        )

    def _on_message(self, topic: str, data: bytes) -> None:
        """Subscription callback: stamp and enqueue (dropping per the policy), never touch the disk."""
        stamp = self.node.get_clock().now().nanoseconds
        first_drop: list[str] = []
        with self._lock:
            if self._closed:
                return
            self.received[topic] += 1
            self._seq += 1
            self._pending[topic].append((self._seq, stamp, data))
            self._pending_bytes[topic] += len(data)
            self._queued += 1
            self._queued_bytes += len(data)
            while self._queued_bytes > self.max_queue_bytes and self._queued - self._in_flight > 1:
                victim = topic if len(self._pending[topic]) > 1 else self._largest_queue(topic)
                _, _, old = self._pending[victim].popleft()
                self._pending_bytes[victim] -= len(old)
                self._queued -= 1
                self._queued_bytes -= len(old)
                self.dropped[victim] += 1
                if self.dropped[victim] == 1:
                    first_drop.append(victim)
            self.max_queued = max(self.max_queued, self._queued)
            self.max_queued_bytes = max(self.max_queued_bytes, self._queued_bytes)
            self.last_intake = time.monotonic()
            if topic in self._reliable:
                self.last_reliable_intake = self.last_intake
            self._has_work.notify()
        for victim in first_drop:
            self.log(
                f"warning: the disk does not keep up: dropping the oldest queued messages of {victim} "
                f"(queue cap {self.max_queue_bytes / 1e6:.0f} MB); drops are counted"
            )

    def _largest_queue(self, keep: str) -> str:
        """The topic holding the most queued bytes other than ``keep`` (whose one message is the new one)."""
        return max((t for t in self._pending if t != keep and self._pending[t]), key=self._pending_bytes.get)

    def _next(self) -> tuple[str, int, bytes] | None:
        """The oldest queued message over all topics (blocks); None when stopping with nothing left."""
        with self._has_work:
            while not self._queued and not self._stopping:
                self._has_work.wait()
            if not self._queued:
                return None
            topic = min((t for t, q in self._pending.items() if q), key=lambda t: self._pending[t][0][0])
            _, stamp, data = self._pending[topic].popleft()
            self._pending_bytes[topic] -= len(data)
            self._in_flight = 1
            return topic, stamp, data

    def _write_loop(self) -> None:
        while (item := self._next()) is not None:
            topic, stamp, data = item
            if self.error is None:
                try:
                    with self._write_lock:
                        self.writer.write_raw(topic, stamp, data)
                    now = time.monotonic()
                    if self._t_first_write is None:
                        self._t_first_write = now
                    self._t_last_write = now
                    self.bytes_written[topic] += len(data)
                except BaseException as exc:  # disk full, ...: keep draining the queue, report at close
                    self.error = exc
                    self.log(f"error: writing {topic} failed: {exc}")
            with self._lock:
                self._in_flight = 0
                self._queued -= 1
                self._queued_bytes -= len(data)

    def close(self) -> dict[str, int]:
        """Stop intake, write everything queued, finalise the bag. Returns the written counts per topic."""
        with self._lock:
            if self._closed:
                return dict(self.writer.counts)
            self._closed = True
        t0 = time.monotonic()
        self.node.destroy_timer(self._timer)
        for sub in self._subs.values():
            self.node.destroy_subscription(sub)
        with self._has_work:
            self._stopping = True
            self._has_work.notify()
        self._thread.join()
        with self._write_lock:
            self.writer.set_custom_data(
                "vla.recorder.dropped", json.dumps(dict(sorted(self.dropped.items())))
            )
            self.writer.set_custom_data("vla.recorder.max_queue_bytes", str(self.max_queue_bytes))
            self.writer.set_custom_data("vla.recorder.drop_policy", DROP_POLICY)
            self.writer.close()
        self._close_s = time.monotonic() - t0
        if self.error is not None:
            raise RuntimeError(f"recording to {self.out} failed: {self.error}") from self.error
        return dict(self.writer.counts)

    def stats(self) -> dict[str, Any]:
        """Per-topic received/written/dropped counts and bytes, the write rate and the queue's high-water
        mark."""
        written = dict(self.writer.counts)
        total_bytes = sum(self.bytes_written.values())
        t_first, t_last = self._t_first_write, self._t_last_write
        span = (t_last - t_first) if t_first is not None and t_last is not None else 0.0
        return {
            "bag": str(self.out),
            "topics": {
                t: {
                    "received": self.received.get(t, 0),
                    "written": written.get(t, 0),
                    "dropped": self.dropped.get(t, 0),
                    "bytes": self.bytes_written.get(t, 0),
                }
                for t in sorted(set(self.received) | set(written))
            },
            "received": sum(self.received.values()),
            "written": sum(written.values()),
            "dropped": sum(self.dropped.values()),
            "drop_policy": DROP_POLICY,
            "max_queue_mb": round(self.max_queue_bytes / 1e6, 2),
            "lost_in_recorder": sum(self.received.values())
            - sum(written.values())
            - sum(self.dropped.values()),
            "bytes_written": total_bytes,
            "elapsed_s": round(time.monotonic() - self._t_start, 3),
            "write_mb_per_s": round(total_bytes / span / 1e6, 2) if span > 0 else 0.0,
            "max_queued_messages": self.max_queued,
            "max_queued_mb": round(self.max_queued_bytes / 1e6, 2),
            "finalise_s": round(self._close_s, 3),
            "error": None if self.error is None else str(self.error),
        }


def spin_until(executor: Any, stop: threading.Event, deadline: float | None = None) -> None:
    while not stop.is_set():
        if deadline is not None and time.monotonic() >= deadline:
            break
        executor.spin_once(timeout_sec=0.05)


def drain(
    executor: Any, seconds: float = 0.5, recorder: BagRecorder | None = None, window: float = RELIABLE_DRAIN_S
) -> None:
    """Handle what has already arrived: spin for ``seconds``. With a ``recorder`` that got reliable traffic
    recently, go on until ``window`` seconds after its last reliable message (at most ``window`` seconds in
    all): a sample lost on the wire just before the stop is resent after the publisher's next heartbeat
    (every 3 s in Fast DDS by default), so a burst in flight at the stop is kept."""
    start = time.monotonic()
    while True:
        end = start + seconds
        if recorder is not None:
            end = max(end, min(recorder.last_reliable_intake + window, start + window))
        if time.monotonic() >= end:
            break
        executor.spin_once(timeout_sec=0.02)
