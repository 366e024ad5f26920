"""``InlineWorker``: deterministic inference in simulated time, for offline evaluation.

``submit`` runs the request at once in the caller; ``poll(now)`` releases the result only when the
runtime's clock reaches ``submitted_at + latency``: a fixed, modelled latency, so a run on a recorded
episode gives the same chunks at the same ticks whatever the machine's speed. ``wait`` (lock-step)
returns the result at once.
"""

from __future__ import annotations

from vla_policy.runtime.inference import (
    InferenceRequest,
    InferenceResult,
    InferenceWorker,
    ModelInfo,
    PolicySpec,
    WorkerFailure,
)
from vla_policy.runtime.policy_runner import PolicyRunner

# simulated clocks are sums of periods: 0.1 + 0.2 must reach a release time of 0.3
CLOCK_TOLERANCE = 1e-9


class InlineWorker(InferenceWorker):
    kind = "inline"

    def __init__(self, spec: PolicySpec, latency: float, runner: PolicyRunner | None = None) -> None:
        """``runner``: an already loaded policy (the caller keeps using it, e.g. for its normaliser)."""
        if latency < 0:
            raise ValueError(f"InlineWorker latency must be >= 0 s, got {latency}")
        self.spec = spec
        self.latency = latency
        self._loaded = runner
        self._runner: PolicyRunner | None = None
        self._pending: tuple[float, InferenceResult] | None = None  # (release time, result)
        self._closed = False

    def start(self, timeout: float) -> ModelInfo:
        """Load and warm up in the caller (``timeout`` does not apply: nothing runs beside it)."""
        if self._runner is not None:
            raise WorkerFailure("inline worker already started: close() it before starting again")
        self._closed = False
        self._runner = self._loaded or PolicyRunner.load(self.spec)
        return self._runner.info

    def health(self) -> str | None:
        if self._runner is None:
            return "inline worker closed" if self._closed else "inline worker not started"
        return None

    def submit(self, request: InferenceRequest, now: float) -> None:
        reason = self.health()
        if reason is not None:
            raise WorkerFailure(reason)
        assert self._runner is not None
        if self._pending is not None:
            raise WorkerFailure(f"request {self._pending[1].request_id} is still in flight")
        self._pending = (now + self.latency, self._runner.serve(request))

    def poll(self, now: float) -> InferenceResult | None:
        reason = self.health()
        if reason is not None:
            raise WorkerFailure(reason)
        if self._pending is None or now + CLOCK_TOLERANCE < self._pending[0]:
            return None
        result = self._pending[1]
        self._pending = None
        return result

    def wait(self, timeout: float) -> InferenceResult | None:
        reason = self.health()
        if reason is not None:
            raise WorkerFailure(reason)
        result = self._pending[1] if self._pending is not None else None
        self._pending = None
        return result

    def close(self) -> None:
        self._runner = None
        self._pending = None
        self._closed = True
