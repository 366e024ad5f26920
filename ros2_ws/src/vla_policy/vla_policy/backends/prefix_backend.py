"""Prefix backends: the same three stages (vision, LLM, VL head) on torch, ONNX Runtime or TensorRT.

The policy calls a backend stage by stage, so per-stage timings mean the same thing on every backend.
``select_prefix_backend`` tries an ordered list and logs which one it chose and why the others were
skipped; the torch backend is always available and is the last resort.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import torch

from vla_policy.backends.artifact_manifest import ArtifactError, ArtifactManifest, load_manifest
from vla_policy.backends.graph_runner import BackendUnavailable, GraphRunner, OnnxRuntimeRunner
from vla_policy.observation import PrefixOutput

log = logging.getLogger(__name__)

BACKENDS = ("tensorrt", "onnxruntime", "torch_compile", "torch")


class PrefixModel(Protocol):
    """What a backend needs of the policy (``VLAPolicy`` satisfies it; backends never import it)."""

    expert: torch.nn.Module
    model: torch.nn.Module
    device: torch.device
    dtype: torch.dtype
    digest: str | None
    config: Any


class PrefixBackend:
    """Runs the prefix stages. Subclasses implement the three stages; shapes as in the ONNX graphs."""

    name = "abstract"
    skipped: tuple[str, ...] = ()  # "<backend>: <reason>" for each backend tried before this one

    def vision(
        self,
        pixel_values: torch.Tensor,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """pixel_values [N, 3, S, S] -> vit_embeds [N, patches, D_llm]; the prompt [B, L] is used only by
        CogVLA's instruction-conditioned vision (FiLM, router)."""
        raise NotImplementedError

    def language(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, vit: torch.Tensor
    ) -> torch.Tensor:
        """input_ids [B, L], attention_mask [B, L] bool, vit [N, patches, D] -> features [B, L, D_vl]."""
        raise NotImplementedError

    def vl_head(self, features: torch.Tensor, attention_mask: torch.Tensor) -> PrefixOutput:
        """features [B, L, D_vl], mask [B, L] -> PrefixOutput with vl features and cross K/V."""
        raise NotImplementedError


