"""Export the prefix to ONNX at GR00T's split: vision (+ mlp1), LLM (+ eagle_linear), VL head (+ DiT K/V).

Each graph is a small wrapper module with positional tensor inputs and plain tensor outputs, exported
with the dynamo exporter (opset 18-20; 17 fails to down-convert and 23 emits ops ORT's CPU rejects).
Dynamic axes: batch, images (batch x cameras x frames) and sequence length (text + image tokens).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

import onnx
import torch
from torch import nn
from vla_policy.backends.artifact_manifest import (
    ArtifactManifest,
    GraphSpec,
    TensorSpec,
    file_sha256,
    write_manifest,
)
from vla_policy.model.policy import VLAPolicy
from vla_policy.observation import synthetic_observation

log = logging.getLogger(__name__)

SUPPORTED_OPSETS = (18, 19, 20)
# protobuf cannot hold a single file over 2 GB: larger graphs keep their weights as external data
EXTERNAL_DATA_THRESHOLD = 1 << 31
DTYPES = {"fp32": torch.float32, "fp16": torch.float16}


class VisionGraph(nn.Module):
    """pixel_values [N, 3, S, S] -> vit_embeds [N, patches, llm_hidden] (SigLIP + mlp1)."""

    def __init__(self, policy: VLAPolicy) -> None:
        super().__init__()
        self.backbone = policy.model.backbone

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.backbone.encode_images(pixel_values)


class PromptVisionGraph(VisionGraph):
    """CogVLA vision: pixel_values [N, 3, S, S], input_ids [B, L], attention_mask [B, L] -> vit_embeds
    [N, tokens_per_image, llm_hidden]; the prompt conditions FiLM and the encoder router."""

    def forward(  # type: ignore[override]
        self, pixel_values: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor
    ) -> torch.Tensor:
        return self.backbone.encode_images(pixel_values, input_ids, attention_mask)


class LanguageGraph(nn.Module):
    """input_ids [B, L], attention_mask [B, L] bool, vit_embeds [N, patches, D] -> features [B, L, D_vl]."""

    def __init__(self, policy: VLAPolicy) -> None:
        super().__init__()
        self.backbone = policy.model.backbone

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, vit_embeds: torch.Tensor
    ) -> torch.Tensor:
        return self.backbone.encode_language(input_ids, attention_mask, vit_embeds)


class VLHeadGraph(nn.Module):
    """backbone_features [B, L, D_vl], attention_mask [B, L] -> vl_features and per-block cross K/V."""

    def __init__(self, policy: VLAPolicy) -> None:
        super().__init__()
        self.head = policy.expert

    def forward(
        self, backbone_features: torch.Tensor, attention_mask: torch.Tensor
    ) -> tuple[torch.Tensor, ...]:
        prefix = self.head.prepare_prefix(backbone_features, attention_mask, with_cross_kv=True)
        return (prefix.features, *(t for kv in prefix.cross_kv for t in kv))


class PrefixEmbedGraph(nn.Module):
    """Layer-KV experts' ``llm`` stage: input_ids [B, L], attention_mask [B, L], vit_embeds [N, patches, D]
    -> LLM input embeds [B, L, D] (token embeddings with the image tokens spliced in)."""

    def __init__(self, policy: VLAPolicy) -> None:
        super().__init__()
        self.expert = policy.expert

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, vit_embeds: torch.Tensor
    ) -> torch.Tensor:
        return self.expert.embed_prefix(input_ids, attention_mask, vit_embeds)


class LayerKVGraph(nn.Module):
    """Layer-KV experts' ``vl_head`` stage: LLM input embeds [B, L, D], attention_mask [B, L] -> the cut
    LLM's per-layer K and V [B, kv_heads, L, head_dim] (``layer_k_i``, ``layer_v_i``)."""

    def __init__(self, policy: VLAPolicy) -> None:
        super().__init__()
        self.expert = policy.expert

    def forward(
        self, backbone_features: torch.Tensor, attention_mask: torch.Tensor
    ) -> tuple[torch.Tensor, ...]:
        kv = self.expert.prefix_layer_kv(backbone_features, attention_mask)
        return tuple(t for pair in kv for t in pair)


