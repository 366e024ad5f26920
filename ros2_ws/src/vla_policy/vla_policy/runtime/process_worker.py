"""``ProcessWorker``: the model runs in a child process, so the caller's threads never wait on torch's GIL.

The child is ``python -m vla_policy.runtime.process_worker_child``, started with ``subprocess`` (a fresh
interpreter: nothing of the caller's threads, rclpy included, is forked along). It receives its end of a
Unix socket and the two shared memory regions as inherited file descriptors (``pass_fds``). The session:

1. the runtime sends ``hello`` {protocol, spec}; a worker that speaks another protocol answers ``error``;
2. the worker loads and warms the policy and answers ``ready`` {protocol, info} or ``error`` {error};
3. ``infer`` / ``result`` pairs, one in flight at a time (arrays in shared memory, see
   shared_memory_channel.py);
4. ``close``: the worker exits; after a grace it is sent SIGTERM, then SIGKILL (a child hung inside the
   model, or stopped, ends too).

The caller side runs no thread of its own: ``submit`` writes the arrays and one message, ``poll`` looks at
the socket without blocking, ``health`` asks the OS whether the child still runs. The child watches its
socket and exits when the runtime's process is gone (no orphans). With the ROS 2 wheels, a Python that
starts without ``_ROS_WHEELS_BOOTSTRAP_COMPLETE`` re-executes itself once to set its library path; the
child inherits the variable from a bootstrapped caller, and its inherited descriptors survive a re-exec.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import time
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from vla_policy.runtime.inference import (
    PROTOCOL_VERSION,
    InferenceRequest,
    InferenceResult,
    InferenceWorker,
    ModelInfo,
    PolicySpec,
    WorkerFailure,
    one_line,
)
from vla_policy.runtime.shared_memory_channel import (
    ChannelError,
    SharedRegion,
    decode_result,
    encode_request,
    recv_message,
    send_message,
)
from vla_policy.strict_config import from_dict, to_dict

logger = logging.getLogger(__name__)

CHILD_MODULE = "vla_policy.runtime.process_worker_child"
REQUEST_REGION_BYTES = 1 << 20  # grows on demand (images of any size and count)
RESULT_REGION_BYTES = 1 << 16


def describe_exit(returncode: int) -> str:
    """``killed by SIGKILL`` or ``exit code 1``."""
    if returncode < 0:
        try:
            return f"killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"killed by signal {-returncode}"
    return f"exit code {returncode}"


def model_info_from_message(info: dict[str, Any]) -> ModelInfo:
    return from_dict(ModelInfo, info, "ready.info")


class ProcessWorker(InferenceWorker):
    """The default worker: a child process serves the requests (see the module docstring)."""

    kind = "process"

    def __init__(self, spec: PolicySpec, close_grace: float = 2.0) -> None:
        self.spec = spec
        self.close_grace = close_grace  # seconds for each step of close(): close message, SIGTERM
        self._proc: subprocess.Popen[bytes] | None = None
        self._conn: Connection | None = None
        self._requests: SharedRegion | None = None
        self._results: SharedRegion | None = None
        self._in_flight: int | None = None
        self._refused: InferenceResult | None = None  # a request that could not cross, answered here
        self._dt = float("nan")  # the model's action period, for the results answered here
        self._lost: str | None = None  # why the channel broke while the process may still be exiting
        self._closed = False

    @property
    def pid(self) -> int | None:
        """The child's process id while one is started (for diagnostics and tests)."""
        return self._proc.pid if self._proc is not None else None

    # ---- lifecycle -------------------------------------------------------------------------------
    def start(self, timeout: float) -> ModelInfo:
        if self._proc is not None:
            raise WorkerFailure("inference worker already started: close() it before starting again")
        deadline = time.monotonic() + timeout
        self._closed = False
        self._lost = None
        self._in_flight = None
        self._refused = None
        self._requests = SharedRegion.create("vla-worker-requests", REQUEST_REGION_BYTES)
        self._results = SharedRegion.create("vla-worker-results", RESULT_REGION_BYTES)
        parent_sock, child_sock = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        fds = (child_sock.fileno(), self._requests.fd, self._results.fd)
        # the child imports the same vla_policy as this process, wherever that comes from
        package_root = str(Path(__file__).resolve().parents[2])
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH", "")) if p)
        cmd = [sys.executable, "-m", CHILD_MODULE, *(str(fd) for fd in fds)]
        try:
            self._proc = subprocess.Popen(cmd, pass_fds=fds, stdin=subprocess.DEVNULL, env=env)
        except OSError as exc:
            parent_sock.close()
            self._free()
            raise WorkerFailure(one_line(f"cannot start the inference worker: {exc}")) from exc
        finally:
            child_sock.close()
        self._conn = Connection(parent_sock.detach())
        try:
            send_message(
                self._conn, {"type": "hello", "protocol": PROTOCOL_VERSION, "spec": to_dict(self.spec)}
            )
            reply = self._receive_until(deadline, timeout)
            if reply["type"] == "error":
                raise WorkerFailure(one_line(str(reply.get("error"))))
            if reply["type"] != "ready" or reply.get("protocol") != PROTOCOL_VERSION:
                raise WorkerFailure(
                    one_line(
                        f"inference worker answered {reply['type']!r} with protocol "
                        f"{reply.get('protocol')!r}; this runtime speaks protocol {PROTOCOL_VERSION}"
                    )
                )
            info = model_info_from_message(reply["info"])
            self._dt = info.dt
        except (WorkerFailure, ChannelError, OSError, ValueError) as exc:
            self.close()
            if isinstance(exc, WorkerFailure):
                raise
            raise WorkerFailure(one_line(f"inference worker start failed: {exc}")) from exc
        except BaseException:
            self.close()
            raise
        logger.info("inference worker %d ready: %s (backend %s)", self._proc.pid, info.name, info.backend)
        return info

    def _receive_until(self, deadline: float, timeout: float) -> dict[str, Any]:
        """The child's next message during start; WorkerFailure when it exits or the deadline passes."""
        assert self._conn is not None and self._proc is not None
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise WorkerFailure(f"inference worker not ready after {timeout:g} s (still loading?)")
            if self._conn.poll(min(remaining, 1.0)):
                try:
                    return recv_message(self._conn)
                except (EOFError, OSError):
                    reason = f"inference worker exited during start ({self._exit_reason()})"
                    raise WorkerFailure(reason) from None

    def close(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            try:
                if self._conn is not None:
                    send_message(self._conn, {"type": "close"})
            except OSError:
                pass  # the child is going anyway
            _end(proc, self.close_grace)
        if proc is not None:
            logger.info("inference worker %d ended (%s)", proc.pid, describe_exit(proc.wait()))
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        self._free()
        self._in_flight = None
        self._closed = True

    def _free(self) -> None:
        for region in (self._requests, self._results):
            if region is not None:
                region.close()
        self._requests = self._results = None

    # ---- requests --------------------------------------------------------------------------------
    def health(self) -> str | None:
        if self._proc is None:
            return "inference worker closed" if self._closed else "inference worker not started"
        code = self._proc.poll()
        if code is not None:
            return f"inference worker exited ({describe_exit(code)})"
        return self._lost

    def _check(self) -> None:
        reason = self.health()
        if reason is not None:
            raise WorkerFailure(reason)

    def submit(self, request: InferenceRequest, now: float) -> None:
        self._check()
        if self._in_flight is not None:
            raise WorkerFailure(f"request {self._in_flight} is still in flight")
        assert self._conn is not None and self._requests is not None
        try:
            message = encode_request(request, self._requests)
        except ChannelError as exc:  # e.g. an object array: a failed request, as a model error would be
            self._refused = InferenceResult(
                request.request_id, None, self._dt, 0.0, error=one_line(f"request cannot cross: {exc}")
            )
            self._in_flight = request.request_id
            return
        try:
            send_message(self._conn, message)
        except OSError:
            raise self._channel_lost() from None
        self._in_flight = request.request_id

    def poll(self, now: float) -> InferenceResult | None:
        return self._take(0.0)

    def wait(self, timeout: float) -> InferenceResult | None:
        return self._take(timeout)

    def _take(self, timeout: float) -> InferenceResult | None:
        """The in-flight request's result if it arrives within ``timeout`` (0: look only)."""
        if self._proc is None or self._in_flight is None:
            self._check()
            return None
        if self._refused is not None:
            result, self._refused, self._in_flight = self._refused, None, None
            return result
        assert self._conn is not None and self._results is not None
        try:
            if not self._conn.poll(timeout):
                self._check()
                return None
            message = recv_message(self._conn)
        except (EOFError, OSError):
            raise self._channel_lost() from None
        try:
            if message["type"] != "result" or message.get("id") != self._in_flight:
                raise ChannelError(f"expected the result of request {self._in_flight}, got {message}")
            result = decode_result(message, self._results)
        except ChannelError as exc:
            self._lost = one_line(f"inference worker broke the protocol: {exc}")
            raise WorkerFailure(self._lost) from exc
        self._in_flight = None
        return result

    def _channel_lost(self) -> WorkerFailure:
        """The socket broke: the child died (its exit status says how) or is dying -> the failure."""
        assert self._proc is not None
        self._lost = f"inference worker exited ({self._exit_reason()})"
        return WorkerFailure(self._lost)

    def _exit_reason(self) -> str:
        assert self._proc is not None
        try:
            return describe_exit(self._proc.wait(self.close_grace))
        except subprocess.TimeoutExpired:
            return "it closed its channel but is still running"


def _end(proc: subprocess.Popen[bytes], grace: float) -> None:
    """Wait ``grace`` s for ``proc`` to exit after its close message, then SIGTERM, then SIGKILL."""
    for step in (None, proc.terminate, proc.kill):
        if step is not None:
            step()
        try:
            proc.wait(grace)
            return
        except subprocess.TimeoutExpired:
            continue
    proc.wait()
