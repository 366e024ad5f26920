"""The policy shipped under models/: it loads, fits the ALOHA mapping, and its model card carries results."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
MODEL = ROOT / "models" / "tiny-aloha-transfer-cube"
ALOHA = ROOT / "ros2_ws" / "src" / "vla_sim" / "config" / "aloha.yaml"
MAX_BYTES = 30 * 1024 * 1024


def test_shipped_checkpoint_is_safetensors_json_and_small() -> None:
    files = {p.name for p in MODEL.iterdir() if p.is_file()}
    assert {"config.json", "model.safetensors", "statistics.json", "README.md"} <= files
    assert not any(name.endswith((".pt", ".pth", ".pkl", ".bin", ".ckpt")) for name in files)
    assert sum(p.stat().st_size for p in MODEL.rglob("*") if p.is_file()) <= MAX_BYTES


def test_shipped_checkpoint_cameras_match_the_aloha_node_config() -> None:
    params = next(iter(yaml.safe_load(ALOHA.read_text()).values()))["ros__parameters"]
    config = json.loads((MODEL / "config.json").read_text())
    cameras = config["model"]["backbone"]["cameras"]
    assert sorted(cameras) == sorted(params["cameras.names"])


def test_shipped_checkpoint_loads_and_predicts_a_finite_chunk() -> None:
    from vla_policy.model.policy import VLAPolicy
    from vla_policy.observation import synthetic_observation

    policy = VLAPolicy.from_checkpoint(MODEL)
    bb = policy.config.backbone
    obs = synthetic_observation(tuple(bb.cameras), 96, 14, bb.history_frames)
    chunk = policy.predict_chunk(obs, seed=0)
    assert chunk.actions.shape == (policy.config.action_horizon, 16)
    assert np.all(np.isfinite(chunk.actions))


def test_model_card_reports_the_closed_loop_success_rate_with_its_command() -> None:
    card = (MODEL / "README.md").read_text()
    assert "vla-sim eval" in card and "vla-policy train" in card and "vla-sim demos" in card
    for mode in ("none", "temporal_ensemble", "rtc"):
        result = json.loads((MODEL / "eval" / f"{mode}.json").read_text())
        assert result["n_episodes"] == 50 and result["blending"] == mode
        assert f"{result['successes']}/50" in card, f"the card does not state the {mode} result"


@pytest.mark.parametrize("mode", ["none", "temporal_ensemble", "rtc"])
@pytest.mark.parametrize("where", [".", "in_process"])
def test_recorded_evaluations_use_seeds_outside_the_training_data(mode: str, where: str) -> None:
    result = json.loads((MODEL / "eval" / where / f"{mode}.json").read_text())
    training = json.loads((MODEL / "training.json").read_text())
    assert not {e["seed"] for e in result["episodes"]} & set(training["demo_seeds"])


def test_model_card_reports_the_in_process_evaluation_with_its_interval() -> None:
    card = (MODEL / "README.md").read_text()
    assert "vla-sim eval --in-process" in card
    for mode in ("none", "temporal_ensemble", "rtc"):
        result = json.loads((MODEL / "eval" / "in_process" / f"{mode}.json").read_text())
        assert result["n_episodes"] == 50 and result["blending"] == mode
        low, high = result["success_rate_wilson95"]
        row = f"| {mode} | {result['successes']}/50, {round(100 * result['success_rate'])} % "
        assert row + f"({100 * low:.1f}-{100 * high:.1f} %)" in card, f"the card does not state {mode}"
