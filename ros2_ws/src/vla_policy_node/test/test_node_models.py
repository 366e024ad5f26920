"""The node runs unchanged with every action expert and with the ONNX Runtime prefix backend.

One node process per case: the expert comes from the checkpoint's config, the backend from parameters.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import ros_harness
from node_harness import GROUP_JOINTS, Harness, node_params, start_node, write_params_file

pytestmark = [pytest.mark.ros, pytest.mark.slow]

RUNNING = 2


def _checkpoint(preset: str, out: Path, history_frames: int = 1) -> Path:
    from vla_policy.model.policy import VLAPolicy
    from vla_policy.model.presets import get_preset
    from vla_policy.strict_config import replace

    config = get_preset(preset)
    config = replace(config, backbone=replace(config.backbone, history_frames=history_frames))
    VLAPolicy(config, seed=0).save(out, random_init=True)
    return out


def _run_node_until_commands(params: dict, env: dict[str, str], tmp: Path) -> tuple[Harness, str]:
    """Start the node, feed it, wait for a chunk and commands of every group; returns harness and log."""
    proc = start_node(write_params_file(tmp / "params.yaml", params), env, tmp / "node.log")
    harness = Harness()
    try:
        harness.publish_instruction("pick up the cube")
        running = harness.wait_status(lambda s: s.state == RUNNING and s.last_chunk_id > 0, timeout=120.0)
        assert running is not None, ros_harness.output(proc)[-4000:]
        assert harness.wait_for(lambda: all(len(harness.commands[g]) >= 3 for g in GROUP_JOINTS), 60.0)
        assert harness.wait_for(lambda: len(harness.chunks) > 0, 30.0)  # ~/action_chunk too
        assert not harness.violations, harness.violations[:10]
        assert proc.poll() is None
    finally:
        harness.close()
        code = ros_harness.stop(proc)
    assert code == 0, ros_harness.output(proc)[-3000:]
    return harness, ros_harness.output(proc)


@pytest.mark.parametrize("preset", ["pi0-tiny", "alpamayo-tiny"])
def test_node_runs_each_action_expert(preset: str, module_ros_env: dict[str, str], tmp_path: Path) -> None:
    checkpoint = _checkpoint(preset, tmp_path / preset)
    params = node_params(checkpoint, output_mode="forward")
    _, log = _run_node_until_commands(params, module_ros_env, tmp_path)
    assert f"configured {preset}@" in log


def test_node_runs_the_onnxruntime_prefix_backend(
    tiny_checkpoint: Path, module_ros_env: dict[str, str], tmp_path: Path
) -> None:
    from vla_export.onnx_export import export_prefix

    export_prefix(tiny_checkpoint, tmp_path / "onnx")
    params = node_params(
        tiny_checkpoint, output_mode="forward", backend="onnxruntime", onnx_dir=str(tmp_path / "onnx")
    )
    _, log = _run_node_until_commands(params, module_ros_env, tmp_path)
    assert "prefix backend onnxruntime" in log


def test_node_feeds_camera_history_frames(module_ros_env: dict[str, str], tmp_path: Path) -> None:
    checkpoint = _checkpoint("tiny", tmp_path / "tiny-history", history_frames=2)
    params = node_params(checkpoint, output_mode="forward")
    _, log = _run_node_until_commands(params, module_ros_env, tmp_path)
    assert "configured tiny@" in log


def test_node_runs_an_imported_gr00t_checkpoint(module_ros_env: dict[str, str], tmp_path: Path) -> None:
    """Issue 17: a GR00T N1.5 checkpoint in the official layout (the reference fixture, written by lerobot),
    imported with `vla-policy import`, through configure/activate: its 32-dim actions reach the groups
    through the modality map's layout."""
    from vla_policy.cli import main as vla_policy_main

    fixture = Path(__file__).resolve().parents[2] / "vla_policy" / "tests" / "fixtures" / "groot_n15_tiny"
    imported = tmp_path / "groot"
    args = ["import", str(fixture / "checkpoint"), "--modality", str(fixture / "modality.yaml")]
    assert vla_policy_main([*args, "--out", str(imported)]) == 0
    params = node_params(imported, output_mode="forward")
    harness, log = _run_node_until_commands(params, module_ros_env, tmp_path)
    assert "configured gr00t" in log.lower()
    chunk = harness.chunks[-1]
    assert [
        len(chunk.left_arm.joint_names),
        len(chunk.right_arm.joint_names),
        len(chunk.claw.joint_names),
    ] == [
        len(GROUP_JOINTS["left_arm"]),
        len(GROUP_JOINTS["right_arm"]),
        len(GROUP_JOINTS["claw"]),
    ]
