"""The node package's parameter files agree with the one schema (vla_policy/runtime/parameters.yaml)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from vla_policy.runtime.settings import build_settings, load_schema, read_parameter_file

PACKAGE = Path(__file__).resolve().parent.parent
ROS_PARAMETERS = {"use_sim_time"}
SIM_CONFIG = PACKAGE.parent / "vla_sim" / "config" / "aloha.yaml"


def test_defaults_yaml_is_the_one_generated_from_the_schema() -> None:
    """Regenerate with `python -m vla_policy.runtime.settings --write-defaults config/defaults.yaml`."""
    assert (PACKAGE / "config" / "defaults.yaml").read_text() == load_schema().defaults_yaml()


@pytest.mark.parametrize(
    "path", [PACKAGE / "config" / "bimanual.yaml", SIM_CONFIG], ids=["bimanual", "aloha"]
)
def test_robot_parameter_files_name_only_known_parameters_and_build(path: Path) -> None:
    params = read_parameter_file(path)
    schema = load_schema()
    assert set(params) <= set(schema.specs), sorted(set(params) - set(schema.specs))
    assert build_settings(params).joints.state_dim == 14


def test_launch_files_set_only_known_parameters() -> None:
    """Every `name:=value` node parameter the launch files pass is a schema parameter."""
    schema = load_schema()
    for launch in [*PACKAGE.glob("launch/*.py"), *(PACKAGE.parents[2] / "launch").glob("*.py")]:
        for name in re.findall(r'"([a-z_.]+):=', launch.read_text()):
            assert name in schema.specs or name in ROS_PARAMETERS, f"{launch.name}: {name}"
