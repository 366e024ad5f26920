"""The one parameter schema (runtime/parameters.yaml) and the settings built from it."""

from __future__ import annotations

from pathlib import Path

import pytest
from vla_policy.runtime.settings import ParameterError, build_settings, load_schema

SCHEMA = load_schema()


def test_every_parameter_has_a_type_a_default_and_a_description() -> None:
    assert len(SCHEMA.specs) >= 45
    for spec in SCHEMA.specs.values():
        assert spec.description and spec.type
        spec.check(list(spec.default) if spec.is_array else spec.default)  # defaults pass validation


def test_defaults_build_settings() -> None:
    settings = build_settings({})
    assert settings.safety.max_velocity == (2.5,) and settings.joints.state_dim == 14
    assert settings.buffer.max_state_age == SCHEMA.specs["max_state_age"].default


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [
        ("control_rate_hz", -1.0, "in [0.0, 500.0]"),
        ("control_rate_hz", 1e6, "in [0.0, 500.0]"),
        ("blending", "average", "one of none, temporal_ensemble, rtc"),
        ("limits.max_velocity", [0.0], "values > 0.0"),
        ("limits.max_acceleration", [-1.0], "values >= 0.0"),
        ("cameras.names", ["a", "a"], "duplicate"),
        ("backend_fallback", ["cuda"], "a list of"),
        ("seed", 1.5, "must be int"),
        ("autostart", 1, "must be bool"),
        ("deadline_factor", 1.0, "> 1.0"),
    ],
)
def test_a_bad_value_is_refused_with_the_reason(name: str, value: object, expected: str) -> None:
    with pytest.raises(ParameterError, match=name.replace(".", r"\.")) as exc:
        SCHEMA.check(name, value)
    assert expected in str(exc.value)


def test_rate_zero_means_the_checkpoints_rate_and_is_valid() -> None:
    SCHEMA.check("control_rate_hz", 0.0)
    assert build_settings({"control_rate_hz": 0.0}).control_period(0.04) == pytest.approx(0.04)


def test_contradictory_limits_are_refused_as_a_set() -> None:
    """Each value is valid alone; together they are not (issue 21, item 5)."""
    SCHEMA.check("limits.position_lower", [2.0])
    with pytest.raises(ParameterError, match="position_lower >= position_upper"):
        SCHEMA.check_all({"limits.position_lower": [2.0], "limits.position_upper": [1.0]})


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ({"cameras.topics": ["/a"]}, "same length"),
        ({"image_height": 64}, "both be 0"),
        ({"retry_backoff_max": 0.1, "retry_backoff_initial": 1.0}, "retry_backoff_max"),
        ({"limits.max_velocity": [1.0, 2.0]}, "2 values for 14 joints"),
        ({"joints.left_arm": [f"j{i}" for i in range(8)]}, "the model has 7 actions for it"),
    ],
)
def test_rules_across_parameters(values: dict[str, object], expected: str) -> None:
    with pytest.raises(ParameterError, match=expected):
        build_settings(values)


def test_an_unknown_parameter_names_the_nearest() -> None:
    with pytest.raises(ParameterError, match=r"did you mean 'limits\.max_velocity'"):
        SCHEMA.check("limits.max_velocty", [1.0])


def test_the_generated_defaults_yaml_round_trips(tmp_path: Path) -> None:
    import yaml

    out = tmp_path / "defaults.yaml"
    out.write_text(SCHEMA.defaults_yaml())
    params = yaml.safe_load(out.read_text())["/**"]["ros__parameters"]
    assert {k: (list(v) if isinstance(v, tuple) else v) for k, v in SCHEMA.defaults().items()} == params
