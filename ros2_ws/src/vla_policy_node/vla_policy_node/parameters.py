"""Parameters of the VLA policy node: declaration, validation at set time, and the settings they build.

Every parameter has a default here; ``config/bimanual.yaml`` lists them all. Parameters are read at
configure; changes made later are validated at once (refused with a reason) and take effect at the next
configure.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from vla_policy.backends.prefix_backend import BACKENDS
from vla_policy.runtime.chunk_scheduler import BLENDING_MODES, ChunkSchedulerConfig
from vla_policy.runtime.joint_groups import GROUP_NAMES, JointGroups
from vla_policy.runtime.observation_buffer import ObservationBufferConfig
from vla_policy.runtime.safety_filter import SafetyFilterConfig
from vla_policy.strict_config import ConfigError

OUTPUT_MODES: tuple[str, ...] = ("trajectory", "forward")
FORWARD_HOLD_MODES: tuple[str, ...] = ("repeat", "stop")
CAMERA_TYPES: tuple[str, ...] = ("Image", "CompressedImage")
CONTROL_LOOPS: tuple[str, ...] = ("thread", "timer")

ALOHA_LEFT = tuple(f"left_joint_{i}" for i in range(6))
ALOHA_RIGHT = tuple(f"right_joint_{i}" for i in range(6))

# name -> description. Defaults live in config/defaults.yaml (the package's parameter file).
DESCRIPTIONS: dict[str, str] = {
    "checkpoint": "checkpoint directory (required; `vla-policy init` makes a random one for demos)",
    "backend": "prefix backend tried first: torch | torch_compile | onnxruntime | tensorrt",
    "backend_fallback": (
        "prefix backends tried next, in order, when `backend` cannot load (choice and reasons are logged)"
    ),
    "onnx_dir": "ONNX export directory (`vla-export onnx`), for onnxruntime and tensorrt",
    "engine_dir": "TensorRT engine directory (`vla-export tensorrt`)",
    "device": "torch device of the model",
    "torch_threads": "torch intra-op threads for inference (0 = torch default)",
    "autostart": "configure and activate at start",
    "seed": "noise seed per chunk (-1 = random)",
    "warmup_runs": "inference runs at configure before control starts",
    "control_rate_hz": "control loop rate; 0 = 1 / dt of the checkpoint",
    "control_loop": (
        "thread: own thread sleeping to absolute deadlines on the node clock | timer: rclpy timer"
    ),
    "lockstep": (
        "sim evaluation under use_sim_time: each tick waits for the inputs stamped at the tick, runs a "
        "due inference to completion, then publishes ~/tick (a lock-step simulator waits for it)"
    ),
    "lockstep_timeout": "lockstep: wall seconds a tick waits for its inputs or its inference",
    "output_mode": "trajectory (JointTrajectory per chunk) | forward (Float64MultiArray per tick)",
    "forward_hold": "forward mode while holding: repeat the last safe command | stop publishing",
    "blending": "chunk blending: none | temporal_ensemble | rtc",
    "refill_threshold": "request a chunk when fewer actions remain: < 1 fraction, >= 1 count",
    "ensemble_m": "temporal ensemble weight exp(-m * k), k = 0 the oldest chunk",
    "rtc_overlap_steps": "RTC guided steps after the frozen ones (0 = all of the overlap)",
    "rtc_max_guidance_weight": "RTC guidance weight clip",
    "cameras.names": "camera names (as the checkpoint names them)",
    "cameras.topics": "camera topics, one per name",
    "cameras.types": "Image | CompressedImage, one per name",
    "image_height": "expected image height (0 = any)",
    "image_width": "expected image width (0 = any)",
    "joint_states_topic": "sensor_msgs/JointState topic",
    "instruction_topic": "std_msgs/String topic (reliable, transient local)",
    "default_instruction": "instruction used until one arrives (empty = wait for one)",
    "max_instruction_length": "longest accepted instruction, characters",
    "joints.left_arm": "left arm joint names (<= 7), head dims 0..6",
    "joints.right_arm": "right arm joint names (<= 7), head dims 7..13",
    "joints.claw": "claw joint names (<= 2), head dims 14..15",
    "controllers.left_arm": "controller namespace of the left arm",
    "controllers.right_arm": "controller namespace of the right arm",
    "controllers.claw": "controller namespace of the claw",
    "limits.position_lower": "lower position limit per joint (one value = all joints)",
    "limits.position_upper": "upper position limit per joint (one value = all joints)",
    "limits.max_step": "max change per control tick per joint (one value = all joints)",
    "max_image_age": "seconds before an image is stale",
    "max_state_age": "seconds before the joint state is stale",
    "max_camera_skew": "max seconds between camera stamps",
    "status_rate_hz": "rate of ~/status",
    "diagnostics_rate_hz": "rate of /diagnostics",
    "deadline_factor": "a control tick later than this many periods after the previous one is a miss",
    "retry_backoff_initial": "seconds before retrying after an inference exception",
    "retry_backoff_max": "longest retry backoff, seconds",
}


def package_config_dir() -> Path:
    """The package's ``config/``: beside the sources (editable, symlink installs), else share/."""
    source = Path(__file__).resolve().parent.parent / "config"
    if (source / "defaults.yaml").is_file():
        return source
    from ament_index_python.packages import get_package_share_directory

    return Path(get_package_share_directory("vla_policy_node")) / "config"


