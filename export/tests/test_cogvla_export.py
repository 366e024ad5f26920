"""tiny-cogvla prefix (FiLM, aggregation, SigLIP + DINOv2 router, static top-k pruning): ONNX + ORT parity."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from vla_export.onnx_export import export_prefix
from vla_export.parity import run_parity
from vla_policy.backends.artifact_manifest import load_manifest
from vla_policy.model.lora import LoRALinear
from vla_policy.model.policy import VLAPolicy
from vla_policy.model.presets import get_preset
from vla_policy.observation import synthetic_observation


def _nonzero_film(policy: VLAPolicy) -> None:
    """Fresh FiLM is the identity; give it weights so the export really carries the conditioning."""
    gen = torch.Generator().manual_seed(0)
    for m in policy.model.backbone.cogvla.modules():
        if isinstance(m, LoRALinear):
            m.lora_b.data.normal_(0.0, 0.02, generator=gen)
        elif isinstance(m, torch.nn.Linear) and not m.weight.any():
            m.weight.data.normal_(0.0, 0.02, generator=gen)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("ckpt") / "tiny-cogvla"
    policy = VLAPolicy(get_preset("tiny-cogvla"), seed=3)
    _nonzero_film(policy)
    policy.save(path, random_init=True)
    return path


@pytest.fixture(scope="module")
def artifacts(checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("onnx")
    export_prefix(checkpoint, out, opset=19)
    return out


def test_vision_graph_takes_the_prompt_and_emits_aggregation_tokens(artifacts: Path) -> None:
    manifest = load_manifest(artifacts)
    vision = manifest.graph("vision")
    assert [t.name for t in vision.inputs] == ["pixel_values", "input_ids", "attention_mask"]
    assert tuple(vision.outputs[0].shape[1:]) == (4, 64)
    assert manifest.extra["image_tokens_per_camera"] == 4


def test_onnxruntime_matches_torch(checkpoint: Path, artifacts: Path) -> None:
    """Every stage and the prefix: cosine >= 0.99999 and max abs <= 1e-4 against eager torch."""
    policy = VLAPolicy.from_checkpoint(checkpoint)
    bb = policy.config.backbone
    obs = [
        synthetic_observation(bb.cameras, 64, 16, seed=s, instruction=text)
        for s, text in ((0, "pick up the red cube"), (1, "go"))
    ]
    with torch.inference_mode():
        reference = policy.encode_prefix(obs)
        policy.use_prefix_backend(("onnxruntime",), artifacts=artifacts)
        exported = policy.encode_prefix(obs)
    pairs = [(reference.features, exported.features)]
    pairs += [
        (a, b)
        for ka, kb in zip(reference.cross_kv, exported.cross_kv, strict=True)
        for a, b in zip(ka, kb, strict=True)
    ]
    for ref, out in pairs:
        cos = torch.nn.functional.cosine_similarity(ref.flatten().double(), out.flatten().double(), dim=0)
        assert cos >= 0.99999
        assert (ref - out).abs().max() <= 1e-4
    report = run_parity(checkpoint, artifacts, "onnxruntime")
    assert report.passed, report.failures
