"""Offline, deterministic evaluation of a policy on an episode bag: ``vla-policy eval``.

The bag is stepped through in simulated time at the control period (1 / dt of the checkpoint unless
``--control-rate``). Observations are built as the node builds them: messages are decoded with
``image_codec`` / ``JointGroups`` and pushed with their header stamps into the same ``ObservationBuffer``;
chunks are requested, accepted and executed by the same ``ChunkScheduler`` (blending none,
temporal_ensemble or rtc). The predicted command at each tick is scored against the recorded commands
(``<group>_controller/commands`` or ``joint_trajectory``) with ``eval_report.score_series``.

Latency in simulated time: an inference started at tick time ``t`` is accepted at ``t + sim_latency``
(``--sim-latency``, seconds; a fixed, modelled figure), so ``report.json`` is identical for the same bag,
checkpoint, seed and flags. The measured wall-clock inference times (and per-stage timings) are reported
separately in ``report_timing.json`` and in the latency histogram; they vary from run to run.

Every chunk uses the same noise seed (``--seed``), as the node does with its ``seed`` parameter.
"""

from __future__ import annotations

import argparse
import logging
import math
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

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
    one_line,
    stamp_to_sec,
    trajectory_topic,
)
from vla_policy.evaluation.eval_report import (
    clear_previous,
    latency_summary,
    score_series,
    summary_table,
    write_report,
)
from vla_policy.runtime.chunk_scheduler import BLENDING_MODES, ChunkScheduler, ChunkSchedulerConfig
from vla_policy.runtime.joint_groups import GROUP_NAMES, JointGroups, JointMappingError
from vla_policy.runtime.observation_buffer import (
    InstructionRejected,
    ObservationBuffer,
    ObservationBufferConfig,
)

logger = logging.getLogger(__name__)


class EvalError(RuntimeError):
    """The evaluation cannot run; one line says why."""


@dataclass(frozen=True)
class EvalConfig:
    seed: int = 0
    blending: str = "none"
    sim_latency: float = 0.1  # seconds from observation to accepted chunk, in simulated time
    control_rate_hz: float = 0.0  # 0 = 1 / dt of the checkpoint (the node's default)
    refill_threshold: float = 0.5
    ensemble_m: float = 0.01
    rtc_overlap_steps: int = 0
    rtc_max_guidance_weight: float = 5.0
    # ObservationBuffer limits: the node's parameter defaults
    max_image_age: float = 0.5
    max_state_age: float = 0.25
    max_camera_skew: float = 0.2
    max_instruction_length: int = 1000
    joints: JointGroups | None = None  # None: from the bag's metadata, else the node's defaults
    camera_topics: Mapping[str, str] | None = None  # camera name -> topic; None: bag metadata / default
    controllers: Mapping[str, str] | None = None
    default_instruction: str = ""  # used when the bag has no /instruction
    max_duration: float = 0.0  # seconds of the episode to evaluate (0 = all)
    device: str = "cpu"
    plots: bool = True
    progress: bool = True
    extra: Mapping[str, Any] = field(default_factory=dict)


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
            tt = start + float(p.time_from_start.sec) + float(p.time_from_start.nanosec) * 1e-9
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
                start = stamp_to_sec(m.msg.header.stamp) or m.time
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
    """The ``ros__parameters`` of a node parameter YAML (first node entry)."""
    import yaml

    try:
        data = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise EvalError(f"cannot read parameter file {path}: {one_line(exc)}") from exc
    if not isinstance(data, dict):
        raise EvalError(f"parameter file {path}: expected a mapping")
    for value in data.values():
        if isinstance(value, dict) and isinstance(value.get("ros__parameters"), dict):
            return dict(value["ros__parameters"])
    raise EvalError(f"parameter file {path}: no ros__parameters section")


