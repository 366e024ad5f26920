"""An imported GR00T N1.5 checkpoint (the reference-parity fixture, through ``vla-policy import``) loads
with ``VLAPolicy.from_checkpoint`` and passes ``vla-export onnx`` and ``vla-export parity``: the pixel
shuffle and Eagle's projector, the chat prompt and the 32-dim reference decoder all export."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from vla_export.cli import main as export_main
from vla_policy.cli import main as policy_main
from vla_policy.model.policy import VLAPolicy
from vla_policy.observation import synthetic_observation

FIXTURE = Path(__file__).resolve().parents[2] / "ros2_ws" / "src" / "vla_policy" / "tests" / "fixtures"
GROOT = FIXTURE / "groot_n15_tiny"


@pytest.fixture(scope="module")
def imported(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("groot") / "imported"
    argv = [
        "import",
        str(GROOT / "checkpoint"),
        "--modality",
        str(GROOT / "modality.yaml"),
        "--out",
        str(out),
    ]
    assert policy_main(argv) == 0
    return out


def test_imported_checkpoint_predicts_32_dim_chunks(imported: Path) -> None:
    policy = VLAPolicy.from_checkpoint(imported)
    obs = synthetic_observation(policy.config.backbone.cameras, 48, 16, seed=1)
    res = policy.predict_chunk(obs, seed=0)
    assert res.actions.shape == (16, 32) and np.all(np.isfinite(res.actions))
    assert {k: v.shape[1] for k, v in res.groups.items()} == {"left_arm": 7, "right_arm": 7, "claw": 2}


def test_onnx_export_and_parity_pass_on_imported_checkpoint(imported: Path, tmp_path: Path) -> None:
    onnx_dir = tmp_path / "onnx"
    assert export_main(["onnx", "--checkpoint", str(imported), "--out", str(onnx_dir)]) == 0
    assert export_main(["parity", "--checkpoint", str(imported), "--artifacts", str(onnx_dir)]) == 0
