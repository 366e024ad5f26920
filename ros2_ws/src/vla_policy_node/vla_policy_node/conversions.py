"""Message <-> array conversions for the VLA policy node (no logic beyond the conversion)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from builtin_interfaces.msg import Duration, Time
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from sensor_msgs.msg import CompressedImage, Image, JointState
from std_msgs.msg import Float64MultiArray, Header
from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint
from vla_msgs.msg import ActionChunk, PolicyStatus
from vla_policy.data.image_codec import decode_compressed, decode_raw
from vla_policy.latency_stats import summarize
from vla_policy.runtime.joint_groups import JointGroups
from vla_policy.runtime.policy_runtime import RuntimeState, RuntimeStatus
from vla_policy.stamps import sec_nanosec, to_seconds


def sec_to_stamp(seconds: float) -> Time:
    sec, nanosec = sec_nanosec(seconds)
    return Time(sec=sec, nanosec=nanosec)


def sec_to_duration(seconds: float) -> Duration:
    """A non-negative Duration (a negative time from start is a bug upstream: clamped to 0)."""
    sec, nanosec = sec_nanosec(max(0.0, float(seconds)))
    return Duration(sec=sec, nanosec=nanosec)


def message_stamp(header: Header, fallback: float) -> float:
    """The header stamp in seconds, or ``fallback`` (receipt time) when the stamp is zero."""
    t = to_seconds(header.stamp)
    return t if t > 0.0 else fallback


def image_to_rgb(msg: Image | CompressedImage, expected_size: tuple[int, int] | None = None) -> np.ndarray:
    """uint8 [H, W, 3] RGB from an Image or CompressedImage; ``ImageDecodeError`` on bad input."""
    if isinstance(msg, CompressedImage):
        return decode_compressed(msg.format, bytes(msg.data), expected_size)
    return decode_raw(msg.encoding, msg.height, msg.width, msg.step, bytes(msg.data), expected_size)


def rgb_to_image(rgb: np.ndarray, stamp: Time | None = None, encoding: str = "rgb8") -> Image:
    """An Image from uint8 [H, W, 3] RGB (rgb8 or bgr8), for synthetic publishers and tests."""
    arr = np.ascontiguousarray(rgb if encoding == "rgb8" else rgb[..., ::-1])
    msg = Image()
    if stamp is not None:
        msg.header.stamp = stamp
    msg.height, msg.width = int(arr.shape[0]), int(arr.shape[1])
    msg.encoding = encoding
    msg.step = int(arr.shape[1] * 3)
    msg.data = arr.tobytes()
    return msg


def joint_state_to_state(msg: JointState, groups: JointGroups) -> np.ndarray:
    """float32 [state_dim] in group order; ``JointMappingError`` on missing joints or NaN."""
    return groups.state_from_joint_state(list(msg.name), np.asarray(msg.position, dtype=np.float64))


def trajectory(
    joint_names: Sequence[str],
    positions: np.ndarray,
    times_from_start: Sequence[float],
    stamp: Time | None = None,
) -> JointTrajectory:
    """JointTrajectory with one point per row of ``positions`` [n, len(joint_names)]."""
    msg = JointTrajectory()
    if stamp is not None:
        msg.header.stamp = stamp
    msg.joint_names = list(joint_names)
    pos = np.asarray(positions, dtype=np.float64)
    for row, t in zip(pos, times_from_start, strict=True):
        msg.points.append(JointTrajectoryPoint(positions=row.tolist(), time_from_start=sec_to_duration(t)))
    return msg


def float_array(values: np.ndarray) -> Float64MultiArray:
    return Float64MultiArray(data=np.asarray(values, dtype=np.float64).ravel().tolist())


def action_chunk_msg(
    *,
    chunk_id: int,
    policy: str,
    obs_stamp: float,
    dt: float,
    latency: float,
    groups: JointGroups,
    actions: np.ndarray,
) -> ActionChunk:
    """``vla_msgs/ActionChunk`` of a chunk [T, action_dim]; point i at ``i * dt`` after the observation
    stamp."""
    msg = ActionChunk()
    msg.header.stamp = sec_to_stamp(obs_stamp)
    msg.chunk_id = int(chunk_id)
    msg.policy = policy
    msg.dt = float(dt)
    msg.inference_latency = sec_to_duration(latency)
    parts = groups.split_actions(actions)
    times = [i * dt for i in range(np.asarray(actions).shape[0])]
    for name, values in parts.items():
        traj = trajectory(groups.group(name), values, times, msg.header.stamp)
        setattr(msg, name, traj)
    return msg


def string_from_cdr(data: bytes) -> str:
    """The text of a serialized ``std_msgs/String`` (CDR), decoded as strict UTF-8: rclpy's own
    deserialisation would turn invalid bytes into U+FFFD silently. ``ValueError`` with the reason."""
    if len(data) < 8 or data[1] not in (0, 1):
        raise ValueError(f"not a CDR-encoded std_msgs/String ({len(data)} bytes)")
    length = int.from_bytes(data[4:8], "little" if data[1] == 1 else "big")
    raw = data[8 : 8 + length]
    if length < 1 or len(raw) != length:
        raise ValueError("truncated std_msgs/String")
    try:
        return raw.rstrip(b"\x00").decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(f"instruction is not valid UTF-8 (byte {exc.start}: {exc.reason})") from exc


def status_msg(
    *,
    stamp: float,
    state: int,
    reason: str,
    instruction: str = "",
    last_chunk_id: int = 0,
    observation_age: float = -1.0,
    latencies: Sequence[float] = (),
    deadline_misses: int = 0,
    inference_overruns: int = 0,
) -> PolicyStatus:
    msg = PolicyStatus()
    msg.header.stamp = sec_to_stamp(stamp)
    msg.state = int(state)
    msg.instruction = instruction
    msg.last_chunk_id = int(last_chunk_id)
    msg.observation_age = float(observation_age) if math.isfinite(observation_age) else -1.0
    if len(latencies):
        summary = summarize(latencies)
        msg.latency_mean, msg.latency_p50 = summary.mean, summary.median
        msg.latency_p99, msg.latency_max = summary.p99, summary.max
    msg.deadline_misses = int(deadline_misses)
    msg.inference_overruns = int(inference_overruns)
    msg.reason = reason
    return msg


def diagnostic_status(name: str, level: int, message: str, values: Mapping[str, Any]) -> DiagnosticStatus:
    """``level``: 0 OK, 1 WARN, 2 ERROR."""
    levels = {0: DiagnosticStatus.OK, 1: DiagnosticStatus.WARN, 2: DiagnosticStatus.ERROR}
    return DiagnosticStatus(
        level=levels.get(level, DiagnosticStatus.ERROR),
        name=name,
        message=message,
        hardware_id="vla_policy_node",
        values=[KeyValue(key=str(k), value=_fmt(v)) for k, v in values.items()],
    )


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def runtime_status_msg(stamp: float, status: RuntimeStatus) -> PolicyStatus:
    """``vla_msgs/PolicyStatus`` of the runtime's status."""
    return status_msg(
        stamp=stamp,
        state=int(status.state),
        reason=status.reason,
        instruction=status.instruction,
        last_chunk_id=status.last_chunk_id,
        observation_age=status.observation_age,
        latencies=status.latencies,
        deadline_misses=status.deadline_misses,
        inference_overruns=int(status.inference.get("overruns", 0)),
    )