def config_from_node_params(params: Mapping[str, Any], base: EvalConfig) -> EvalConfig:
    """Apply node parameters (cameras.*, joints.*, controllers.*, limits of the buffer, blending...)."""
    from vla_policy.strict_config import replace

    kw: dict[str, Any] = {}
    if "cameras.names" in params and "cameras.topics" in params:
        kw["camera_topics"] = dict(zip(params["cameras.names"], params["cameras.topics"], strict=True))
    if any(k.startswith("joints.") for k in params):
        kw["joints"] = JointGroups(**{g: tuple(params.get(f"joints.{g}", ())) for g in GROUP_NAMES})
    if any(k.startswith("controllers.") for k in params):
        kw["controllers"] = {
            g: str(params.get(f"controllers.{g}", DEFAULT_CONTROLLERS[g])) for g in GROUP_NAMES
        }
    for key in (
        "blending",
        "refill_threshold",
        "ensemble_m",
        "rtc_overlap_steps",
        "rtc_max_guidance_weight",
        "max_image_age",
        "max_state_age",
        "max_camera_skew",
        "max_instruction_length",
        "control_rate_hz",
        "default_instruction",
    ):
        if key in params:
            kw[key] = params[key]
    if "seed" in params and int(params["seed"]) >= 0:
        kw["seed"] = int(params["seed"])
    return replace(base, **kw) if kw else base


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
            stamp = stamp_to_sec(m.msg.header.stamp)
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
class _Pending:
    ready_at: float
    actions: np.ndarray
    obs_stamp: float
    dt: float


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


