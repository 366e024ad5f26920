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

PROTOCOL_VERSION = 1


class WorkerFailure(RuntimeError):
    """The worker cannot serve: it failed to load, crashed, hung or was closed. One line says why."""


@dataclass(frozen=True)
class PolicySpec:
    """What a worker needs to load the policy; the same on every worker kind."""

    checkpoint: str  # a resolved checkpoint directory (config.json + safetensors)
    device: str = "cpu"
    torch_threads: int = 0  # 0 = torch's default
    backend_order: tuple[str, ...] = ("torch",)
    onnx_dir: str = ""
    engine_dir: str = ""
    warmup_runs: int = 1
    warmup_rtc: bool = False  # also warm the RTC-guided (autograd) path
    state_dim: int = 16  # robot joints in the state vector (for the warm-up observation)


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
    backend_skipped: tuple[str, ...] = ()
    warmup_s: float = math.nan


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
    processes internally.
    """

    kind: str = "abstract"

    @abstractmethod
    def start(self, timeout: float) -> ModelInfo:
        """Load the policy and warm it up (blocking). ``WorkerFailure`` with the reason on failure."""

    @abstractmethod
    def submit(self, request: InferenceRequest, now: float) -> None:
        """Hand over a request (never blocks on the model). ``WorkerFailure`` when the worker is not
        running or a request is already in flight."""

    @abstractmethod
    def poll(self, now: float) -> InferenceResult | None:
        """The result of the in-flight request when it is ready, else None (never blocks). ``now`` is
        the runtime's clock: only a worker with a modelled latency uses it."""

    @abstractmethod
    def wait(self, timeout: float) -> InferenceResult | None:
        """Block up to ``timeout`` wall seconds for the in-flight request's result (lock-step mode)."""

    @abstractmethod
    def health(self) -> str | None:
        """None while the worker can serve; else one line saying why not (exited, closed, ...)."""

    @abstractmethod
    def close(self) -> None:
        """Stop the worker and free its resources; idempotent."""
