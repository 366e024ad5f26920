"""Export pipeline on the tiny preset: ONNX graphs, ORT parity, artifact checks, TensorRT gating."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from vla_export.onnx_export import export_prefix
from vla_export.parity import run_parity
from vla_export.parity_thresholds import THRESHOLDS, compare
from vla_policy.backends.artifact_manifest import ArtifactError, load_manifest
from vla_policy.backends.graph_runner import BackendUnavailable
from vla_policy.backends.tensorrt_runner import EngineKey, engine_matches
from vla_policy.model.policy import VLAPolicy
from vla_policy.model.presets import get_preset
from vla_policy.observation import synthetic_observation


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("ckpt") / "tiny"
    VLAPolicy(get_preset("tiny"), seed=3).save(path, random_init=True)
    return path


@pytest.fixture(scope="module")
def artifacts(checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("onnx")
    export_prefix(checkpoint, out, opset=19)
    return out


def test_export_writes_checked_graphs_and_manifest(artifacts: Path, checkpoint: Path) -> None:
    policy = VLAPolicy.from_checkpoint(checkpoint)
    manifest = load_manifest(artifacts, checkpoint_sha256=policy.digest)
    assert [g.name for g in manifest.graphs] == ["vision", "llm", "vl_head"]
    for graph in manifest.graphs:
        onnx.checker.check_model(str(artifacts / graph.file))
    assert manifest.opset == 19


def test_export_axes_are_dynamic_in_batch_images_and_sequence(artifacts: Path) -> None:
    manifest = load_manifest(artifacts)
    llm = manifest.graph("llm")
    shapes = {t.name: t.shape for t in llm.inputs}
    assert shapes["input_ids"] == ("batch", "seq_len")
    assert shapes["vit_embeds"][0] == "images"
    assert manifest.graph("vision").inputs[0].shape[0] == "images"


def test_onnxruntime_parity_passes_every_graph_and_the_chunk(checkpoint: Path, artifacts: Path) -> None:
    report = run_parity(checkpoint, artifacts, "onnxruntime")
    assert report.passed, report.failures
    names = {c.name for c in report.comparisons}
    assert {
        "vision/vit_embeds",
        "llm/backbone_features",
        "vl_head/vl_features",
        "end_to_end/actions",
    } <= names


def test_onnxruntime_prefix_handles_other_text_lengths(checkpoint: Path, artifacts: Path) -> None:
    policy = VLAPolicy.from_checkpoint(checkpoint)
    bb = policy.config.backbone
    noise = torch.randn(1, policy.config.action_horizon, policy.config.action_head.max_action_dim)
    for text in ("go", "pick up the cube and hand it to the other arm, slowly and carefully"):
        obs = synthetic_observation(bb.cameras, bb.vision.image_size, instruction=text)
        policy.use_prefix_backend(["torch"])
        expected = policy.predict_chunk(obs, noise=noise).actions
        policy.use_prefix_backend(["onnxruntime"], artifacts=artifacts)
        actual = policy.predict_chunk(obs, noise=noise).actions
        np.testing.assert_allclose(actual, expected, atol=1e-4)


def test_backend_selection_falls_back_to_torch_without_artifacts(checkpoint: Path) -> None:
    policy = VLAPolicy.from_checkpoint(checkpoint)
    assert policy.use_prefix_backend(["tensorrt", "onnxruntime", "torch"]) == "torch"


def test_corrupt_graph_is_refused(artifacts: Path, checkpoint: Path, tmp_path: Path) -> None:
    broken = tmp_path / "broken"
    shutil.copytree(artifacts, broken)
    with (broken / "llm.onnx").open("r+b") as handle:
        handle.seek(100)
        handle.write(b"\x00" * 64)
    with pytest.raises(ArtifactError, match="hash does not match"):
        load_manifest(broken)
    policy = VLAPolicy.from_checkpoint(checkpoint)
    with pytest.raises(BackendUnavailable, match="hash does not match"):
        policy.use_prefix_backend(["onnxruntime"], artifacts=broken)


def test_export_from_another_checkpoint_is_refused(artifacts: Path, tmp_path: Path) -> None:
    other = tmp_path / "other"
    VLAPolicy(get_preset("tiny"), seed=4).save(other, random_init=True)
    policy = VLAPolicy.from_checkpoint(other)
    with pytest.raises(BackendUnavailable, match="re-export"):
        policy.use_prefix_backend(["onnxruntime"], artifacts=artifacts)


def test_corrupt_manifest_is_refused(artifacts: Path, tmp_path: Path) -> None:
    broken = tmp_path / "manifest"
    shutil.copytree(artifacts, broken)
    data = json.loads((broken / "manifest.json").read_text())
    data["opsett"] = data.pop("opset")
    (broken / "manifest.json").write_text(json.dumps(data))
    with pytest.raises(ArtifactError, match="did you mean 'opset'"):
        load_manifest(broken)


def test_parity_cli_exits_zero_and_reports_each_output(checkpoint: Path, artifacts: Path) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "vla_export.cli",
            "parity",
            "--checkpoint",
            str(checkpoint),
            "--artifacts",
            str(artifacts),
            "--json",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["passed"] is True


def test_comparison_flags_a_breach() -> None:
    reference = torch.ones(4, 8)
    assert compare("same", reference, reference.clone(), "fp32").passed
    assert not compare("off", reference, reference + 1e-3, "fp32").passed
    assert not compare("nan", reference, reference * float("nan"), "fp16").passed
    assert THRESHOLDS["bf16"].min_cosine == 0.999


def test_engine_for_another_key_is_not_loaded(tmp_path: Path) -> None:
    engine = tmp_path / "vision.engine"
    engine.write_bytes(b"engine")
    built_for = EngineKey("abc", "10.9.0", "NVIDIA H100", "fp16")
    engine.with_suffix(".key.json").write_text(json.dumps(built_for.__dict__))
    assert engine_matches(engine, built_for)
    assert not engine_matches(engine, EngineKey("abc", "10.9.0", "NVIDIA L4", "fp16"))
    assert not engine_matches(engine, EngineKey("abc", "10.12.0", "NVIDIA H100", "fp16"))


def test_tensorrt_cli_without_tensorrt_says_so_in_one_line(artifacts: Path, tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime")
    try:
        import tensorrt  # noqa: F401

        pytest.skip("tensorrt is installed here; the missing-TensorRT message cannot be checked")
    except ImportError:
        pass
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "vla_export.cli",
            "tensorrt",
            "--onnx",
            str(artifacts),
            "--out",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0
    assert "tensorrt" in result.stderr.lower()


@pytest.mark.tensorrt
@pytest.mark.gpu
def test_tensorrt_engines_build_and_pass_parity(checkpoint: Path, artifacts: Path, tmp_path: Path) -> None:
    from vla_export.tensorrt_build import ProfileRanges, build_all

    _, engines = build_all(
        artifacts, tmp_path, "fp16", ProfileRanges(cameras=(3, 3, 3), text_len=(1, 16, 64))
    )
    assert set(engines) == {"vision", "llm", "vl_head"}
    report = run_parity(checkpoint, artifacts, "tensorrt", engines=tmp_path)
    assert report.passed, report.failures


def test_torch_compile_backend_is_selectable(checkpoint: Path) -> None:
    policy = VLAPolicy.from_checkpoint(checkpoint)
    assert policy.use_prefix_backend(["torch_compile", "torch"]) == "torch_compile"