def _load_policy(checkpoint: str | Path, device: str) -> Any:
    from vla_policy.model.checkpoint import CheckpointError
    from vla_policy.model.policy import VLAPolicy

    if not Path(checkpoint).exists():
        raise EvalError(
            f"checkpoint {checkpoint} does not exist (make one with `vla-policy init --preset tiny "
            "--out DIR`)"
        )
    try:
        return VLAPolicy.from_checkpoint(checkpoint, device=device)
    except (CheckpointError, ValueError, OSError, KeyError) as exc:
        raise EvalError(f"cannot load checkpoint {checkpoint}: {one_line(exc)}") from exc


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
    cfg = config or EvalConfig()
    if cfg.blending not in BLENDING_MODES:
        raise EvalError(f"blending must be one of {', '.join(BLENDING_MODES)}, got {cfg.blending!r}")
    if not (math.isfinite(cfg.sim_latency) and cfg.sim_latency >= 0):
        raise EvalError(f"sim latency must be >= 0 seconds, got {cfg.sim_latency}")
    if out is not None:
        Path(out).mkdir(parents=True, exist_ok=True)
        clear_previous(Path(out))
    policy = _load_policy(checkpoint, cfg.device)
    model_cams = tuple(policy.config.backbone.cameras)
    with EpisodeBagReader(bag) as reader:
        meta, joints, cams, controllers = resolve_episode(reader, cfg, model_cams)
        if joints.state_dim > policy.config.action_head.max_state_dim:
            raise EvalError(
                f"{joints.state_dim} joints > max_state_dim {policy.config.action_head.max_state_dim}"
            )
        gt = load_ground_truth(reader, joints, controllers)
        has_instruction = INSTRUCTION_TOPIC in reader.topics()
        if not has_instruction and not (cfg.default_instruction or meta.instruction):
            raise MissingTopicError(
                f"bag {reader.path} has no topic {INSTRUCTION_TOPIC} and no instruction in its metadata"
            )
        result = _simulate(reader, policy, cfg, meta, joints, cams, gt, has_instruction)
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
    policy: Any,
    cfg: EvalConfig,
    meta: EpisodeMetadata,
    joints: JointGroups,
    cams: Mapping[str, str],
    gt: GroundTruth,
    has_instruction: bool,
) -> EvalResult:
    from tqdm import tqdm

    dt = float(policy.config.dt)
    horizon = int(policy.config.action_horizon)
    period = 1.0 / cfg.control_rate_hz if cfg.control_rate_hz > 0 else dt
    buffer = make_observation_buffer(cfg, cams, policy.config.backbone.history_frames)
    sched = ChunkScheduler(
        ChunkSchedulerConfig(
            control_period=period,
            action_dt=dt,
            blending=cfg.blending,
            refill_threshold=cfg.refill_threshold,
            ensemble_m=cfg.ensemble_m,
            rtc_overlap_steps=cfg.rtc_overlap_steps,
            rtc_max_guidance_weight=cfg.rtc_max_guidance_weight,
        )
    )
    feed = BagObservationFeed(reader, buffer, cfg, meta, joints, cams, has_instruction)
    times = episode_ticks(reader, period, cfg.max_duration)
    t_start = float(times[0])
    n_ticks = times.size

    predicted = np.full((n_ticks, joints.state_dim), np.nan)
    chunk_ids = np.zeros(n_ticks, dtype=np.int64)
    pending: _Pending | None = None
    wall: list[float] = []
    stage_times: dict[str, list[float]] = {}
    holding = False
    hold_reasons: dict[str, int] = {}
    n_infer = 0

    def accept(p: _Pending) -> None:
        sched.accept(p.actions, p.obs_stamp, latency=cfg.sim_latency, now=p.ready_at, dt=p.dt)

    bar = tqdm(
        total=n_ticks,
        desc="eval",
        unit="tick",
        file=sys.stderr,
        disable=not cfg.progress,
        leave=False,
        dynamic_ncols=True,
    )
    try:
        for k, now in enumerate(times):
            feed.advance(now)  # deliver the messages received up to now
            if pending is not None and pending.ready_at <= now + 1e-9:
                accept(pending)
                pending = None
            reason = buffer.check(now)
            if reason is not None:
                if not holding:
                    sched.reset()
                    pending = None
                holding = True
                key = reason.split(":")[0][:60]
                hold_reasons[key] = hold_reasons.get(key, 0) + 1
                bar.update(1)
                continue
            holding = False
            if pending is None and sched.needs_inference(now):
                sched.begin_inference(now)
                obs = buffer.snapshot(now)
                rtc = sched.rtc_guidance(obs.stamp, now, horizon, dt)
                t0 = time.perf_counter()
                res = policy.predict_chunk(obs, seed=cfg.seed, rtc=rtc)
                wall.append(time.perf_counter() - t0)
                for stage, v in res.timings.items():
                    stage_times.setdefault(stage, []).append(float(v))
                n_infer += 1
                if not np.all(np.isfinite(res.actions)):
                    raise EvalError(f"the model returned non-finite actions at t={now - t_start:.3f} s")
                pending = _Pending(now + cfg.sim_latency, res.actions, obs.stamp, float(res.dt))
                if cfg.sim_latency <= 0:
                    accept(pending)
                    pending = None
            action = sched.next_action(now)
            if action is not None:
                predicted[k] = joints.select_actions(action)
                cur = sched.current
                chunk_ids[k] = cur.chunk_id if cur is not None else 0
            bar.update(1)
    finally:
        bar.close()
        feed.close()

    recorded = gt.at(times)

    def normalize(values: np.ndarray) -> np.ndarray:
        full = joints.expand_to_actions(values.astype(np.float32))
        return joints.select_actions(np.asarray(policy.normalizer.normalize_action(full), dtype=np.float64))

    scores = score_series(times, predicted, recorded, chunk_ids, joints, period, normalize)
    stats = sched.stats()
    report: dict[str, Any] = {
        "report_version": 1,
        "mode": "offline",
        "policy": policy.name,
        "config": {
            "seed": cfg.seed,
            "blending": cfg.blending,
            "sim_latency_s": cfg.sim_latency,
            "control_period_s": period,
            "action_dt_s": dt,
            "action_horizon": horizon,
            "refill_threshold": cfg.refill_threshold,
            "buffer": {
                "max_image_age": cfg.max_image_age,
                "max_state_age": cfg.max_state_age,
                "max_camera_skew": cfg.max_camera_skew,
            },
        },
        "joints": {g: list(joints.group(g)) for g in joints.active_groups},
        "duration_s": float(times[-1] - times[0]) if n_ticks > 1 else 0.0,
        "inferences": n_infer,
        "scheduler": {k: int(v) if k != "latency_estimate" else v for k, v in stats.items()},
        "hold_reasons": dict(sorted(hold_reasons.items())),
        # simulated latency: deterministic; measured wall clock is in report_timing.json
        "latency": {
            "mode": "simulated",
            "p50_s": cfg.sim_latency,
            "p99_s": cfg.sim_latency,
            "max_s": cfg.sim_latency,
            "count": n_infer,
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
def add_eval_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``eval`` on the ``vla-policy`` subparsers (handler: ``cmd_eval``)."""
    p = subparsers.add_parser(
        "eval",
        help="offline, deterministic evaluation of a checkpoint on an episode bag",
        description="Step through an episode bag in simulated time with the node's ObservationBuffer and "
        "ChunkScheduler, score the predicted commands against the recorded ones, and write report.json "
        "(deterministic), report.md, report_timing.json (measured wall clock) and PNG plots.",
    )
    p.add_argument("--bag", required=True, help="episode bag directory (rosbag2, MCAP or sqlite3)")
    p.add_argument("--checkpoint", required=True, help="checkpoint directory")
    p.add_argument("--out", required=True, help="output directory for the report")
    p.add_argument("--seed", type=int, default=0, help="noise seed of every chunk (default 0)")
    p.add_argument("--blending", choices=BLENDING_MODES, default=None, help="chunk blending (default none)")
    p.add_argument(
        "--sim-latency",
        type=float,
        default=0.1,
        help="modelled inference latency in simulated time, seconds (default 0.1)",
    )
    p.add_argument("--control-rate", type=float, default=0.0, help="control rate in Hz (0 = 1 / dt)")
    p.add_argument(
        "--params",
        default=None,
        help="node parameter YAML (cameras, joints, controllers, buffer limits, blending)",
    )
    p.add_argument("--max-duration", type=float, default=0.0, help="evaluate only the first seconds")
    p.add_argument("--device", default="cpu", help="torch device (default cpu)")
    p.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_eval)
    return p


def eval_config_from_args(args: argparse.Namespace) -> EvalConfig:
    from vla_policy.strict_config import replace

    cfg = EvalConfig(
        seed=args.seed,
        sim_latency=args.sim_latency,
        control_rate_hz=args.control_rate,
        max_duration=args.max_duration,
        device=args.device,
        plots=not args.no_plots,
        progress=not args.no_progress,
    )
    if args.params:
        cfg = config_from_node_params(read_node_params(args.params), cfg)
        cfg = replace(cfg, seed=args.seed)
    if args.blending:
        cfg = replace(cfg, blending=args.blending)
    return cfg


def cmd_eval(args: argparse.Namespace) -> int:
    try:
        cfg = eval_config_from_args(args)
        res = run_offline_eval(args.bag, args.checkpoint, args.out, cfg)
    except (EvalError, EpisodeBagError) as exc:
        sys.stderr.write(f"vla-policy eval: error: {one_line(exc)}\n")
        return 2
    sys.stdout.write(summary_table(res.report, res.timing) + "\n")
    sys.stdout.write(f"report: {Path(args.out) / 'report.json'}\n")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m vla_policy.evaluation.offline_eval`` (the same as ``vla-policy eval``)."""
    parser = argparse.ArgumentParser(prog="vla-policy")
    sub = parser.add_subparsers(dest="command", required=True)
    add_eval_parser(sub)
    args = parser.parse_args(["eval", *(sys.argv[1:] if argv is None else argv)])
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
