"""The process worker's channel: arrays in shared memory, small JSON control messages beside them.

Two ``SharedRegion``s (anonymous ``memfd``s mapped by both processes) carry the arrays: the runtime writes
a request's images, state and RTC ``previous`` chunk into the request region, the worker writes the action
chunk into the result region. A JSON message over a ``multiprocessing.connection.Connection``
(``send_bytes``: length-prefixed bytes on a Unix socket) says where each array lies: offset, shape and
dtype. Nothing is pickled, and only plain numeric dtypes cross (no object arrays).

A memfd has no name in ``/dev/shm``: the kernel frees it when the last process holding it closes it or
dies, so a SIGKILLed worker (or runtime) cannot leak a segment. A region grows when an array does not
fit (the writer truncates the file longer, the reader maps it again at its new size); it never shrinks,
so a mapping of either side stays valid. The two sides take turns (one request in flight, its result
written before the message that announces it), so a region is never written while it is read.
"""

from __future__ import annotations

import contextlib
import json
import mmap
import os
from collections.abc import Mapping
from multiprocessing.connection import Connection
from typing import Any

import numpy as np

from vla_policy.model.flow_matching import RTCGuidance
from vla_policy.observation import Observation
from vla_policy.runtime.inference import InferenceRequest, InferenceResult

ALIGN = 64  # array offsets are cache-line aligned
MAX_MESSAGE_BYTES = 1 << 20  # control messages only: arrays never travel in them
NUMERIC_KINDS = "biuf"  # bool, signed, unsigned, float


class ChannelError(ValueError):
    """A message or array descriptor that does not follow the protocol."""


