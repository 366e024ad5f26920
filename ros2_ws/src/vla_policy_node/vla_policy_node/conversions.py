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


def stamp_to_sec(stamp: Time) -> float:
    return float(stamp.sec) + float(stamp.nanosec) * 1e-9


def sec_to_stamp(seconds: float) -> Time:
    sec = math.floor(seconds)
    nanosec = round((seconds - sec) * 1e9)
    if nanosec >= 1_000_000_000:
        sec, nanosec = sec + 1, nanosec - 1_000_000_000
    return Time(sec=int(sec), nanosec=int(nanosec))


def sec_to_duration(seconds: float) -> Duration:
    seconds = max(0.0, float(seconds))
    sec = math.floor(seconds)
    nanosec = min(round((seconds - sec) * 1e9), 999_999_999)
    return Duration(sec=int(sec), nanosec=int(nanosec))


def duration_to_sec(d: Duration) -> float:
    return float(d.sec) + float(d.nanosec) * 1e-9


def message_stamp(header: Header, fallback: float) -> float:
    """The header stamp in seconds, or ``fallback`` (receipt time) when the stamp is zero."""
    t = stamp_to_sec(header.stamp)
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
    """``vla_msgs/ActionChunk`` of a chunk [T, 16]; point i at ``i * dt`` after the observation stamp."""
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


def status_msg(
    *,
    stamp: float,
    state: int,
    instruction: str,
    last_chunk_id: int,
    observation_age: float,
    latencies: Sequence[float],
    deadline_misses: int,
    inference_overruns: int,
    reason: str,
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


def diagnostic_array(stamp: float, statuses: Sequence[DiagnosticStatus]) -> DiagnosticArray:
    msg = DiagnosticArray()
    msg.header.stamp = sec_to_stamp(stamp)
    msg.status = list(statuses)
    return msg
