"""The runtime's parameters: the schema in ``parameters.yaml`` and the settings built from its values.

``load_schema()`` reads the one declarative source (generate_parameter_library's format). A
``ParameterSchema`` checks a value on its own (``check``) and a complete set against each other
(``check_all``), writes the node's ``defaults.yaml`` (``defaults_yaml``), and ``build_settings`` turns a
complete name -> value mapping into frozen ``PolicySettings``. The node, ``vla-policy eval`` and the
simulation's closed loop all read their parameters through here.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml

from vla_policy.runtime.chunk_scheduler import ChunkSchedulerConfig
from vla_policy.runtime.joint_groups import GROUP_NAMES, JointGroups
from vla_policy.runtime.observation_buffer import ObservationBufferConfig
from vla_policy.runtime.safety_filter import SafetyFilterConfig
from vla_policy.strict_config import ConfigError, nearest_name

SCHEMA_PATH = Path(__file__).with_name("parameters.yaml")
TYPES: dict[str, tuple[type, ...]] = {
    "bool": (bool,),
    "int": (int,),
    "double": (float, int),
    "string": (str,),
    "bool_array": (bool,),
    "int_array": (int,),
    "double_array": (float, int),
    "string_array": (str,),
}


class ParameterError(ValueError):
    """A parameter value is invalid; the message names the parameter and says why."""


@dataclass(frozen=True)
class ParameterSpec:
    name: str
    type: str
    default: Any
    description: str
    read_only: bool = False
    dynamic: bool = False  # takes effect at once while running (else at the next configure)
    validation: Mapping[str, tuple[Any, ...]] = field(default_factory=dict)

    @property
    def is_array(self) -> bool:
        return self.type.endswith("_array")

    def check(self, value: Any) -> None:
        """``ParameterError`` unless ``value`` has this parameter's type and passes its validation."""
        elements = list(value) if self.is_array and isinstance(value, list | tuple) else [value]
        if self.is_array and not isinstance(value, list | tuple):
            raise ParameterError(f"{self.name} must be a list ({self.type}), got {value!r}")
        allowed = TYPES[self.type]
        for v in elements:
            if (isinstance(v, bool) and bool not in allowed) or not isinstance(v, allowed):
                raise ParameterError(f"{self.name} must be {self.type}, got {value!r}")
            if isinstance(v, float) and not math.isfinite(v):
                raise ParameterError(f"{self.name} must be finite, got {value!r}")
        for rule, args in self.validation.items():
            _VALIDATORS[rule](self.name, value, *args)


def _fail(name: str, value: Any, expected: str) -> None:
    raise ParameterError(f"{name} must be {expected}, got {value!r}")


def _bounds(name: str, value: Any, lo: float, hi: float) -> None:
    if not lo <= value <= hi:
        _fail(name, value, f"in [{lo}, {hi}]")


def _gt(name: str, value: Any, bound: float) -> None:
    if not value > bound:
        _fail(name, value, f"> {bound}")


def _gt_eq(name: str, value: Any, bound: float) -> None:
    if not value >= bound:
        _fail(name, value, f">= {bound}")


def _lt_eq(name: str, value: Any, bound: float) -> None:
    if not value <= bound:
        _fail(name, value, f"<= {bound}")


def _one_of(name: str, value: Any, choices: list[Any]) -> None:
    if value not in choices:
        _fail(name, value, f"one of {', '.join(map(str, choices))}")


def _not_empty(name: str, value: Any) -> None:
    if len(value) == 0:
        _fail(name, value, "non-empty")


def _unique(name: str, value: Any) -> None:
    dups = sorted({v for v in value if list(value).count(v) > 1})
    if dups:
        raise ParameterError(f"{name} has duplicate entries {dups}")


def _subset_of(name: str, value: Any, choices: list[Any]) -> None:
    for v in value:
        if v not in choices:
            _fail(name, value, f"a list of {', '.join(map(str, choices))}")