class SharedRegion:
    """A growable block of memory shared through a memfd. ``fd`` is passed to the other process."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self._map: mmap.mmap | None = None
        self._mapped = 0

    @classmethod
    def create(cls, name: str, size: int) -> SharedRegion:
        """A new region of ``size`` bytes (close-on-exec: pass it to a child with ``pass_fds``)."""
        region = cls(os.memfd_create(name))
        os.ftruncate(region.fd, size)
        return region

    @property
    def size(self) -> int:
        return os.fstat(self.fd).st_size

    def ensure(self, size: int) -> None:
        """Grow the region to at least ``size`` bytes (doubling, so repeated growth stays rare)."""
        current = self.size
        if size > current:
            os.ftruncate(self.fd, max(size, 2 * current))

    def buffer(self, size: int) -> mmap.mmap:
        """A writable mapping that covers at least ``size`` bytes (mapped again after the region grew)."""
        if self._map is None or self._mapped < size:
            total = self.size
            if total < size:
                raise ChannelError(f"shared memory region has {total} bytes, {size} needed")
            self._release()
            self._map = mmap.mmap(self.fd, total)
            self._mapped = total
        return self._map

    def _release(self) -> None:
        if self._map is not None:
            # an array that still views the old mapping keeps it alive until that array goes
            with contextlib.suppress(BufferError):
                self._map.close()
        self._map = None
        self._mapped = 0

    def close(self) -> None:
        """Unmap and close the fd; idempotent."""
        self._release()
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def _aligned(n: int) -> int:
    return (n + ALIGN - 1) // ALIGN * ALIGN


def write_arrays(region: SharedRegion, arrays: Mapping[str, np.ndarray]) -> dict[str, dict[str, Any]]:
    """Copy ``arrays`` into ``region`` back to back -> name -> descriptor {offset, shape, dtype}."""
    prepared = {name: np.asarray(a) for name, a in arrays.items()}
    layout: dict[str, dict[str, Any]] = {}
    offset = 0
    for name, a in prepared.items():
        if a.dtype.kind not in NUMERIC_KINDS:
            raise ChannelError(f"array {name!r} has dtype {a.dtype}: only numeric arrays cross the channel")
        layout[name] = {"offset": offset, "shape": list(a.shape), "dtype": a.dtype.str}
        offset += _aligned(a.nbytes)
    region.ensure(offset)
    buf = region.buffer(offset)
    for name, a in prepared.items():
        d = layout[name]
        np.copyto(np.ndarray(a.shape, a.dtype, buffer=buf, offset=d["offset"]), a)
    return layout


def read_array(region: SharedRegion, desc: Mapping[str, Any], copy: bool) -> np.ndarray:
    """The array that ``desc`` describes: a view into the region, or a private copy when ``copy``."""
    try:
        dtype = np.dtype(str(desc["dtype"]))
        shape = tuple(int(n) for n in desc["shape"])
        offset = int(desc["offset"])
    except (KeyError, TypeError, ValueError) as exc:
        raise ChannelError(f"bad array descriptor {dict(desc)}: {exc}") from exc
    if dtype.kind not in NUMERIC_KINDS or any(n < 0 for n in shape) or offset < 0:
        raise ChannelError(f"bad array descriptor {dict(desc)}: numeric dtype and sizes >= 0 expected")
    end = offset + dtype.itemsize * int(np.prod(shape, dtype=np.int64))
    view = np.ndarray(shape, dtype, buffer=region.buffer(end), offset=offset)
    return view.copy() if copy else view


# ---- messages -------------------------------------------------------------------------------------


def send_message(conn: Connection, message: Mapping[str, Any]) -> None:
    conn.send_bytes(json.dumps(message).encode())


def recv_message(conn: Connection) -> dict[str, Any]:
    """The next message (blocking). EOFError when the other side is gone; ChannelError when not JSON."""
    data = conn.recv_bytes(MAX_MESSAGE_BYTES)
    try:
        message = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ChannelError(f"message is not JSON: {exc}") from exc
    if not isinstance(message, dict) or not isinstance(message.get("type"), str):
        raise ChannelError("message is not an object with a 'type'")
    return message


def encode_request(request: InferenceRequest, region: SharedRegion) -> dict[str, Any]:
    """The ``infer`` message of ``request``; its arrays are written into ``region``."""
    obs = request.observation
    arrays = {f"image/{name}": img for name, img in obs.images.items()}
    arrays["state"] = obs.state
    if request.rtc is not None:
        arrays["rtc/previous"] = request.rtc.previous
    layout = write_arrays(region, arrays)
    rtc = request.rtc
    return {
        "type": "infer",
        "id": request.request_id,
        "seed": request.seed,
        "images": [[name, layout[f"image/{name}"]] for name in obs.images],
        "state": layout["state"],
        "instruction": obs.instruction,
        "embodiment_id": obs.embodiment_id,
        "stamp": obs.stamp,
        "rtc": None
        if rtc is None
        else {
            "previous": layout["rtc/previous"],
            "frozen_steps": rtc.frozen_steps,
            "overlap_steps": rtc.overlap_steps,
            "max_guidance_weight": rtc.max_guidance_weight,
        },
    }


def decode_request(message: Mapping[str, Any], region: SharedRegion) -> InferenceRequest:
    """The request of an ``infer`` message; its arrays view ``region`` (valid until the next request)."""
    try:
        images = {str(name): read_array(region, desc, copy=False) for name, desc in message["images"]}
        rtc_msg = message["rtc"]
        rtc = None
        if rtc_msg is not None:
            rtc = RTCGuidance(
                previous=read_array(region, rtc_msg["previous"], copy=False),
                frozen_steps=int(rtc_msg["frozen_steps"]),
                overlap_steps=int(rtc_msg["overlap_steps"]),
                max_guidance_weight=float(rtc_msg["max_guidance_weight"]),
            )
        seed = message["seed"]
        observation = Observation(
            images=images,
            state=read_array(region, message["state"], copy=False),
            instruction=str(message["instruction"]),
            embodiment_id=int(message["embodiment_id"]),
            stamp=float(message["stamp"]),
        )
        return InferenceRequest(
            request_id=int(message["id"]),
            observation=observation,
            seed=None if seed is None else int(seed),
            rtc=rtc,
        )
    except (KeyError, TypeError, ValueError) as exc:  # ChannelError is a ValueError
        raise ChannelError(f"bad infer message: {exc}") from exc


def encode_result(result: InferenceResult, region: SharedRegion) -> dict[str, Any]:
    """The ``result`` message of ``result``; the action chunk is written into ``region``."""
    actions = None
    if result.actions is not None:
        actions = write_arrays(region, {"actions": result.actions})["actions"]
    return {
        "type": "result",
        "id": result.request_id,
        "actions": actions,
        "dt": result.dt,
        "compute_s": result.compute_s,
        "timings": dict(result.timings),
        "error": result.error,
    }


def decode_result(message: Mapping[str, Any], region: SharedRegion) -> InferenceResult:
    """The result of a ``result`` message; the actions are copied out (the region is reused)."""
    try:
        desc = message["actions"]
        error = message["error"]
        return InferenceResult(
            request_id=int(message["id"]),
            actions=None if desc is None else read_array(region, desc, copy=True),
            dt=float(message["dt"]),
            compute_s=float(message["compute_s"]),
            timings={str(k): float(v) for k, v in message["timings"].items()},
            error=None if error is None else str(error),
        )
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise ChannelError(f"bad result message: {exc}") from exc