def load_defaults(path: Path | None = None) -> dict[str, Any]:
    """Parameter defaults from ``config/defaults.yaml``; every described parameter must be there."""
    path = path or package_config_dir() / "defaults.yaml"
    values = yaml.safe_load(path.read_text())["/**"]["ros__parameters"]
    missing, unknown = set(DESCRIPTIONS) - set(values), set(values) - set(DESCRIPTIONS)
    if missing or unknown:
        raise ParameterError(f"{path}: missing {sorted(missing)}, unknown {sorted(unknown)}")
    return values


class ParameterError(ValueError):
    """A parameter value is invalid; the message names it and says why."""


# name -> (default, description). The type is the default's type (lists: typed by their elements).
PARAMETERS: dict[str, tuple[Any, str]] = {
    name: (value, DESCRIPTIONS[name]) for name, value in load_defaults().items()
}


@dataclass(frozen=True)
class CameraSpec:
    name: str
    topic: str
    type: str  # Image | CompressedImage


@dataclass(frozen=True)
class NodeSettings:
    checkpoint: str
    backend_order: tuple[str, ...]  # backend first, then the fallbacks, without repeats
    onnx_dir: str
    engine_dir: str
    device: str
    torch_threads: int
    autostart: bool
    seed: int | None
    warmup_runs: int
    control_rate_hz: float  # 0 = from the checkpoint
    control_loop: str
    lockstep: bool
    lockstep_timeout: float
    output_mode: str
    forward_hold: str
    cameras: tuple[CameraSpec, ...]
    image_size: tuple[int, int] | None
    joint_states_topic: str
    instruction_topic: str
    default_instruction: str
    joints: JointGroups
    controllers: dict[str, str]
    buffer: ObservationBufferConfig
    scheduler: ChunkSchedulerConfig  # control_period / action_dt are placeholders until the model is loaded
    safety: SafetyFilterConfig
    status_rate_hz: float
    diagnostics_rate_hz: float
    deadline_factor: float
    retry_backoff_initial: float
    retry_backoff_max: float


def _positive(name: str, value: float, allow_zero: bool = False) -> None:
    ok = isinstance(value, int | float) and math.isfinite(value) and (value >= 0 if allow_zero else value > 0)
    if not ok:
        raise ParameterError(f"{name} must be {'>= 0' if allow_zero else '> 0'}, got {value!r}")


def _choice(name: str, value: str, choices: Iterable[str]) -> None:
    choices = tuple(choices)
    if value not in choices:
        raise ParameterError(f"{name} must be one of {', '.join(choices)}, got {value!r}")


def validate_one(name: str, value: Any, *, at_runtime: bool = False) -> None:
    """Check one parameter value on its own; ``ParameterError`` with the reason."""
    if name == "control_rate_hz":
        _positive(name, value, allow_zero=not at_runtime)
    elif name in (
        "status_rate_hz",
        "diagnostics_rate_hz",
        "max_image_age",
        "max_state_age",
        "max_camera_skew",
        "retry_backoff_initial",
        "retry_backoff_max",
        "lockstep_timeout",
    ):
        _positive(name, value)
    elif name == "deadline_factor":
        if not (isinstance(value, int | float) and math.isfinite(value) and value > 1.0):
            raise ParameterError(f"deadline_factor must be > 1, got {value!r}")
    elif name in ("refill_threshold", "max_instruction_length"):
        _positive(name, value)
    elif name in (
        "ensemble_m",
        "rtc_overlap_steps",
        "rtc_max_guidance_weight",
        "image_height",
        "image_width",
        "torch_threads",
        "warmup_runs",
    ):
        _positive(name, value, allow_zero=True)
    elif name == "backend":
        _choice(name, value, BACKENDS)
    elif name == "backend_fallback":
        for v in value:
            _choice(name, v, BACKENDS)
    elif name == "control_loop":
        _choice(name, value, CONTROL_LOOPS)
    elif name == "output_mode":
        _choice(name, value, OUTPUT_MODES)
    elif name == "forward_hold":
        _choice(name, value, FORWARD_HOLD_MODES)
    elif name == "blending":
        _choice(name, value, BLENDING_MODES)
    elif name == "cameras.types":
        for v in value:
            _choice(name, v, CAMERA_TYPES)
    elif name.startswith("limits."):
        if len(value) == 0 or not all(math.isfinite(v) for v in value):
            raise ParameterError(f"{name} must be a non-empty list of finite numbers")
        if name == "limits.max_step" and any(v <= 0 for v in value):
            raise ParameterError(f"{name} values must be > 0")