def _element_bounds(name: str, value: Any, lo: float, hi: float) -> None:
    if not all(lo <= v <= hi for v in value):
        _fail(name, value, f"a list of values in [{lo}, {hi}]")


def _lower_element_bounds(name: str, value: Any, lo: float) -> None:
    if not all(v >= lo for v in value):
        _fail(name, value, f"a list of values >= {lo}")


def _element_gt(name: str, value: Any, lo: float) -> None:
    if not all(v > lo for v in value):
        _fail(name, value, f"a list of values > {lo}")


_VALIDATORS: dict[str, Any] = {
    "bounds<>": _bounds,
    "gt<>": _gt,
    "gt_eq<>": _gt_eq,
    "lt_eq<>": _lt_eq,
    "one_of<>": _one_of,
    "not_empty<>": _not_empty,
    "unique<>": _unique,
    "subset_of<>": _subset_of,
    "element_bounds<>": _element_bounds,
    "lower_element_bounds<>": _lower_element_bounds,
    "element_gt<>": _element_gt,
}
_SPEC_KEYS = {"type", "default_value", "description", "read_only", "dynamic", "validation"}


class ParameterSchema:
    """Every parameter of the runtime, in declaration order."""

    def __init__(self, specs: Iterable[ParameterSpec], namespace: str) -> None:
        self.specs: dict[str, ParameterSpec] = {s.name: s for s in specs}
        self.namespace = namespace

    def __contains__(self, name: str) -> bool:
        return name in self.specs

    def defaults(self) -> dict[str, Any]:
        return {name: spec.default for name, spec in self.specs.items()}

    def unknown_message(self, name: str) -> str:
        hint = nearest_name(name, self.specs)
        return f"unknown parameter '{name}'" + (f"; did you mean '{hint}'?" if hint else "")

    def check(self, name: str, value: Any) -> None:
        """``ParameterError`` unless ``name`` is a parameter and ``value`` is valid for it on its own."""
        if name not in self.specs:
            raise ParameterError(self.unknown_message(name))
        self.specs[name].check(value)

    def complete(self, values: Mapping[str, Any]) -> dict[str, Any]:
        """``values`` over the defaults; unknown names are refused."""
        unknown = [n for n in values if n not in self.specs]
        if unknown:
            raise ParameterError(self.unknown_message(unknown[0]))
        return {**self.defaults(), **values}

    def check_all(self, values: Mapping[str, Any]) -> None:
        """Every value on its own, then the rules that involve several parameters (``build_settings``)."""
        build_settings(values, self)

    def defaults_yaml(self) -> str:
        """The node's ``config/defaults.yaml``: every parameter with its description and default."""
        lines = [
            "# Defaults of every vla_policy_node parameter. GENERATED from the schema",
            "# vla_policy/runtime/parameters.yaml (types, validation, descriptions); regenerate with",
            "#   python -m vla_policy.runtime.settings --write-defaults <this file>",
            "# Robot-specific files (bimanual.yaml) override what differs.",
            "/**:",
            "  ros__parameters:",
        ]
        for spec in self.specs.values():
            note = " (takes effect at once)" if spec.dynamic else ""
            lines.append(f"    # {spec.description}{note}")
            value = list(spec.default) if spec.is_array else spec.default
            lines.append(f"    {spec.name}: {json.dumps(value)}")  # JSON is YAML flow style
        return "\n".join(lines) + "\n"


