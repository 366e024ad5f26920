"""Offline, deterministic evaluation of a policy on an episode bag: ``vla-policy eval``.

The bag is stepped through in simulated time at the control period (1 / dt of the checkpoint unless
``--control-rate``) and drives the very ``PolicyRuntime`` the node runs: messages are decoded as the node
decodes them and pushed with their header stamps into the runtime's ``ObservationBuffer``; chunks are
requested, accepted and executed by its ``ChunkScheduler`` (blending none, temporal_ensemble or rtc), every
command passes its ``SafetyFilter`` (position, velocity and acceleration limits of the node's parameters),
and bad input or a failed inference holds as on the robot. The command at each tick (forward output, as
the robot receives it) is scored against the recorded commands (``<group>_controller/commands`` or
``joint_trajectory``) with ``eval_report.score_series``; the safety filter's interventions are reported.

Latency in simulated time: the model runs in an ``InlineWorker`` whose result is released
``--sim-latency`` seconds (a fixed, modelled figure) after the request, so ``report.json`` is identical for
the same bag, checkpoint, seed and flags. The measured wall-clock inference times (and per-stage timings)
are reported separately in ``report_timing.json`` and in the latency histogram; they vary from run to run.

Every chunk uses the same noise seed (``--seed``), as the node does with its ``seed`` parameter. Defaults
(buffer limits, blending, safety limits) are the node's: they come from the one parameter schema.
"""

from __future__ import annotations

import argparse
import logging
import math
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import tyro

from vla_policy.config_cli import add_subcommand, run_command
from vla_policy.data.episode_bag import (
    COMPRESSED_IMAGE_TYPE,
    DEFAULT_CONTROLLERS,
    DEFAULT_JOINTS,
    FLOAT_ARRAY_TYPE,
    IMAGE_TYPE,
    INSTRUCTION_TOPIC,
    JOINT_STATES_TOPIC,
    TRAJECTORY_TYPE,
    EpisodeBagError,
    EpisodeBagReader,
    EpisodeMetadata,
    JointNamesMismatchError,
    MissingTopicError,
    camera_topic,
    check_joint_names,
    command_topic,
    image_from_msg,
    trajectory_topic,
)
from vla_policy.evaluation.eval_report import (
    clear_previous,
    latency_summary,
    score_series,
    summary_table,
    write_report,
)
from vla_policy.runtime.inference import PolicySpec, WorkerFailure
from vla_policy.runtime.inline_worker import InlineWorker
from vla_policy.runtime.joint_groups import GROUP_NAMES, JointGroups, JointMappingError
from vla_policy.runtime.observation_buffer import (
    InstructionRejected,
    ObservationBuffer,
    ObservationBufferConfig,
)
from vla_policy.runtime.policy_runner import PolicyRunner
from vla_policy.runtime.policy_runtime import PolicyRuntime, RuntimeConfig, RuntimeState
from vla_policy.runtime.safety_filter import SafetyFilterConfig
from vla_policy.runtime.settings import ParameterError, build_settings, load_schema, read_parameter_file
from vla_policy.stamps import to_seconds
from vla_policy.strict_config import ConfigError, require

logger = logging.getLogger(__name__)


class EvalError(RuntimeError):
    """The evaluation cannot run; one line says why."""


_SCHEMA = load_schema()
_NODE = _SCHEMA.defaults()  # the node's parameter defaults: the one schema


def _node(param: str, **flag: Any) -> Any:
    """A field that is the node parameter ``param``: its flag's help is the schema's description."""
    return tyro.conf.arg(help=_SCHEMA.specs[param].description, **flag)


# EvalConfig fields that are node parameters of the same name, validated by the schema as the node does
_NODE_FIELDS = (
    "blending",
    "control_rate_hz",
    "refill_threshold",
    "ensemble_m",
    "rtc_overlap_steps",
    "rtc_max_guidance_weight",
    "max_image_age",
    "max_state_age",
    "max_camera_skew",
    "max_instruction_length",
    "default_instruction",
)