def layer_kv_names(policy: VLAPolicy) -> tuple[str, ...]:
    n = policy.config.backbone.language.select_layer
    return tuple(f"layer_{kind}_{i}" for i in range(n) for kind in ("k", "v"))


@dataclass(frozen=True)
class GraphPlan:
    """How to export one graph: module, example inputs, names and symbolic shapes."""

    name: str
    module: nn.Module
    inputs: dict[str, torch.Tensor]
    input_axes: dict[str, tuple[int | str, ...]]
    output_names: tuple[str, ...]


def cross_kv_names(policy: VLAPolicy) -> tuple[str, ...]:
    blocks = policy.expert.model.cross_layers
    return tuple(f"cross_{kind}_{i}" for i in blocks for kind in ("k", "v"))


def plan_graphs(policy: VLAPolicy, cameras: int | None = None) -> list[GraphPlan]:
    """Example inputs from a synthetic observation with ``cameras`` views (default: the config's)."""
    bb = policy.config.backbone
    obs = synthetic_observation(bb.cameras, bb.vision.image_size, history=bb.history_frames)
    inputs = policy.prepare_inputs([obs])
    if cameras is not None and cameras != len(bb.cameras):
        log.info("export traces with the config's %d cameras; the image axis stays dynamic", len(bb.cameras))
    pixel_values, input_ids, mask = inputs["pixel_values"], inputs["input_ids"], inputs["attention_mask"]
    layer_kv = getattr(policy.expert, "uses_layer_kv", False)  # deep_fusion / kv_cache_expert
    with torch.inference_mode():
        vit = policy.model.backbone.encode_images(pixel_values, input_ids, mask)  # prompt: CogVLA only
        if layer_kv:
            features = policy.expert.embed_prefix(input_ids, mask, vit)
        else:
            features = policy.model.backbone.encode_language(input_ids, mask, vit)
    d_vl = features.shape[-1]
    vision_axes = ("images", 3, bb.vision.image_size, bb.vision.image_size)
    seq = ("batch", "seq_len")
    if layer_kv:  # the prefix exports per-layer K/V instead of features
        llm_module: nn.Module = PrefixEmbedGraph(policy)
        head_module: nn.Module = LayerKVGraph(policy)
        head_outputs = layer_kv_names(policy)
    else:
        llm_module, head_module = LanguageGraph(policy), VLHeadGraph(policy)
        head_outputs = ("vl_features", *cross_kv_names(policy))
    vision_plan = GraphPlan(
        "vision",
        VisionGraph(policy),
        {"pixel_values": pixel_values},
        {"pixel_values": vision_axes},
        ("vit_embeds",),
    )
    if getattr(policy.model.backbone, "needs_prompt_for_vision", False):  # CogVLA FiLM / router
        vision_plan = GraphPlan(
            "vision",
            PromptVisionGraph(policy),
            {"pixel_values": pixel_values, "input_ids": input_ids, "attention_mask": mask},
            {"pixel_values": vision_axes, "input_ids": seq, "attention_mask": seq},
            ("vit_embeds",),
        )
    return [
        vision_plan,
        GraphPlan(
            "llm",
            llm_module,
            {"input_ids": input_ids, "attention_mask": mask, "vit_embeds": vit},
            {"input_ids": seq, "attention_mask": seq, "vit_embeds": ("images", vit.shape[1], vit.shape[2])},
            ("backbone_features",),
        ),
        GraphPlan(
            "vl_head",
            head_module,
            {"backbone_features": features, "attention_mask": mask},
            {"backbone_features": (*seq, d_vl), "attention_mask": seq},
            head_outputs,
        ),
    ]