class TorchPrefixBackend(PrefixBackend):
    """Eager PyTorch: the reference the exported graphs are checked against."""

    name = "torch"

    def __init__(self, policy: PrefixModel) -> None:
        self._expert = policy.expert
        backbone = policy.model.backbone
        self._encode_images = backbone.encode_images
        self._encode_language = backbone.encode_language
        self._prepare_prefix = policy.expert.prepare_prefix

    def vision(
        self,
        pixel_values: torch.Tensor,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        return self._encode_images(pixel_values, input_ids, attention_mask)

    def language(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, vit: torch.Tensor
    ) -> torch.Tensor:
        if getattr(self._expert, "uses_layer_kv", False):  # LLM input embeds; vl_head runs the LLM -> K/V
            return self._expert.embed_prefix(input_ids, attention_mask, vit)
        return self._encode_language(input_ids, attention_mask, vit)

    def vl_head(self, features: torch.Tensor, attention_mask: torch.Tensor) -> PrefixOutput:
        return self._prepare_prefix(features, attention_mask, with_cross_kv=True)


class CompiledTorchPrefixBackend(TorchPrefixBackend):
    """The torch stages under ``torch.compile``: CUDA graphs on a GPU (``reduce-overhead``), Inductor
    kernels on the CPU. Compilation happens on the first calls, so the node's warm-up pays for it."""

    name = "torch_compile"

    def __init__(self, policy: PrefixModel) -> None:
        super().__init__(policy)
        mode = "reduce-overhead" if policy.device.type == "cuda" else "default"
        self._encode_images = torch.compile(self._encode_images, mode=mode, dynamic=True)
        self._encode_language = torch.compile(self._encode_language, mode=mode, dynamic=True)
        self._prepare_prefix = torch.compile(self._prepare_prefix, mode=mode, dynamic=True)


class GraphPrefixBackend(PrefixBackend):
    """Chains the exported graphs (``vision``, ``llm``, ``vl_head``) on one runtime."""

    def __init__(
        self, name: str, runners: dict[str, GraphRunner], device: torch.device, dtype: torch.dtype
    ) -> None:
        self.name = name
        self._runners = runners
        self._device = device
        self._dtype = dtype

    def _run(self, graph: str, **inputs: torch.Tensor) -> dict[str, torch.Tensor]:
        outputs = self._runners[graph].run(inputs)
        return {
            k: v.to(self._device, self._dtype) if v.is_floating_point() else v for k, v in outputs.items()
        }

    def vision(
        self,
        pixel_values: torch.Tensor,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        if input_ids is None or "input_ids" not in self._runners["vision"].input_names:
            return self._run("vision", pixel_values=pixel_values)["vit_embeds"]
        # a CogVLA vision graph also takes the prompt (instruction-conditioned FiLM / router)
        out = self._run(
            "vision", pixel_values=pixel_values, input_ids=input_ids, attention_mask=attention_mask
        )
        return out["vit_embeds"]

    def language(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, vit: torch.Tensor
    ) -> torch.Tensor:
        out = self._run("llm", input_ids=input_ids, attention_mask=attention_mask, vit_embeds=vit)
        return out["backbone_features"]

    def vl_head(self, features: torch.Tensor, attention_mask: torch.Tensor) -> PrefixOutput:
        out = self._run("vl_head", backbone_features=features, attention_mask=attention_mask)
        names = self._runners["vl_head"].output_names
        kv = [out[n] for n in names if n.startswith("cross_")]
        cross_kv = tuple((kv[i], kv[i + 1]) for i in range(0, len(kv), 2))
        if any(n.startswith("layer_") for n in names):  # layer-KV experts: per-LLM-layer K/V
            lkv = [out[n] for n in names if n.startswith("layer_")]
            layer_kv = tuple((lkv[i], lkv[i + 1]) for i in range(0, len(lkv), 2))
            return PrefixOutput(features=features, attention_mask=attention_mask.bool(), layer_kv=layer_kv)
        return PrefixOutput(
            features=out["vl_features"], attention_mask=attention_mask.bool(), cross_kv=cross_kv
        )


def onnxruntime_backend(
    policy: PrefixModel, artifacts: Path | None, threads: int | None = None
) -> GraphPrefixBackend:
    """ONNX Runtime over an export directory; refuses one exported from another checkpoint."""
    manifest = _checked_manifest(policy, artifacts)
    runners: dict[str, GraphRunner] = {
        g.name: OnnxRuntimeRunner(Path(artifacts) / g.file, threads, device=str(policy.device))
        for g in manifest.graphs
    }
    return GraphPrefixBackend("onnxruntime", runners, policy.device, policy.dtype)


def tensorrt_backend(policy: PrefixModel, artifacts: Path | None, engines: Path | None) -> GraphPrefixBackend:
    """TensorRT engines built by ``vla-export tensorrt``; an engine for another key is refused."""
    from vla_policy.backends.tensorrt_runner import EngineKey, TensorRTRunner, engine_matches

    manifest = _checked_manifest(policy, artifacts)
    if engines is None:
        raise BackendUnavailable("no engine directory configured (engines)")
    engines = Path(engines)
    index_path = engines / "engines.json"
    if not index_path.is_file():
        raise BackendUnavailable(f"{engines}: no engines.json; build them with 'vla-export tensorrt'")
    index = json.loads(index_path.read_text())
    runners: dict[str, GraphRunner] = {}
    for graph in manifest.graphs:
        if graph.name not in index:
            raise BackendUnavailable(f"{engines}: no engine for graph '{graph.name}'")
        engine = engines / index[graph.name]
        precision = json.loads(engine.with_suffix(".key.json").read_text()).get("precision", "")
        if not engine_matches(engine, EngineKey.current(graph.sha256, precision)):
            raise BackendUnavailable(f"{engine}: built for another GPU, TensorRT version or ONNX; rebuild it")
        runners[graph.name] = TensorRTRunner(engine)
    return GraphPrefixBackend("tensorrt", runners, policy.device, policy.dtype)


def _checked_manifest(policy: PrefixModel, artifacts: Path | None) -> ArtifactManifest:
    if artifacts is None:
        raise BackendUnavailable("no export directory configured (artifacts)")
    try:
        manifest = load_manifest(Path(artifacts), checkpoint_sha256=policy.digest)
    except ArtifactError as exc:
        raise BackendUnavailable(str(exc)) from exc
    if manifest.expert != policy.config.expert:
        raise BackendUnavailable(
            f"{artifacts}: exported for expert '{manifest.expert}', not '{policy.config.expert}'"
        )
    return manifest


def select_prefix_backend(
    policy: PrefixModel,
    order: Sequence[str] = BACKENDS,
    artifacts: Path | None = None,
    engines: Path | None = None,
) -> PrefixBackend:
    """The first backend in ``order`` that loads; logs the choice and why the others were skipped."""
    unknown = [name for name in order if name not in BACKENDS]
    if unknown:
        raise ValueError(f"unknown prefix backend(s) {unknown}; choose from {list(BACKENDS)}")
    skipped: list[str] = []
    for name in order:
        try:
            if name == "tensorrt":
                backend: PrefixBackend = tensorrt_backend(policy, artifacts, engines)
            elif name == "onnxruntime":
                backend = onnxruntime_backend(policy, artifacts)
            elif name == "torch_compile":
                backend = CompiledTorchPrefixBackend(policy)
            else:
                backend = TorchPrefixBackend(policy)
        except BackendUnavailable as exc:
            skipped.append(f"{name}: {exc}")
            log.info("prefix backend %s skipped: %s", name, exc)
            continue
        backend.skipped = tuple(skipped)
        log.info("prefix backend: %s%s", name, f" (skipped {'; '.join(skipped)})" if skipped else "")
        return backend
    raise BackendUnavailable("no prefix backend could be loaded: " + "; ".join(skipped))