def runtime_diagnostics(
    name: str, status: RuntimeStatus, period: float, rates: Mapping[str, float]
) -> list[DiagnosticStatus]:
    """The runtime's status as three DiagnosticStatus entries: control, inference, inputs. The control
    entry warns when more than 5 % of the ticks missed their deadline (the rate is not sustained)."""
    state = RuntimeState(status.state)
    control: dict[str, Any] = {
        "state": state.name,
        "reason": status.reason,
        "control_period_s": period,
        "ticks": status.ticks,
        "deadline_misses": status.deadline_misses,
        **status.jitter,
        **{f"safety_{k}": v for k, v in status.safety.items()},
    }
    level = {RuntimeState.RUNNING: 0, RuntimeState.READY: 0, RuntimeState.HOLDING: 1}.get(state, 2)
    message = status.reason[:200]
    if status.ticks >= 100 and status.deadline_misses > 0.05 * status.ticks:
        level = max(level, 1)
        message = (
            f"control loop misses {100.0 * status.deadline_misses / status.ticks:.1f} % of its deadlines at "
            f"{1.0 / period:.1f} Hz; {message}"
        )
    inference = {**status.inference, **{f"worker_{k}": v for k, v in status.worker.items()}}
    inputs: dict[str, Any] = {"instruction": status.instruction[:200]}
    for source, age in status.inputs["ages_s"].items():
        inputs[f"{source}.age_s"] = age
    for source, rate in rates.items():
        inputs[f"{source}.rate_hz"] = rate
    for source, count in status.inputs["dropped"].items():
        inputs[f"{source}.dropped"] = count
    for source, error in status.inputs["last_error"].items():
        inputs[f"{source}.last_error"] = error
    inputs["clock_jumps_back"] = status.inputs["clock_jumps_back"]
    return [
        diagnostic_status(f"{name}: control", level, message, control),
        diagnostic_status(
            f"{name}: inference", 2 if state == RuntimeState.FAULT else 0, "inference", inference
        ),
        diagnostic_status(
            f"{name}: inputs",
            1 if status.inputs["dropped"] or state == RuntimeState.HOLDING else 0,
            "inputs",
            inputs,
        ),
    ]


def diagnostic_array(stamp: float, statuses: Sequence[DiagnosticStatus]) -> DiagnosticArray:
    msg = DiagnosticArray()
    msg.header.stamp = sec_to_stamp(stamp)
    msg.status = list(statuses)
    return msg