def _dynamic_shapes(plan: GraphPlan) -> dict[str, dict[int, torch.export.Dim]]:
    dims: dict[str, torch.export.Dim] = {}
    shapes: dict[str, dict[int, torch.export.Dim]] = {}
    for name, axes in plan.input_axes.items():
        shapes[name] = {}
        for i, axis in enumerate(axes):
            if isinstance(axis, str):
                dims.setdefault(axis, torch.export.Dim(axis, min=1, max=8192))
                shapes[name][i] = dims[axis]
    return shapes


def _tensor_specs(model: onnx.ModelProto, kind: str) -> tuple[TensorSpec, ...]:
    values = model.graph.input if kind == "inputs" else model.graph.output
    specs = []
    for value in values:
        tensor_type = value.type.tensor_type
        shape = tuple(d.dim_param or d.dim_value for d in tensor_type.shape.dim)
        dtype = onnx.helper.tensor_dtype_to_np_dtype(tensor_type.elem_type).name
        specs.append(TensorSpec(value.name, shape, dtype))
    return tuple(specs)


def export_graph(plan: GraphPlan, out_dir: Path, opset: int) -> GraphSpec:
    """Export one graph, check it with onnx.checker, and describe it for the manifest."""
    path = out_dir / f"{plan.name}.onnx"
    args = tuple(plan.inputs.values())
    start = time.perf_counter()
    program = torch.onnx.export(
        plan.module,
        args,
        dynamo=True,
        opset_version=opset,
        input_names=list(plan.inputs),
        output_names=list(plan.output_names),
        dynamic_shapes=tuple(_dynamic_shapes(plan).values()),
        verbose=False,
    )
    model = program.model_proto
    external = model.ByteSize() > EXTERNAL_DATA_THRESHOLD
    onnx.save_model(model, str(path), save_as_external_data=external, location=f"{plan.name}.onnx.data")
    onnx.checker.check_model(str(path))
    log.info(
        "exported %s in %.1f s (%s)",
        path.name,
        time.perf_counter() - start,
        "external data" if external else "inline",
    )
    checked = onnx.load(str(path), load_external_data=False)
    return GraphSpec(
        name=plan.name,
        file=path.name,
        sha256=file_sha256(path),
        inputs=_tensor_specs(checked, "inputs"),
        outputs=_tensor_specs(checked, "outputs"),
        external_data=external,
    )


def export_prefix(
    checkpoint: Path,
    out_dir: Path,
    opset: int = 19,
    dtype: str = "fp32",
    cameras: int | None = None,
    max_text_len: int | None = None,
) -> ArtifactManifest:
    """Export every prefix graph of ``checkpoint`` into ``out_dir`` and write ``manifest.json``."""
    if opset not in SUPPORTED_OPSETS:
        raise ValueError(f"opset {opset} is not supported; use one of {SUPPORTED_OPSETS}")
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {sorted(DTYPES)}, got {dtype!r}")
    policy = VLAPolicy.from_checkpoint(checkpoint, dtype=DTYPES[dtype])
    if hasattr(policy.model.backbone, "merge_lora"):  # CogVLA LoRA adapters: exported graphs carry none
        policy.model.backbone.merge_lora()
    bb = policy.config.backbone
    out_dir.mkdir(parents=True, exist_ok=True)
    graphs = tuple(export_graph(plan, out_dir, opset) for plan in plan_graphs(policy, cameras))
    manifest = ArtifactManifest(
        checkpoint_sha256=policy.digest or "",
        model_name=policy.config.name,
        expert=policy.config.expert,
        opset=opset,
        dtype=dtype,
        graphs=graphs,
        extra={
            "image_tokens_per_camera": bb.tokens_per_image * bb.history_frames,
            "history_frames": bb.history_frames,
            "cameras": list(bb.cameras),
            "max_text_len": max_text_len or bb.max_text_tokens,
        },
    )
    write_manifest(out_dir, manifest)
    return manifest
