"""The inference protocol between ``PolicyRuntime`` and a worker that runs the model.

The runtime never calls the model itself: it hands an ``InferenceRequest`` to an ``InferenceWorker``
and later takes an ``InferenceResult`` from it. Workers differ only in where the model runs: a process
of its own (the default: the control thread never waits on torch's GIL), a thread of the caller's
process (for debugging), or inline with a modelled latency (offline evaluation in simulated time). A
remote worker (a policy server on a GPU machine) can speak the same protocol later; the protocol
version travels with every handshake.

Everything here is plain data (numpy arrays, strings, numbers): nothing is pickled across processes.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from vla_policy.model.flow_matching import RTCGuidance
from vla_policy.observation import Observation
from vla_policy.strict_config import require

PROTOCOL_VERSION = 1
MAX_REASON_CHARS = 500


class WorkerFailure(RuntimeError):
    """The worker cannot serve: it failed to load, crashed, hung or was closed. One line says why."""


def one_line(text: str) -> str:
    """``text`` on one line (whitespace collapsed, at most ``MAX_REASON_CHARS``): for reasons and errors."""
    line = " ".join(str(text).split())
    return line if len(line) <= MAX_REASON_CHARS else line[: MAX_REASON_CHARS - 3] + "..."


@dataclass(frozen=True)
class PolicySpec:
    """What a worker needs to load the policy; the same on every worker kind."""

    checkpoint: str  # a resolved checkpoint directory (config.json + safetensors)
    device: str = "cpu"
    torch_threads: int = 0  # 0 = torch's default
    backend_order: tuple[str, ...] = ("torch",)
    onnx_dir: str = ""
    engine_dir: str = ""
    warmup_runs: int = 1  # synthetic observations run before start() returns (at least one)
    warmup_rtc: bool = False  # also warm the RTC-guided (autograd) path
    state_dim: int = 16  # robot joints in the state vector (for the warm-up observation)

    def __post_init__(self) -> None:
        require(bool(self.checkpoint), "PolicySpec.checkpoint must name a checkpoint directory")
        require(self.torch_threads >= 0, f"PolicySpec.torch_threads must be >= 0, got {self.torch_threads}")
        require(len(self.backend_order) >= 1, "PolicySpec.backend_order must name at least one backend")
        require(self.warmup_runs >= 0, f"PolicySpec.warmup_runs must be >= 0, got {self.warmup_runs}")
        require(self.state_dim >= 1, f"PolicySpec.state_dim must be >= 1, got {self.state_dim}")


@dataclass(frozen=True)
class ModelInfo:
    """What the runtime needs to know about the loaded model (reported by ``start``)."""

    name: str  # "<preset or model name>@<sha256[:12]>"
    cameras: tuple[str, ...]
    image_size: int
    history_frames: int
    horizon: int  # actions per chunk (T)
    dt: float  # seconds between a chunk's actions
    max_state_dim: int
    action_dim: int  # width of InferenceResult.actions
    action_layout: Mapping[str, tuple[int, int]]  # group -> (offset, size) in the action vector
    backend: str = "torch"
    backend_skipped: tuple[str, ...] = ()  # one line per backend tried before ``backend``: why it failed
    warmup_s: float = math.nan

    def __post_init__(self) -> None:
        # a layout read back from JSON has lists: keep one hashable form, and check it fits the width
        layout = {str(k): (int(v[0]), int(v[1])) for k, v in dict(self.action_layout).items()}
        object.__setattr__(self, "action_layout", layout)
        for group, (offset, size) in layout.items():
            require(
                offset >= 0 and size >= 1 and offset + size <= self.action_dim,
                f"ModelInfo.action_layout[{group!r}] = ({offset}, {size}) does not fit action_dim "
                f"{self.action_dim}",
            )


@dataclass(frozen=True)
class InferenceRequest:
    request_id: int  # increasing; a result answers exactly one request
    observation: Observation
    seed: int | None = None  # noise seed of the chunk (None = random)
    rtc: RTCGuidance | None = None  # real-time chunking: the previous chunk to inpaint toward


@dataclass(frozen=True)
class InferenceResult:
    request_id: int
    actions: np.ndarray | None  # float32 [T, action_dim] unnormalised; None when ``error`` is set
    dt: float
    compute_s: float  # wall seconds the worker spent on this request
    timings: Mapping[str, float] = field(default_factory=dict)  # stage -> seconds
    error: str | None = None  # one line: why this request produced no chunk


class InferenceWorker(ABC):
    """Runs the model for a ``PolicyRuntime``. At most one request is in flight at a time.

    Calls come from one thread (the runtime's); implementations synchronise with their own threads or
    processes internally. A worker that can no longer serve (its process died, it was closed) raises
    ``WorkerFailure`` from ``submit``, ``poll`` and ``wait`` with the same line ``health()`` gives; a
    failed request (a model error, non-finite actions) is not a failure of the worker: it comes back as
    an ``InferenceResult`` with ``error`` set. A restart is ``close()`` then ``start()`` on the same object.
    """

    kind: str = "abstract"

    @abstractmethod
    def start(self, timeout: float) -> ModelInfo:
        """Load the policy and warm it up (blocking). ``WorkerFailure`` with the reason on failure."""

    @abstractmethod
    def submit(self, request: InferenceRequest, now: float) -> None:
        """Hand over a request (never blocks on the model). ``WorkerFailure`` when the worker is not
        running or a request is already in flight (until ``poll``/``wait`` has returned its result)."""

    @abstractmethod
    def poll(self, now: float) -> InferenceResult | None:
        """The result of the in-flight request when it is ready, else None (never blocks). ``now`` is
        the runtime's clock: only a worker with a modelled latency uses it. ``WorkerFailure`` when the
        worker can no longer serve."""

    @abstractmethod
    def wait(self, timeout: float) -> InferenceResult | None:
        """Block up to ``timeout`` wall seconds for the in-flight request's result (lock-step mode); None
        when it is not ready by then or nothing is in flight. ``WorkerFailure`` as for ``poll``."""

    @abstractmethod
    def health(self) -> str | None:
        """None while the worker can serve; else one line saying why not (exited, closed, ...)."""

    @abstractmethod
    def close(self) -> None:
        """Stop the worker and free its resources; idempotent."""
