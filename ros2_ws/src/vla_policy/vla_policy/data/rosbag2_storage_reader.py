"""Read a rosbag2 bag's messages straight from its storage files, matching topics by name.

The fallback of :class:`~vla_policy.data.episode_bag.EpisodeBagReader` when ``rosbags`` cannot map the
storage's topics to metadata.yaml's. rosbags 0.11.9 matches each storage topic to a metadata topic by
name, type, serialization format *and offered QoS*, so a bag whose storage file carries the QoS in another
form than metadata.yaml (rosbag2's own test bags: ``sec: 2147483647, nsec: 4294967295`` in the storage,
``sec: 0, nsec: 0`` in metadata.yaml) yields no message at all. Here:

- MCAP: the ``mcap`` library, channels by topic, messages in log-time order (chunk indexes);
- sqlite3: ``messages JOIN topics`` by topic name, ordered by timestamp.

Bags split over several files are merged in time order. Compressed bags are not read here.
"""

from __future__ import annotations

import heapq
import sqlite3
from collections.abc import Collection, Iterator
from pathlib import Path


class StorageReadError(RuntimeError):
    """The storage files cannot be read this way; one line says why."""


def _mcap_messages(
    path: Path, topics: Collection[str], start: int | None, stop: int | None
) -> Iterator[tuple[str, int, bytes]]:
    from mcap.reader import make_reader

    with path.open("rb") as f:
        reader = make_reader(f)
        for _schema, channel, message in reader.iter_messages(
            topics=list(topics), starting_at=start, ending_before=stop, log_time_order=True
        ):
            yield channel.topic, int(message.log_time), message.data


def _sqlite_messages(
    path: Path, topics: Collection[str], start: int | None, stop: int | None
) -> Iterator[tuple[str, int, bytes]]:
    names = sorted(set(topics))
    query = (
        "SELECT topics.name, messages.timestamp, messages.data FROM messages "
        "JOIN topics ON messages.topic_id = topics.id "
        f"WHERE topics.name IN ({','.join('?' for _ in names)})"
    )
    args: list[object] = list(names)
    if start is not None:
        query += " AND messages.timestamp >= ?"
        args.append(start)
    if stop is not None:
        query += " AND messages.timestamp < ?"
        args.append(stop)
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        for name, timestamp, data in db.execute(query + " ORDER BY messages.timestamp", args):
            yield str(name), int(timestamp), bytes(data)
    finally:
        db.close()


def storage_messages(
    bag: str | Path,
    storage_id: str,
    files: Collection[str],
    topics: Collection[str],
    start: int | None = None,
    stop: int | None = None,
) -> Iterator[tuple[str, int, bytes]]:
    """``(topic, log time ns, CDR bytes)`` of ``topics`` in time order, within [start, stop)."""
    read = {"mcap": _mcap_messages, "sqlite3": _sqlite_messages}.get(storage_id)
    if read is None:
        raise StorageReadError(f"storage '{storage_id}' cannot be read directly (expected mcap or sqlite3)")
    paths = [Path(bag) / f for f in files]
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise StorageReadError(f"storage file {missing[0]} is missing")
    streams = [read(p, topics, start, stop) for p in paths]
    if len(streams) == 1:
        yield from streams[0]
    else:
        yield from heapq.merge(*streams, key=lambda m: m[1])
