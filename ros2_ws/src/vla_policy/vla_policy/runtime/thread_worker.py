"""``ThreadWorker``: the model runs in a thread of the caller's process (the debugging option).

Same ``PolicyRunner`` as the process worker, without a process boundary: breakpoints and profilers see
the model, but torch shares the GIL with the caller's threads (the control loop's jitter shows it: see
``python -m vla_policy.benchmarks.worker_bench``). ``PolicySpec.torch_threads`` sets torch's thread
count for the whole process. A thread cannot be killed: ``close`` asks it to stop and does not wait for a
request that is still running; its result is dropped.
"""

from __future__ import annotations

import logging
import queue
import threading
from dataclasses import dataclass, field

from vla_policy.runtime.inference import (
    InferenceRequest,
    InferenceResult,
    InferenceWorker,
    ModelInfo,
    PolicySpec,
    WorkerFailure,
    one_line,
)
from vla_policy.runtime.policy_runner import PolicyRunner

logger = logging.getLogger(__name__)


@dataclass
class _Session:
    """One start() of the thread; a restart gets a new session, so an old thread never touches it."""

    requests: queue.SimpleQueue[InferenceRequest | None] = field(default_factory=queue.SimpleQueue)
    loaded: threading.Event = field(default_factory=threading.Event)
    done: threading.Event = field(default_factory=threading.Event)
    info: ModelInfo | None = None
    failure: str | None = None
    result: InferenceResult | None = None


class ThreadWorker(InferenceWorker):
    kind = "thread"

    def __init__(self, spec: PolicySpec) -> None:
        self.spec = spec
        self._session: _Session | None = None
        self._thread: threading.Thread | None = None
        self._in_flight: int | None = None
        self._closed = False

    def start(self, timeout: float) -> ModelInfo:
        if self._session is not None:
            raise WorkerFailure("inference thread already started: close() it before starting again")
        session = _Session()
        self._session, self._closed, self._in_flight = session, False, None
        self._thread = threading.Thread(target=self._run, args=(session,), name="vla_inference", daemon=True)
        self._thread.start()
        if not session.loaded.wait(timeout):
            self.close()
            raise WorkerFailure(f"inference thread not ready after {timeout:g} s (still loading?)")
        if session.info is None:
            self.close()
            raise WorkerFailure(session.failure or "inference thread failed to load the policy")
        return session.info

    def _run(self, session: _Session) -> None:
        try:
            runner = PolicyRunner.load(self.spec)
        except WorkerFailure as exc:
            session.failure = str(exc)
            return
        except Exception as exc:  # the same one line the process worker would give
            session.failure = one_line(f"inference thread failed to load the policy: {exc}")
            return
        finally:
            session.loaded.set()
        session.info = runner.info
        while (request := session.requests.get()) is not None:
            session.result = runner.serve(request)
            session.done.set()

    def health(self) -> str | None:
        if self._session is None:
            return "inference thread closed" if self._closed else "inference thread not started"
        if self._thread is None or not self._thread.is_alive():
            return "inference thread exited"
        return None

    def _check(self) -> _Session:
        reason = self.health()
        if reason is not None:
            raise WorkerFailure(reason)
        assert self._session is not None
        return self._session

    def submit(self, request: InferenceRequest, now: float) -> None:
        session = self._check()
        if self._in_flight is not None:
            raise WorkerFailure(f"request {self._in_flight} is still in flight")
        session.done.clear()
        self._in_flight = request.request_id
        session.requests.put(request)

    def poll(self, now: float) -> InferenceResult | None:
        return self._take(0.0)

    def wait(self, timeout: float) -> InferenceResult | None:
        return self._take(timeout)

    def _take(self, timeout: float) -> InferenceResult | None:
        session = self._check()
        if self._in_flight is None or not session.done.wait(timeout):
            return None
        result, session.result = session.result, None
        self._in_flight = None
        return result

    def close(self) -> None:
        if self._session is not None:
            self._session.requests.put(None)
        self._session = self._thread = None
        self._in_flight = None
        self._closed = True
