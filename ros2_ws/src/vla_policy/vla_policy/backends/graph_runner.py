"""One exported graph behind a common ``run(inputs) -> outputs`` interface; the ONNX Runtime runner.

The prefix backends chain several graphs (vision, LLM, VL head). Each runtime (ONNX Runtime, TensorRT)
implements ``GraphRunner`` once; the chaining lives in ``prefix_backend.py``.
"""

from __future__ import annotations

import logging
import os
from abc import ABC, abstractmethod
from pathlib import Path

import numpy as np
import torch

log = logging.getLogger(__name__)


class BackendUnavailable(RuntimeError):
    """A runtime cannot be used here (missing package, no GPU, bad artifacts); the message says why."""


class GraphRunner(ABC):
    """Runs one graph with named inputs and outputs."""

    input_names: list[str]
    output_names: list[str]

    @abstractmethod
    def run(self, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Named input tensors in, named output tensors out (same names as the ONNX graph)."""


_ORT_TO_NUMPY = {
    "tensor(float)": np.float32,
    "tensor(float16)": np.float16,
    "tensor(int64)": np.int64,
    "tensor(int32)": np.int32,
    "tensor(bool)": np.bool_,
}


class OnnxRuntimeRunner(GraphRunner):
    """ONNX Runtime session for one graph. CUDA EP when available, else CPU.

    Spinning is disabled: with torch in the same process on few cores, ORT's spinning worker threads
    slowed torch's DiT steps several-fold (ENVIRONMENT.md).
    """

    def __init__(self, onnx_path: Path, intra_op_threads: int | None = None, device: str = "cpu") -> None:
        try:
            import onnxruntime as ort
        except ImportError as exc:
            raise BackendUnavailable(f"onnxruntime is not installed ({exc})") from exc
        options = ort.SessionOptions()
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.add_session_config_entry("session.inter_op.allow_spinning", "0")
        options.intra_op_num_threads = intra_op_threads or max(1, (os.cpu_count() or 2))
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        providers = ["CPUExecutionProvider"]
        if device.startswith("cuda") and "CUDAExecutionProvider" in ort.get_available_providers():
            providers.insert(0, "CUDAExecutionProvider")
        try:
            self._session = ort.InferenceSession(str(onnx_path), options, providers=providers)
        except Exception as exc:  # ORT raises its own exception types for bad files
            raise BackendUnavailable(f"{onnx_path}: ONNX Runtime cannot load it ({exc})") from exc
        self.providers = self._session.get_providers()
        self._input_types = {
            i.name: _ORT_TO_NUMPY.get(i.type, np.float32) for i in self._session.get_inputs()
        }
        self.input_names = [i.name for i in self._session.get_inputs()]
        self.output_names = [o.name for o in self._session.get_outputs()]

    def run(self, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        missing = set(self.input_names) - set(inputs)
        if missing:
            raise ValueError(f"missing graph inputs: {sorted(missing)}")
        feeds = {
            name: inputs[name].detach().cpu().numpy().astype(self._input_types[name], copy=False)
            for name in self.input_names
        }
        results = self._session.run(self.output_names, feeds)
        return {
            name: torch.from_numpy(np.ascontiguousarray(r))
            for name, r in zip(self.output_names, results, strict=True)
        }