@lru_cache(maxsize=1)
def load_schema(path: Path = SCHEMA_PATH) -> ParameterSchema:
    """The schema of ``parameters.yaml`` (one top-level namespace, one entry per parameter)."""
    data = yaml.safe_load(path.read_text())
    if not isinstance(data, dict) or len(data) != 1:
        raise ConfigError(f"{path}: expected one top-level namespace")
    (namespace, entries), = data.items()
    specs = []
    for name, entry in entries.items():
        unknown = set(entry) - _SPEC_KEYS
        if unknown:
            raise ConfigError(f"{path}: {name}: unknown keys {sorted(unknown)}")
        if entry["type"] not in TYPES:
            raise ConfigError(f"{path}: {name}: unknown type {entry['type']!r}")
        validation = {rule: tuple(args) for rule, args in (entry.get("validation") or {}).items()}
        bad = [r for r in validation if r not in _VALIDATORS]
        if bad:
            raise ConfigError(f"{path}: {name}: unknown validation {bad}")
        default = entry["default_value"]
        spec = ParameterSpec(
            name=name,
            type=entry["type"],
            default=tuple(default) if isinstance(default, list) else default,
            description=entry["description"],
            read_only=bool(entry.get("read_only", False)),
            dynamic=bool(entry.get("dynamic", False)),
            validation=validation,
        )
        spec.check(list(spec.default) if spec.is_array else spec.default)
        specs.append(spec)
    return ParameterSchema(specs, namespace)


# --- settings -----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class CameraSpec:
    name: str
    topic: str
    type: str  # Image | CompressedImage


@dataclass(frozen=True)
class PolicySettings:
    """Everything the parameters decide, validated; built by ``build_settings``."""

    checkpoint: str
    backend_order: tuple[str, ...]  # backend first, then the fallbacks, without repeats
    onnx_dir: str
    engine_dir: str
    device: str
    torch_threads: int
    inference_worker: str
    inference_timeout: float  # 0 = one chunk
    worker_start_timeout: float
    autostart: bool
    seed: int | None
    warmup_runs: int
    control_rate_hz: float  # 0 = from the checkpoint
    control_thread_priority: int  # SCHED_FIFO priority of the control thread, 0 = normal
    lockstep: bool
    lockstep_timeout: float
    output_mode: str
    forward_hold: str
    cameras: tuple[CameraSpec, ...]
    image_size: tuple[int, int] | None
    joint_states_topic: str
    instruction_topic: str
    default_instruction: str
    joints: JointGroups  # on the default action layout until the model's is known
    controllers: Mapping[str, str]
    buffer: ObservationBufferConfig  # cameras from the parameters; history frames from the model
    scheduler: ChunkSchedulerConfig  # control_period / action_dt are placeholders until the model loads
    safety: SafetyFilterConfig
    status_rate_hz: float
    diagnostics_rate_hz: float
    deadline_factor: float
    retry_backoff_initial: float
    retry_backoff_max: float

    def control_period(self, model_dt: float) -> float:
        """Seconds between control ticks: 1 / control_rate_hz, or the checkpoint's dt."""
        return 1.0 / self.control_rate_hz if self.control_rate_hz > 0 else float(model_dt)


