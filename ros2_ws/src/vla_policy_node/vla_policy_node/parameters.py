"""The node's ROS parameters, declared from the runtime's one schema (``vla_policy/runtime/parameters.yaml``).

Every parameter is declared with its type, description, read-only flag and range; a change is checked at
once, on its own and together with every other current value (so contradictory limits are refused when
they are set, not at the next configure). Values take effect at the next configure, except those the
schema marks ``dynamic`` (the safety limits), which the node applies at once while configured.
"""

from __future__ import annotations

import array
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor, SetParametersResult
from rclpy.parameter import Parameter
from vla_policy.runtime.settings import ParameterError, ParameterSchema, load_schema

ARRAY_TYPES = {
    "bool_array": Parameter.Type.BOOL_ARRAY,
    "int_array": Parameter.Type.INTEGER_ARRAY,
    "double_array": Parameter.Type.DOUBLE_ARRAY,
    "string_array": Parameter.Type.STRING_ARRAY,
}
ROS_OWN = {"use_sim_time", "start_type_description_service", "qos_overrides"}


def package_config_dir() -> Path:
    """``config/`` of this package: the installed share directory, else the source tree."""
    try:
        from ament_index_python.packages import PackageNotFoundError, get_package_share_directory

        try:
            return Path(get_package_share_directory("vla_policy_node")) / "config"
        except PackageNotFoundError:
            pass
    except ImportError:
        pass
    return Path(__file__).resolve().parents[1] / "config"


def plain(value: Any) -> Any:
    """A parameter value as plain Python (rclpy hands arrays over as ``array.array`` or lists)."""
    if isinstance(value, array.array | list | tuple):
        return list(value)
    return value


def _descriptor(schema: ParameterSchema, name: str) -> ParameterDescriptor:
    spec = schema.specs[name]
    descriptor = ParameterDescriptor(description=spec.description, read_only=spec.read_only)
    bounds = spec.validation.get("bounds<>")
    if bounds is not None and spec.type == "double":
        descriptor.floating_point_range = [FloatingPointRange(from_value=bounds[0], to_value=bounds[1])]
    elif bounds is not None and spec.type == "int":
        descriptor.integer_range = [IntegerRange(from_value=int(bounds[0]), to_value=int(bounds[1]))]
    return descriptor


def declare_parameters(node: Any, schema: ParameterSchema | None = None) -> list[str]:
    """Declare every parameter of the schema on ``node``; returns warnings for overrides (from a
    parameter file or the command line) that name no parameter, with the nearest name."""
    schema = schema or load_schema()
    for name, spec in schema.specs.items():
        default = list(spec.default) if spec.is_array else spec.default
        value = ARRAY_TYPES[spec.type] if spec.is_array and not default else default
        node.declare_parameter(name, value, _descriptor(schema, name))
    overrides: Iterable[str] = getattr(node, "_parameter_overrides", {}).keys()
    return [
        f"{schema.unknown_message(n)} (ignored)" for n in overrides if n not in schema and n not in ROS_OWN
    ]


def read_parameters(node: Any, schema: ParameterSchema | None = None) -> dict[str, Any]:
    schema = schema or load_schema()
    return {name: plain(node.get_parameter(name).value) for name in schema.specs}


def make_validator(node: Any, schema: ParameterSchema | None = None) -> Callable[[list[Parameter]], Any]:
    """An ``add_on_set_parameters_callback`` callback: each changed value on its own, then the whole set
    as it would be after the change; refused with the reason."""
    schema = schema or load_schema()

    def _validate(params: list[Parameter]) -> SetParametersResult:
        changes = {p.name: plain(p.value) for p in params if p.name in schema}
        if not changes:
            return SetParametersResult(successful=True)
        try:
            for name, value in changes.items():
                schema.check(name, value)
            schema.check_all({**read_parameters(node, schema), **changes})
        except ParameterError as exc:
            return SetParametersResult(successful=False, reason=str(exc))
        return SetParametersResult(successful=True)

    return _validate


def dynamic_changes(params: list[Parameter], schema: ParameterSchema | None = None) -> list[str]:
    """The names among ``params`` that take effect at once."""
    schema = schema or load_schema()
    return [p.name for p in params if p.name in schema and schema.specs[p.name].dynamic]


__all__ = [
    "ParameterError",
    "declare_parameters",
    "dynamic_changes",
    "make_validator",
    "package_config_dir",
    "plain",
    "read_parameters",
]