def build_settings(values: Mapping[str, Any]) -> NodeSettings:
    """Settings from a complete name -> value mapping; ``ParameterError`` names the first problem."""
    v = {name: values.get(name, default) for name, (default, _) in PARAMETERS.items()}
    for name, value in v.items():
        validate_one(name, value)
    if not v["checkpoint"]:
        raise ParameterError(
            "checkpoint is required (make one with `vla-policy init --preset tiny --out DIR`)"
        )
    names, topics, types = list(v["cameras.names"]), list(v["cameras.topics"]), list(v["cameras.types"])
    if not (len(names) == len(topics) == len(types)) or not names:
        raise ParameterError(
            f"cameras.names/topics/types must have the same non-zero length, got {len(names)}/{len(topics)}/"
            f"{len(types)}"
        )
    cameras = tuple(CameraSpec(n, t, ty) for n, t, ty in zip(names, topics, types, strict=True))
    h, w = int(v["image_height"]), int(v["image_width"])
    if (h == 0) != (w == 0):
        raise ParameterError("image_height and image_width must both be 0 (any) or both > 0")
    try:
        joints = JointGroups(
            left_arm=tuple(v["joints.left_arm"]),
            right_arm=tuple(v["joints.right_arm"]),
            claw=tuple(v["joints.claw"]),
        )
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
            max_step=tuple(v["limits.max_step"]),
        )
        safety.arrays(joints.state_dim)
    except (ConfigError, ValueError) as exc:
        raise ParameterError(str(exc)) from exc
    if v["retry_backoff_max"] < v["retry_backoff_initial"]:
        raise ParameterError("retry_backoff_max must be >= retry_backoff_initial")
    return NodeSettings(
        checkpoint=str(v["checkpoint"]),
        backend_order=tuple(dict.fromkeys([v["backend"], *v["backend_fallback"]])),
        onnx_dir=str(v["onnx_dir"]),
        engine_dir=str(v["engine_dir"]),
        device=v["device"],
        torch_threads=int(v["torch_threads"]),
        autostart=bool(v["autostart"]),
        seed=None if int(v["seed"]) < 0 else int(v["seed"]),
        warmup_runs=int(v["warmup_runs"]),
        control_rate_hz=float(v["control_rate_hz"]),
        control_loop=v["control_loop"],
        lockstep=bool(v["lockstep"]),
        lockstep_timeout=float(v["lockstep_timeout"]),
        output_mode=v["output_mode"],
        forward_hold=v["forward_hold"],
        cameras=cameras,
        image_size=(h, w) if h > 0 else None,
        joint_states_topic=v["joint_states_topic"],
        instruction_topic=v["instruction_topic"],
        default_instruction=v["default_instruction"],
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


def declare_parameters(node: Any) -> None:
    """Declare every parameter on ``node`` (an rclpy Node) with its description."""
    from rcl_interfaces.msg import ParameterDescriptor

    for name, (default, description) in PARAMETERS.items():
        node.declare_parameter(name, default, ParameterDescriptor(description=description))


def read_parameters(node: Any) -> dict[str, Any]:
    return {name: node.get_parameter(name).value for name in PARAMETERS}


def make_set_callback(node: Any) -> Any:
    """An ``add_on_set_parameters_callback`` callback refusing invalid values with the reason."""
    from rcl_interfaces.msg import SetParametersResult

    def _callback(params: list[Any]) -> SetParametersResult:
        for p in params:
            if p.name not in PARAMETERS:
                continue
            try:
                validate_one(p.name, p.value, at_runtime=True)
            except ParameterError as exc:
                return SetParametersResult(successful=False, reason=str(exc))
            except TypeError as exc:
                return SetParametersResult(successful=False, reason=f"{p.name}: {exc}")
        return SetParametersResult(successful=True)

    return _callback
