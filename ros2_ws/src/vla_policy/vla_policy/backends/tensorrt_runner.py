"""TensorRT 10 engine runner: named tensor bindings on a CUDA stream, with reused device buffers.

``tensorrt`` is an optional import. Without it, or without a CUDA GPU, constructing a runner raises
``BackendUnavailable`` with the reason, so backend selection can fall back and say why.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from vla_policy.backends.graph_runner import BackendUnavailable, GraphRunner

log = logging.getLogger(__name__)

_TRT_TO_TORCH = {
    "FLOAT": torch.float32,
    "HALF": torch.float16,
    "BF16": torch.bfloat16,
    "INT32": torch.int32,
    "INT64": torch.int64,
    "BOOL": torch.bool,
    "INT8": torch.int8,
}


def import_tensorrt() -> Any:
    """The ``tensorrt`` module, or BackendUnavailable saying what is missing."""
    try:
        import tensorrt as trt
    except ImportError as exc:
        raise BackendUnavailable(f"tensorrt is not installed ({exc})") from exc
    if not torch.cuda.is_available():
        raise BackendUnavailable("TensorRT needs a CUDA GPU and none is visible")
    major = int(trt.__version__.split(".")[0])
    if major < 10:
        raise BackendUnavailable(f"TensorRT {trt.__version__} found; the 10.x API is required")
    return trt


@dataclass(frozen=True)
class EngineKey:
    """What an engine is valid for. An engine built for another key is rebuilt, never loaded."""

    onnx_sha256: str
    tensorrt_version: str
    gpu_name: str
    precision: str

    def digest(self) -> str:
        text = json.dumps(self.__dict__, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    @classmethod
    def current(cls, onnx_sha256: str, precision: str) -> EngineKey:
        trt = import_tensorrt()
        return cls(onnx_sha256, trt.__version__, torch.cuda.get_device_name(), precision)


def engine_matches(engine_path: Path, key: EngineKey) -> bool:
    """True when ``engine_path`` has a sidecar ``.key.json`` equal to ``key``."""
    sidecar = engine_path.with_suffix(".key.json")
    if not engine_path.is_file() or not sidecar.is_file():
        return False
    try:
        return json.loads(sidecar.read_text()) == key.__dict__
    except (OSError, json.JSONDecodeError):
        return False


class TensorRTRunner(GraphRunner):
    """Runs one serialized TensorRT engine.

    Inputs are torch tensors (moved to the GPU if needed); outputs are torch CUDA tensors that stay
    valid until the next ``run``. Output buffers are allocated for the largest shape seen and reused.
    """

    def __init__(self, engine_path: Path) -> None:
        trt = import_tensorrt()
        self._trt = trt
        self._logger = trt.Logger(trt.Logger.WARNING)
        runtime = trt.Runtime(self._logger)
        self._engine = runtime.deserialize_cuda_engine(Path(engine_path).read_bytes())
        if self._engine is None:
            raise BackendUnavailable(f"{engine_path}: TensorRT could not deserialize the engine")
        self._context = self._engine.create_execution_context()
        self._stream = torch.cuda.Stream()
        names = [self._engine.get_tensor_name(i) for i in range(self._engine.num_io_tensors)]
        mode = trt.TensorIOMode.INPUT
        self.input_names = [n for n in names if self._engine.get_tensor_mode(n) == mode]
        self.output_names = [n for n in names if self._engine.get_tensor_mode(n) != mode]
        self._buffers: dict[str, torch.Tensor] = {}

    def _dtype(self, name: str) -> torch.dtype:
        return _TRT_TO_TORCH[self._engine.get_tensor_dtype(name).name]

    def run(self, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        missing = set(self.input_names) - set(inputs)
        if missing:
            raise ValueError(f"missing engine inputs: {sorted(missing)}")
        keep_alive = []
        for name in self.input_names:
            tensor = inputs[name].to("cuda", self._dtype(name), non_blocking=True).contiguous()
            keep_alive.append(tensor)
            self._context.set_input_shape(name, tuple(tensor.shape))
            self._context.set_tensor_address(name, tensor.data_ptr())
        outputs: dict[str, torch.Tensor] = {}
        for name in self.output_names:
            shape = tuple(self._context.get_tensor_shape(name))
            numel = int(torch.Size(shape).numel())
            buffer = self._buffers.get(name)
            if buffer is None or buffer.numel() < numel:
                buffer = torch.empty(numel, dtype=self._dtype(name), device="cuda")
                self._buffers[name] = buffer
            outputs[name] = buffer[:numel].view(shape)
            self._context.set_tensor_address(name, outputs[name].data_ptr())
        self._stream.wait_stream(torch.cuda.current_stream())
        if not self._context.execute_async_v3(self._stream.cuda_stream):
            raise RuntimeError("TensorRT execute_async_v3 failed")
        torch.cuda.current_stream().wait_stream(self._stream)
        del keep_alive
        return outputs
