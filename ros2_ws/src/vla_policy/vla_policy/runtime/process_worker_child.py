"""The child process of a ``ProcessWorker``: ``python -m vla_policy.runtime.process_worker_child CHANNEL
REQUESTS RESULTS`` (three inherited file descriptors: the socket, the request and result regions).

A reader thread takes the runtime's messages off the socket, so the child notices at once when the
runtime's process is gone (end of file) and exits even while the main thread is inside the model. The
main thread loads the policy, then serves one request at a time. Logs go to stderr.
"""

from __future__ import annotations

import logging
import os
import queue
import signal
import sys
import threading
from multiprocessing.connection import Connection
from typing import Any

from vla_policy.runtime.inference import (
    PROTOCOL_VERSION,
    InferenceResult,
    PolicySpec,
    WorkerFailure,
    one_line,
)
from vla_policy.runtime.policy_runner import PolicyRunner
from vla_policy.runtime.shared_memory_channel import (
    ChannelError,
    SharedRegion,
    decode_request,
    encode_result,
    recv_message,
    send_message,
)
from vla_policy.strict_config import ConfigError, from_dict, to_dict

logger = logging.getLogger("vla_policy.inference_worker")

EXIT_REFUSED = 2  # protocol mismatch or a message that breaks the protocol
EXIT_LOAD_FAILED = 3


def _read_channel(conn: Connection, inbox: queue.SimpleQueue[dict[str, Any]]) -> None:
    """Move messages from the socket to ``inbox``; exit the process when the runtime is gone."""
    while True:
        try:
            message = recv_message(conn)
        except (EOFError, OSError):
            # never outlive the runtime: os._exit also ends a main thread that is inside the model
            os._exit(0)
        except ChannelError as exc:
            message = {"type": "invalid", "error": str(exc)}
        inbox.put(message)


def serve(conn: Connection, requests: SharedRegion, results: SharedRegion) -> int:
    """The session with the runtime (see process_worker.py); -> the exit code."""
    inbox: queue.SimpleQueue[dict[str, Any]] = queue.SimpleQueue()
    threading.Thread(target=_read_channel, args=(conn, inbox), name="channel", daemon=True).start()
    hello = inbox.get()
    if hello["type"] != "hello":
        send_message(conn, {"type": "error", "error": f"expected 'hello' first, got {hello['type']!r}"})
        return EXIT_REFUSED
    if hello.get("protocol") != PROTOCOL_VERSION:
        reason = (
            f"protocol mismatch: the runtime speaks protocol {hello.get('protocol')!r}, "
            f"this inference worker speaks {PROTOCOL_VERSION}"
        )
        send_message(conn, {"type": "error", "error": reason})
        return EXIT_REFUSED
    try:
        runner = PolicyRunner.load(from_dict(PolicySpec, hello["spec"], "hello.spec"))
    except (WorkerFailure, ConfigError) as exc:
        send_message(conn, {"type": "error", "error": one_line(str(exc))})
        return EXIT_LOAD_FAILED
    send_message(conn, {"type": "ready", "protocol": PROTOCOL_VERSION, "info": to_dict(runner.info)})
    while True:
        message = inbox.get()
        kind = message["type"]
        if kind == "close":
            return 0
        if kind != "infer":
            logger.error("unexpected message %r: %s", kind, message.get("error", ""))
            return EXIT_REFUSED
        try:
            request = decode_request(message, requests)
        except ChannelError as exc:
            result = InferenceResult(
                request_id=int(message.get("id", -1)),
                actions=None,
                dt=runner.info.dt,
                compute_s=0.0,
                error=one_line(str(exc)),
            )
        else:
            result = runner.serve(request)
            del request  # its arrays view the request region: release them before the next one
        send_message(conn, encode_result(result, results))


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 3:
        sys.stderr.write(f"usage: python -m {__spec__.name} CHANNEL_FD REQUEST_FD RESULT_FD\n")
        return EXIT_REFUSED
    # Ctrl-C in a terminal reaches the whole process group: the runtime decides when the worker stops
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # a real-time parent (a node started under chrt, say) must not make the model real-time: it would starve
    # the machine; the model runs at normal priority, below the control loop
    if os.sched_getscheduler(0) != os.SCHED_OTHER:
        os.sched_setscheduler(0, os.SCHED_OTHER, os.sched_param(0))
    logging.basicConfig(
        stream=sys.stderr,
        level=logging.INFO,
        format=f"[inference worker {os.getpid()}] %(levelname)s %(name)s: %(message)s",
    )
    channel_fd, request_fd, result_fd = (int(a) for a in args)
    conn = Connection(channel_fd)
    requests, results = SharedRegion(request_fd), SharedRegion(result_fd)
    try:
        return serve(conn, requests, results)
    finally:
        requests.close()
        results.close()


if __name__ == "__main__":
    code = main()
    # Nothing outlives the process (the regions are memfds): skip the interpreter's teardown of torch,
    # which takes seconds on a loaded machine and would delay every close() and restart.
    logging.shutdown()
    sys.stderr.flush()
    os._exit(code)
