"""Export of the layer-KV experts' prefix (per-LLM-layer K/V) and ONNX Runtime parity, both tiny presets."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from vla_export.onnx_export import export_prefix
from vla_export.parity import run_parity
from vla_policy.backends.artifact_manifest import load_manifest
from vla_policy.model.policy import VLAPolicy
from vla_policy.model.presets import get_preset
from vla_policy.observation import synthetic_observation

PRESETS = ("pi0-tiny", "alpamayo-tiny")


@pytest.fixture(scope="module", params=PRESETS)
def exported(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    ckpt = tmp_path_factory.mktemp("ckpt") / request.param
    VLAPolicy(get_preset(request.param), seed=3).save(ckpt, random_init=True)
    out = tmp_path_factory.mktemp("onnx")
    export_prefix(ckpt, out, opset=19)
    return ckpt, out


def _cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(torch.nn.functional.cosine_similarity(a.flatten().double(), b.flatten().double(), dim=0))


def test_manifest_lists_layer_kv_outputs(exported: tuple[Path, Path]) -> None:
    ckpt, out = exported
    policy = VLAPolicy.from_checkpoint(ckpt)
    manifest = load_manifest(out, checkpoint_sha256=policy.digest)
    assert manifest.expert == policy.config.expert
    names = [t.name for t in manifest.graph("vl_head").outputs]
    n = policy.config.backbone.language.select_layer
    assert names == [f"layer_{kind}_{i}" for i in range(n) for kind in ("k", "v")]


def test_onnxruntime_layer_kv_matches_torch_with_left_padding(exported: tuple[Path, Path]) -> None:
    ckpt, out = exported
    policy = VLAPolicy.from_checkpoint(ckpt)
    bb = policy.config.backbone
    obs = [
        synthetic_observation(bb.cameras, 80, 16, instruction=text, seed=i)
        for i, text in enumerate(("pick", "put the small blue block into the box on the left please"))
    ]
    with torch.inference_mode():
        ref, _ = policy.encode_prefix_timed(obs)
        policy.use_prefix_backend(["onnxruntime"], artifacts=out)
        got, _ = policy.encode_prefix_timed(obs)
    assert not bool(ref.attention_mask.all())  # left padding present
    assert got.layer_kv is not None and len(got.layer_kv) == len(ref.layer_kv)
    mask = ref.attention_mask
    for (rk, rv), (gk, gv) in zip(ref.layer_kv, got.layer_kv, strict=True):
        for r, g in ((rk, gk), (rv, gv)):
            r, g = r.transpose(1, 2)[mask], g.transpose(1, 2)[mask]  # real tokens
            assert _cosine(r, g) >= 0.99999
            assert float((r - g).abs().max()) <= 1e-4
    state = policy.prepare_state([o.state for o in obs])
    noise = torch.randn(2, policy.config.action_horizon, 32, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        a = policy.expert.predict_chunk(ref, state, noise)
        b = policy.expert.predict_chunk(got, state, noise)
    assert float((a - b).abs().max()) <= 1e-4


def test_parity_report_passes(exported: tuple[Path, Path]) -> None:
    ckpt, out = exported
    report = run_parity(ckpt, out, "onnxruntime")
    assert report.passed, report.failures
    assert any("layer_kv" in c.name for c in report.comparisons)
