"""Parameter validation and settings (no ROS graph needed)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from vla_policy_node.parameters import PARAMETERS, ParameterError, build_settings, load_defaults, validate_one

CONFIG_DIR = Path(__file__).resolve().parent.parent / "config"
CONFIG = CONFIG_DIR / "bimanual.yaml"


def _values(**kw: object) -> dict[str, object]:
    values = {name: default for name, (default, _) in PARAMETERS.items()}
    values["checkpoint"] = "/tmp/ckpt"
    values.update(kw)
    return values


def test_declared_defaults_are_those_of_defaults_yaml() -> None:
    params = yaml.safe_load((CONFIG_DIR / "defaults.yaml").read_text())["/**"]["ros__parameters"]
    assert {name: default for name, (default, _) in PARAMETERS.items()} == params


def test_defaults_yaml_missing_a_parameter_is_refused(tmp_path: Path) -> None:
    text = (CONFIG_DIR / "defaults.yaml").read_text().replace("    max_state_age:", "    max_state_agee:")
    (tmp_path / "defaults.yaml").write_text(text)
    with pytest.raises(ParameterError, match="max_state_age"):
        load_defaults(tmp_path / "defaults.yaml")


def test_bimanual_yaml_overrides_only_known_parameters() -> None:
    params = yaml.safe_load(CONFIG.read_text())["/**"]["ros__parameters"]
    assert set(params) <= set(PARAMETERS)


def test_bimanual_yaml_builds_settings_with_a_checkpoint() -> None:
    params = yaml.safe_load(CONFIG.read_text())["/**"]["ros__parameters"]
    settings = build_settings(dict(params, checkpoint="/tmp/ckpt"))
    assert settings.autostart and settings.joints.state_dim == 14


def test_checkpoint_is_required() -> None:
    with pytest.raises(ParameterError, match="checkpoint is required"):
        build_settings(_values(checkpoint=""))


def test_rate_not_positive_is_refused_at_runtime() -> None:
    with pytest.raises(ParameterError, match="> 0"):
        validate_one("control_rate_hz", 0.0, at_runtime=True)


def test_rate_zero_means_checkpoint_rate_at_start() -> None:
    assert build_settings(_values(control_rate_hz=0.0)).control_rate_hz == 0.0


def test_negative_rate_is_refused_at_start() -> None:
    with pytest.raises(ParameterError, match="control_rate_hz"):
        build_settings(_values(control_rate_hz=-1.0))


def test_camera_lists_must_match() -> None:
    with pytest.raises(ParameterError, match="same non-zero length"):
        build_settings(_values(**{"cameras.topics": ["/a"]}))


def test_unknown_camera_type_is_refused() -> None:
    with pytest.raises(ParameterError, match="CompressedImage"):
        build_settings(_values(**{"cameras.types": ["Image", "Image", "Jpeg"]}))


def test_too_many_arm_joints_are_refused() -> None:
    with pytest.raises(ParameterError, match="at most 7"):
        build_settings(_values(**{"joints.left_arm": [f"j{i}" for i in range(8)]}))


def test_limit_length_must_match_joints() -> None:
    with pytest.raises(ParameterError, match="values for 14 joints"):
        build_settings(_values(**{"limits.max_step": [0.1, 0.1]}))


def test_unknown_output_mode_is_refused() -> None:
    with pytest.raises(ParameterError, match="trajectory, forward"):
        validate_one("output_mode", "velocity")


def test_image_size_needs_both_dims() -> None:
    with pytest.raises(ParameterError, match="image_height and image_width"):
        build_settings(_values(image_height=64))


def test_backend_order_is_backend_then_fallbacks_without_repeats() -> None:
    fallback = ["onnxruntime", "tensorrt", "torch"]
    settings = build_settings(_values(backend="tensorrt", backend_fallback=fallback))
    assert settings.backend_order == ("tensorrt", "onnxruntime", "torch")


def test_unknown_fallback_backend_is_refused() -> None:
    with pytest.raises(ParameterError, match="backend_fallback"):
        validate_one("backend_fallback", ["onnx"])