@dataclass(frozen=True)
class EvalConfig:
    """How to evaluate (the flags of vla-policy eval); defaults and checks are the node's parameters'."""

    seed: int = 0
    """noise seed of every chunk"""
    blending: Annotated[str, _node("blending")] = _NODE["blending"]
    sim_latency: float = 0.1
    """modelled inference latency in simulated time: seconds from observation to accepted chunk"""
    control_rate_hz: Annotated[
        float, _node("control_rate_hz", name="control-rate", aliases=("--control-rate-hz",))
    ] = _NODE["control_rate_hz"]
    refill_threshold: Annotated[float, _node("refill_threshold")] = _NODE["refill_threshold"]
    ensemble_m: Annotated[float, _node("ensemble_m")] = _NODE["ensemble_m"]
    rtc_overlap_steps: Annotated[int, _node("rtc_overlap_steps")] = _NODE["rtc_overlap_steps"]
    rtc_max_guidance_weight: Annotated[float, _node("rtc_max_guidance_weight")] = _NODE[
        "rtc_max_guidance_weight"
    ]
    # ObservationBuffer limits
    max_image_age: Annotated[float, _node("max_image_age")] = _NODE["max_image_age"]
    max_state_age: Annotated[float, _node("max_state_age")] = _NODE["max_state_age"]
    max_camera_skew: Annotated[float, _node("max_camera_skew")] = _NODE["max_camera_skew"]
    max_instruction_length: Annotated[int, _node("max_instruction_length")] = _NODE["max_instruction_length"]
    # from a node parameter file (--params), not flags
    safety: tyro.conf.Suppress[SafetyFilterConfig | None] = None  # None: the node's default limits
    joints: tyro.conf.Suppress[JointGroups | None] = None  # None: from the bag's metadata, else the node's
    camera_topics: tyro.conf.Suppress[Mapping[str, str] | None] = None  # camera -> topic; None: bag / default
    controllers: tyro.conf.Suppress[Mapping[str, str] | None] = None
    default_instruction: Annotated[str, _node("default_instruction")] = _NODE["default_instruction"]
    max_duration: float = 0.0
    """seconds of the episode to evaluate (0 = all)"""
    device: str = "cpu"
    """torch device"""
    plots: bool = True
    """write the PNG plots"""
    progress: bool = True
    """progress bar"""
    extra: tyro.conf.Suppress[Mapping[str, Any]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in _NODE_FIELDS:
            try:
                _SCHEMA.check(name, getattr(self, name))
            except ParameterError as exc:
                raise ConfigError(str(exc)) from exc
        require(self.seed >= 0, f"seed must be >= 0 (offline evaluation is deterministic), got {self.seed}")
        require(
            math.isfinite(self.sim_latency) and self.sim_latency >= 0,
            f"sim latency must be >= 0 seconds, got {self.sim_latency}",
        )
        require(self.max_duration >= 0, f"max duration must be >= 0 s (0 = all), got {self.max_duration}")

    def node_parameters(self, joints: JointGroups, cameras: Sequence[str]) -> dict[str, Any]:
        """The node parameters this evaluation runs with (forward output: a command every tick)."""
        safety = self.safety or SafetyFilterConfig(
            position_lower=_NODE["limits.position_lower"],
            position_upper=_NODE["limits.position_upper"],
            max_velocity=_NODE["limits.max_velocity"],
            max_acceleration=_NODE["limits.max_acceleration"],
        )
        return {
            "device": self.device,
            "seed": self.seed,
            "warmup_runs": 0,
            "blending": self.blending,
            "control_rate_hz": float(self.control_rate_hz),
            "refill_threshold": float(self.refill_threshold),
            "ensemble_m": float(self.ensemble_m),
            "rtc_overlap_steps": int(self.rtc_overlap_steps),
            "rtc_max_guidance_weight": float(self.rtc_max_guidance_weight),
            "max_image_age": float(self.max_image_age),
            "max_state_age": float(self.max_state_age),
            "max_camera_skew": float(self.max_camera_skew),
            "max_instruction_length": int(self.max_instruction_length),
            "output_mode": "forward",
            "forward_hold": "repeat",
            "cameras.names": list(cameras),
            "cameras.topics": [camera_topic(c) for c in cameras],
            "cameras.types": ["Image"] * len(cameras),
            **{f"joints.{g}": list(joints.group(g)) for g in GROUP_NAMES},
            "limits.position_lower": list(safety.position_lower),
            "limits.position_upper": list(safety.position_upper),
            "limits.max_velocity": list(safety.max_velocity),
            "limits.max_acceleration": list(safety.max_acceleration),
        }


# --- ground truth ---------------------------------------------------------------------------------------
class GroundTruth:
    """Recorded commands per group as a function of time (state-vector order)."""

    def __init__(self, joints: JointGroups) -> None:
        self.joints = joints
        self.forward: dict[str, tuple[list[float], list[np.ndarray]]] = {}
        self.trajectory: dict[str, list[tuple[float, np.ndarray]]] = {}
        self.sources: dict[str, str] = {}

    def add_forward(self, group: str, t: float, values: Sequence[float], topic: str) -> None:
        n = len(self.joints.group(group))
        vals = np.asarray(values, dtype=np.float64)
        if vals.size < n:
            raise JointNamesMismatchError(
                f"{topic} carries {vals.size} values but group {group} has {n} joints in the config"
            )
        times, rows = self.forward.setdefault(group, ([], []))
        times.append(t)
        rows.append(vals[:n])
        self.sources[group] = topic

    def add_trajectory(
        self, group: str, start: float, names: Sequence[str], points: Sequence[Any], topic: str
    ) -> None:
        want = self.joints.group(group)
        missing = [n for n in want if n not in names]
        if missing:
            raise JointNamesMismatchError(
                f"joint names in {topic} do not match the config: missing {missing} (has {list(names)})"
            )
        idx = [list(names).index(n) for n in want]
        samples = self.trajectory.setdefault(group, [])
        samples[:] = [s for s in samples if s[0] < start]  # a new trajectory replaces the rest
        for p in points:
            tt = start + to_seconds(p.time_from_start)
            samples.append((tt, np.asarray(p.positions, dtype=np.float64)[idx]))
        self.sources.setdefault(group, topic)

    def at(self, times: np.ndarray) -> np.ndarray:
        """[N, state_dim]; NaN where no command was recorded yet (forward: zero-order hold;
        trajectory: linear interpolation between points, hold after the last one)."""
        times = np.asarray(times, dtype=np.float64)
        out = np.full((times.size, self.joints.state_dim), np.nan)
        start = 0
        for g in GROUP_NAMES:
            n = len(self.joints.group(g))
            if not n:
                continue
            sl = slice(start, start + n)
            start += n
            if g in self.forward:
                ft, fv = self.forward[g]
                ta, va = np.asarray(ft), np.stack(fv)
                k = np.searchsorted(ta, times + 1e-9, side="right") - 1
                ok = k >= 0
                out[ok, sl] = va[k[ok]]
            elif self.trajectory.get(g):
                samples = sorted(self.trajectory[g], key=lambda s: s[0])
                ta = np.asarray([s[0] for s in samples])
                va = np.stack([s[1] for s in samples])
                ok = times >= ta[0] - 1e-9
                for j in range(n):
                    out[ok, sl.start + j] = np.interp(times[ok], ta, va[:, j])
        return out

    def missing_groups(self) -> list[str]:
        return [g for g in self.joints.active_groups if g not in self.forward and not self.trajectory.get(g)]


def ground_truth_topics(joints: JointGroups, controllers: Mapping[str, str]) -> dict[str, tuple[str, str]]:
    """topic -> (group, kind) for the controller topics of the active groups."""
    out: dict[str, tuple[str, str]] = {}
    for g in joints.active_groups:
        ctrl = controllers.get(g, DEFAULT_CONTROLLERS[g])
        out[command_topic(ctrl)] = (g, "forward")
        out[trajectory_topic(ctrl)] = (g, "trajectory")
    return out


def load_ground_truth(
    reader: EpisodeBagReader,
    joints: JointGroups,
    controllers: Mapping[str, str],
    topic_map: Mapping[str, str] | None = None,
) -> GroundTruth:
    """Read the recorded commands; ``topic_map`` renames topics (replay: node output topics)."""
    gt = GroundTruth(joints)
    wanted = ground_truth_topics(joints, controllers)
    have = reader.topics()
    present = [t for t in wanted if t in have]
    for t in present:
        kind = wanted[t][1]
        expected = FLOAT_ARRAY_TYPE if kind == "forward" else TRAJECTORY_TYPE
        if have[t].msgtype != expected:
            raise EpisodeBagError(f"topic {t} has type {have[t].msgtype}, expected {expected}")
    if present:
        for m in reader.messages(topics=present):
            g, kind = wanted[m.topic]
            if kind == "forward":
                gt.add_forward(g, m.time, m.msg.data, m.topic)
            else:
                start = to_seconds(m.msg.header.stamp) or m.time
                gt.add_trajectory(g, start, list(m.msg.joint_names), m.msg.points, m.topic)
    missing = gt.missing_groups()
    if missing:
        need = [
            f"{command_topic(controllers.get(g, DEFAULT_CONTROLLERS[g]))} or "
            f"{trajectory_topic(controllers.get(g, DEFAULT_CONTROLLERS[g]))}"
            for g in missing
        ]
        raise MissingTopicError(
            f"bag {reader.path} has no recorded commands for {', '.join(missing)}: expected {'; '.join(need)}"
        )
    return gt


# --- node parameter file --------------------------------------------------------------------------------
def read_node_params(path: str | Path) -> dict[str, Any]:
    """The ``ros__parameters`` of a node parameter YAML (first node entry); ``EvalError`` on failure."""
    try:
        return read_parameter_file(path)
    except ParameterError as exc:
        raise EvalError(str(exc)) from exc


def config_from_node_params(params: Mapping[str, Any], base: EvalConfig) -> EvalConfig:
    """Apply node parameters (cameras.*, joints.*, controllers.*, limits.*, buffer limits, blending...),
    checked against the schema as the node checks them."""
    from vla_policy.strict_config import replace

    try:
        settings = build_settings(params)
    except ParameterError as exc:
        raise EvalError(f"node parameters: {exc}") from exc
    kw: dict[str, Any] = {"safety": settings.safety}
    if "cameras.names" in params and "cameras.topics" in params:
        kw["camera_topics"] = {c.name: c.topic for c in settings.cameras}
    if any(k.startswith("joints.") for k in params):
        kw["joints"] = settings.joints
    if any(k.startswith("controllers.") for k in params):
        kw["controllers"] = dict(settings.controllers)
    for key in _NODE_FIELDS:
        if key in params:
            kw[key] = params[key]
    if settings.seed is not None:
        kw["seed"] = settings.seed
    return replace(base, **kw)


# --- bag -> observations, exactly as the node builds them (shared with episode_dataset) --------------
def make_observation_buffer(
    cfg: EvalConfig, cams: Mapping[str, str], history_frames: int, embodiment_id: int = 0
) -> ObservationBuffer:
    """The node's ObservationBuffer for these cameras, with the limits of ``cfg``."""
    return ObservationBuffer(
        ObservationBufferConfig(
            cameras=tuple(cams),
            max_image_age=cfg.max_image_age,
            max_state_age=cfg.max_state_age,
            max_camera_skew=cfg.max_camera_skew,
            max_instruction_length=cfg.max_instruction_length,
            history_frames=history_frames,
            embodiment_id=embodiment_id,
        )
    )


class BagObservationFeed:
    """Push an episode bag's inputs (cameras, /joint_states, /instruction) into an ObservationBuffer in
    time order, as the node's subscriptions do: ``advance(now)`` delivers every message up to ``now``."""

    def __init__(
        self,
        reader: EpisodeBagReader,
        buffer: ObservationBuffer,
        cfg: EvalConfig,
        meta: EpisodeMetadata,
        joints: JointGroups,
        cams: Mapping[str, str],
        has_instruction: bool,
    ) -> None:
        self.buffer = buffer
        self.joints = joints
        instruction = cfg.default_instruction or (meta.instruction if not has_instruction else "")
        if instruction:
            try:
                buffer.set_instruction(instruction)
            except InstructionRejected as exc:
                raise EvalError(f"instruction rejected: {exc.reason}") from exc
        self.topic_cam = {t: c for c, t in cams.items()}
        inputs = [*cams.values(), JOINT_STATES_TOPIC] + ([INSTRUCTION_TOPIC] if has_instruction else [])
        self.msgs = reader.messages(topics=inputs)
        self.nxt = next(self.msgs, None)
        self.image_size: tuple[int, int] | None = None  # any size, as the node with image_height = 0
        self.checked_names = False

    def advance(self, now: float) -> None:
        buffer, joints = self.buffer, self.joints
        while self.nxt is not None and self.nxt.time <= now + 1e-9:
            m = self.nxt
            self.nxt = next(self.msgs, None)
            if m.topic == INSTRUCTION_TOPIC:
                try:
                    buffer.set_instruction(m.msg.data)
                except InstructionRejected as exc:
                    logger.warning("instruction rejected: %s", exc.reason)
                continue
            stamp = to_seconds(m.msg.header.stamp)
            stamp = stamp if stamp > 0 else m.time
            if m.topic == JOINT_STATES_TOPIC:
                if not self.checked_names:
                    check_joint_names(list(m.msg.name), joints, JOINT_STATES_TOPIC)
                    self.checked_names = True
                try:
                    state = joints.state_from_joint_state(list(m.msg.name), m.msg.position)
                except JointMappingError as exc:
                    raise JointNamesMismatchError(f"{JOINT_STATES_TOPIC}: {exc}") from exc
                buffer.update_state(state, stamp)
            else:
                from vla_policy.data.image_codec import ImageDecodeError

                cam = self.topic_cam[m.topic]
                try:
                    buffer.update_image(cam, image_from_msg(m.msg, m.msgtype, self.image_size), stamp)
                except ImageDecodeError as exc:
                    buffer.report_error(cam, str(exc))

    def close(self) -> None:
        close = getattr(self.msgs, "close", None)
        if close is not None:
            close()


def episode_ticks(reader: EpisodeBagReader, period: float, max_duration: float = 0.0) -> np.ndarray:
    """Tick times (seconds) from the bag's first message to its last, every ``period``."""
    t_start = reader.start_time * 1e-9
    t_end = reader.end_time * 1e-9
    if max_duration > 0:
        t_end = min(t_end, t_start + max_duration)
    n_ticks = math.floor((t_end - t_start) / period + 1e-9) + 1
    return t_start + np.arange(n_ticks) * period


# --- evaluation -----------------------------------------------------------------------------------------
@dataclass
class EvalResult:
    report: dict[str, Any]
    timing: dict[str, Any]
    times: np.ndarray
    predicted: np.ndarray
    recorded: np.ndarray
    chunk_ids: np.ndarray
    wall_latencies: list[float]
    paths: dict[str, Path] = field(default_factory=dict)


def resolve_episode(
    reader: EpisodeBagReader, config: EvalConfig, model_cameras: Sequence[str]
) -> tuple[EpisodeMetadata, JointGroups, dict[str, str], dict[str, str]]:
    """(metadata, joints, camera name -> topic, controllers) for this bag and config; checks topics."""
    meta = reader.metadata
    joints = config.joints or meta.joints or DEFAULT_JOINTS
    controllers = dict(config.controllers or meta.controllers or DEFAULT_CONTROLLERS)
    bag_cams = meta.topics_of_cameras()
    cams: dict[str, str] = {}
    for c in model_cameras:
        if config.camera_topics and c in config.camera_topics:
            cams[c] = config.camera_topics[c]
        else:
            cams[c] = bag_cams.get(c, camera_topic(c))
    required: dict[str, list[str]] = {t: [IMAGE_TYPE, COMPRESSED_IMAGE_TYPE] for t in cams.values()}
    required[JOINT_STATES_TOPIC] = ["sensor_msgs/msg/JointState"]
    reader.require_topics(required)
    return meta, joints, cams, controllers


def run_offline_eval(
    bag: str | Path, checkpoint: str | Path, out: str | Path | None, config: EvalConfig | None = None
) -> EvalResult:
    cfg = config or EvalConfig()  # its values were checked when it was built
    if not Path(checkpoint).exists():
        raise EvalError(
            f"checkpoint {checkpoint} does not exist "
            "(make one with `vla-policy init --preset tiny --out DIR`)"
        )
    if out is not None:
        Path(out).mkdir(parents=True, exist_ok=True)
        clear_previous(Path(out))
    with EpisodeBagReader(bag) as reader:
        # the warm-up observation has the state the evaluation will send (the parameters' joints)
        state_dim = cfg.joints.state_dim if cfg.joints is not None else PolicySpec.state_dim
        spec = PolicySpec(checkpoint=str(checkpoint), device=cfg.device, warmup_runs=0, state_dim=state_dim)
        try:  # the runtime's one loader, with its one error style
            runner = PolicyRunner.load(spec)
        except WorkerFailure as exc:
            raise EvalError(str(exc)) from exc
        meta, joints, cams, controllers = resolve_episode(reader, cfg, runner.info.cameras)
        gt = load_ground_truth(reader, joints, controllers)
        has_instruction = INSTRUCTION_TOPIC in reader.topics()
        if not has_instruction and not (cfg.default_instruction or meta.instruction):
            raise MissingTopicError(
                f"bag {reader.path} has no topic {INSTRUCTION_TOPIC} and no instruction in its metadata"
            )
        result = _simulate(reader, spec, runner, cfg, meta, joints, cams, gt, has_instruction)
    result.report.update(
        bag=str(bag),
        episode=meta.summary(),
        ground_truth={g: gt.sources.get(g, "") for g in joints.active_groups},
        cameras=cams,
    )
    if out is not None:
        result.paths = write_report(
            out,
            result.report,
            result.timing,
            (result.times, result.predicted, result.recorded),
            joints,
            result.wall_latencies,
            cfg.sim_latency,
            plots=cfg.plots,
        )
    return result


def _simulate(
    reader: EpisodeBagReader,
    spec: PolicySpec,
    runner: PolicyRunner,
    cfg: EvalConfig,
    meta: EpisodeMetadata,
    joints: JointGroups,
    cams: Mapping[str, str],
    gt: GroundTruth,
    has_instruction: bool,
) -> EvalResult:
    from tqdm import tqdm

    info = runner.info
    try:
        settings = build_settings(cfg.node_parameters(joints, info.cameras))
        worker = InlineWorker(spec, cfg.sim_latency, runner)
        worker.start(0.0)
        sim_now = [float("nan")]  # the runtime's "wall" clock is simulated time: nothing here is real
        runtime = PolicyRuntime(
            RuntimeConfig.from_settings(settings, info), joints, worker, info, wall_clock=lambda: sim_now[0]
        )
    except (ParameterError, ConfigError) as exc:
        raise EvalError(str(exc)) from exc
    joints = runtime.joints
    period = runtime.period
    feed = BagObservationFeed(reader, runtime.buffer, cfg, meta, joints, cams, has_instruction)
    times = episode_ticks(reader, period, cfg.max_duration)
    n_ticks = times.size
    predicted = np.full((n_ticks, joints.state_dim), np.nan)
    chunk_ids = np.zeros(n_ticks, dtype=np.int64)
    wall: list[float] = []
    stage_times: dict[str, list[float]] = {}
    not_running: dict[str, int] = {}
    bar = tqdm(
        total=n_ticks,
        desc="eval",
        unit="tick",
        file=sys.stderr,
        disable=not cfg.progress,
        leave=False,
        dynamic_ncols=True,
    )
    runtime.activate(float(times[0]))
    try:
        for k, now in enumerate(times):
            feed.advance(now)  # deliver the messages received up to now
            sim_now[0] = float(now)
            out = runtime.tick(float(now))
            if out.chunk is not None:
                wall.append(out.chunk.compute_s)
                for stage, v in out.chunk.timings.items():
                    stage_times.setdefault(stage, []).append(float(v))
            if out.state != RuntimeState.RUNNING:
                key = out.reason.split(":")[0][:60]
                not_running[key] = not_running.get(key, 0) + 1
            if out.command is not None:
                predicted[k] = out.command
                current = runtime.scheduler.current
                chunk_ids[k] = current.chunk_id if current is not None and not out.hold else 0
            bar.update(1)
    finally:
        bar.close()
        feed.close()
        runtime.close()

    recorded = gt.at(times)
    normalizer = runner.policy.normalizer

    def normalize(values: np.ndarray) -> np.ndarray:
        full = joints.expand_to_actions(values.astype(np.float32))
        return joints.select_actions(np.asarray(normalizer.normalize_action(full), dtype=np.float64))

    scores = score_series(times, predicted, recorded, chunk_ids, joints, period, normalize)
    status = runtime.status(float(times[-1]))
    stats = runtime.scheduler.stats()
    report: dict[str, Any] = {
        "report_version": 2,
        "mode": "offline",
        "policy": info.name,
        "config": {
            "seed": cfg.seed,
            "blending": cfg.blending,
            "sim_latency_s": cfg.sim_latency,
            "control_period_s": period,
            "action_dt_s": info.dt,
            "action_horizon": info.horizon,
            "refill_threshold": cfg.refill_threshold,
            "buffer": {
                "max_image_age": cfg.max_image_age,
                "max_state_age": cfg.max_state_age,
                "max_camera_skew": cfg.max_camera_skew,
            },
            "limits": {
                "position_lower": list(settings.safety.position_lower),
                "position_upper": list(settings.safety.position_upper),
                "max_velocity": list(settings.safety.max_velocity),
                "max_acceleration": list(settings.safety.max_acceleration),
            },
        },
        "joints": {g: list(joints.group(g)) for g in joints.active_groups},
        "duration_s": float(times[-1] - times[0]) if n_ticks > 1 else 0.0,
        "inferences": len(wall),
        "inference_errors": int(status.inference["errors"]),
        "scheduler": {k: int(v) if k != "latency_estimate" else v for k, v in stats.items()},
        "hold_reasons": dict(sorted(not_running.items())),
        # what the safety filter changed on the way to the robot, as in the node
        "safety": status.safety,
        # simulated latency: deterministic; measured wall clock is in report_timing.json
        "latency": {
            "mode": "simulated",
            "p50_s": cfg.sim_latency,
            "p99_s": cfg.sim_latency,
            "max_s": cfg.sim_latency,
            "count": len(wall),
        },
        "scores": scores,
    }
    timing = {
        "note": "measured wall-clock figures of this run; not deterministic, not part of report.json",
        "inference_wall": latency_summary(wall),
        "stages": {s: latency_summary(v) for s, v in sorted(stage_times.items())},
    }
    return EvalResult(report, timing, times, predicted, recorded, chunk_ids, wall)


# --- CLI ------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class EvalCommand:
    """Step through an episode bag in simulated time with the node's PolicyRuntime (ObservationBuffer,
    ChunkScheduler, SafetyFilter), score the commands against the recorded ones, and write report.json
    (deterministic), report.md, report_timing.json (measured wall clock) and PNG plots. Defaults are the
    node's parameters; --params sets them from a node parameter file, and the flags given override both."""

    bag: str
    """episode bag directory (rosbag2, MCAP or sqlite3)"""
    checkpoint: str
    """checkpoint directory"""
    out: str
    """output directory for the report"""
    params: tyro.conf.DisallowNone[str | None] = None
    """node parameter YAML (cameras, joints, controllers, limits, buffer limits, blending)"""
    config: Annotated[EvalConfig, tyro.conf.OmitArgPrefixes] = EvalConfig()


def eval_command_defaults(argv: Sequence[str]) -> EvalCommand | None:
    """The defaults that ``--params FILE`` in ``argv`` sets (None without it); ``EvalError`` if it is bad."""
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--params")
    params = pre.parse_known_args(argv)[0].params
    if not params:
        return None
    config = config_from_node_params(read_node_params(params), EvalConfig())
    missing: Any = tyro.MISSING  # the required flags stay required
    return EvalCommand(bag=missing, checkpoint=missing, out=missing, params=params, config=config)


def run_eval(cmd: EvalCommand) -> int:
    """``vla-policy eval`` with its parsed flags; the exit code."""
    res = run_offline_eval(cmd.bag, cmd.checkpoint, cmd.out, cmd.config)
    sys.stdout.write(summary_table(res.report, res.timing) + "\n")
    sys.stdout.write(f"report: {Path(cmd.out) / 'report.json'}\n")
    return 0


def eval_main(argv: Sequence[str]) -> int:
    """``vla-policy eval ARGS``: the flags of :class:`EvalCommand`; bad input is one line, exit code 2."""
    errors = (EvalError, EpisodeBagError)
    return run_command("vla-policy eval", EvalCommand, argv, run_eval, errors, eval_command_defaults)


def add_eval_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``eval`` on the ``vla-policy`` subparsers (flags: :class:`EvalCommand`)."""
    return add_subcommand(
        subparsers, "eval", "offline, deterministic evaluation of a checkpoint on an episode bag", eval_main
    )


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m vla_policy.evaluation.offline_eval`` (the same as ``vla-policy eval``)."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    return eval_main(sys.argv[1:] if argv is None else argv)


if __name__ == "__main__":
    sys.exit(main())