def build_settings(values: Mapping[str, Any], schema: ParameterSchema | None = None) -> PolicySettings:
    """Settings from ``values`` over the schema's defaults; ``ParameterError`` names the first problem
    (each value on its own first, then the rules that involve several)."""
    schema = schema or load_schema()
    v = schema.complete(values)
    for name, value in v.items():
        schema.check(name, list(value) if isinstance(value, tuple) else value)
    names, topics, types = list(v["cameras.names"]), list(v["cameras.topics"]), list(v["cameras.types"])
    if not len(names) == len(topics) == len(types):
        raise ParameterError(
            f"cameras.names/topics/types must have the same length, got {len(names)}/{len(topics)}/"
            f"{len(types)}"
        )
    h, w = int(v["image_height"]), int(v["image_width"])
    if (h == 0) != (w == 0):
        raise ParameterError("image_height and image_width must both be 0 (any) or both > 0")
    if v["retry_backoff_max"] < v["retry_backoff_initial"]:
        raise ParameterError("retry_backoff_max must be >= retry_backoff_initial")
    try:
        joints = JointGroups(**{g: tuple(v[f"joints.{g}"]) for g in GROUP_NAMES})
        buffer = ObservationBufferConfig(
            cameras=tuple(names),
            max_image_age=float(v["max_image_age"]),
            max_state_age=float(v["max_state_age"]),
            max_camera_skew=float(v["max_camera_skew"]),
            max_instruction_length=int(v["max_instruction_length"]),
        )
        scheduler = ChunkSchedulerConfig(
            blending=v["blending"],
            refill_threshold=float(v["refill_threshold"]),
            ensemble_m=float(v["ensemble_m"]),
            rtc_overlap_steps=int(v["rtc_overlap_steps"]),
            rtc_max_guidance_weight=float(v["rtc_max_guidance_weight"]),
        )
        safety = SafetyFilterConfig(
            position_lower=tuple(v["limits.position_lower"]),
            position_upper=tuple(v["limits.position_upper"]),
            max_velocity=tuple(v["limits.max_velocity"]),
            max_acceleration=tuple(v["limits.max_acceleration"]),
        )
        safety.arrays(joints.state_dim)
    except (ConfigError, ValueError) as exc:
        raise ParameterError(str(exc)) from exc
    return PolicySettings(
        checkpoint=str(v["checkpoint"]),
        backend_order=tuple(dict.fromkeys([v["backend"], *v["backend_fallback"]])),
        onnx_dir=str(v["onnx_dir"]),
        engine_dir=str(v["engine_dir"]),
        device=str(v["device"]),
        torch_threads=int(v["torch_threads"]),
        inference_worker=str(v["inference_worker"]),
        inference_timeout=float(v["inference_timeout"]),
        worker_start_timeout=float(v["worker_start_timeout"]),
        autostart=bool(v["autostart"]),
        seed=None if int(v["seed"]) < 0 else int(v["seed"]),
        warmup_runs=int(v["warmup_runs"]),
        control_rate_hz=float(v["control_rate_hz"]),
        control_thread_priority=int(v["control_thread_priority"]),
        lockstep=bool(v["lockstep"]),
        lockstep_timeout=float(v["lockstep_timeout"]),
        output_mode=str(v["output_mode"]),
        forward_hold=str(v["forward_hold"]),
        cameras=tuple(CameraSpec(n, t, ty) for n, t, ty in zip(names, topics, types, strict=True)),
        image_size=(h, w) if h > 0 else None,
        joint_states_topic=str(v["joint_states_topic"]),
        instruction_topic=str(v["instruction_topic"]),
        default_instruction=str(v["default_instruction"]),
        joints=joints,
        controllers={g: str(v[f"controllers.{g}"]) for g in GROUP_NAMES},
        buffer=buffer,
        scheduler=scheduler,
        safety=safety,
        status_rate_hz=float(v["status_rate_hz"]),
        diagnostics_rate_hz=float(v["diagnostics_rate_hz"]),
        deadline_factor=float(v["deadline_factor"]),
        retry_backoff_initial=float(v["retry_backoff_initial"]),
        retry_backoff_max=float(v["retry_backoff_max"]),
    )


def read_parameter_file(path: str | Path) -> dict[str, Any]:
    """The ``ros__parameters`` of a node parameter YAML (the first node entry); ``ParameterError`` with
    one line when the file cannot be read or holds no such section."""
    try:
        data = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise ParameterError(f"cannot read parameter file {path}: {str(exc).splitlines()[0]}") from exc
    if isinstance(data, dict):
        for value in data.values():
            if isinstance(value, dict) and isinstance(value.get("ros__parameters"), dict):
                return dict(value["ros__parameters"])
    raise ParameterError(f"parameter file {path}: no ros__parameters section")


def main(argv: list[str] | None = None) -> int:
    """``python -m vla_policy.runtime.settings --write-defaults FILE``: regenerate defaults.yaml."""
    import argparse

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--write-defaults", type=Path, required=True)
    args = parser.parse_args(argv)
    args.write_defaults.write_text(load_schema().defaults_yaml())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
