"""Real-time replay evaluation (``vla-bag replay-eval``): the real node, separate processes, over DDS.

1. ``vla_policy_node`` starts with ``use_sim_time``, ``autostart``, ``output_mode: forward`` and
   ``forward_hold: stop`` (a parameter file written into ``OUT/replay/``; ``--params`` adds the robot's).
2. ``vla-bag record --use-sim-time`` records what the node publishes: ``<group>_controller/commands`` and
   ``~/action_chunk``.
3. ``vla-bag play --clock`` publishes the bag's inputs (cameras, joint states, instruction) and ``/clock``;
   the recorded controller topics are left out (the node publishes those).
4. The recorder and the node are stopped with SIGINT; the node's commands are scored against the bag's
   recorded commands on the control-period grid with ``eval_report.score_series``, as offline.

All children get one private ``ROS_DOMAIN_ID`` and localhost discovery. Their logs are in
``OUT/replay/logs``. Not deterministic (real time); the latencies are the node's measured ones.
"""

from __future__ import annotations

import logging
import math
import os
import random
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import tyro
import yaml
from vla_policy.config_cli import run_command
from vla_policy.data.episode_bag import (
    EpisodeBagError,
    EpisodeBagReader,
    command_topic,
    one_line,
)
from vla_policy.evaluation.eval_report import (
    clear_previous,
    latency_summary,
    score_series,
    summary_table,
    write_report,
)
from vla_policy.evaluation.offline_eval import (
    EvalConfig,
    EvalError,
    config_from_node_params,
    ground_truth_topics,
    load_ground_truth,
    read_node_params,
    resolve_episode,
)
from vla_policy.runtime.joint_groups import GROUP_NAMES
from vla_policy.runtime.settings import ParameterError, load_schema
from vla_policy.stamps import to_seconds
from vla_policy.strict_config import ConfigError, require

from vla_policy_node.child_process import ChildProcess

logger = logging.getLogger(__name__)
NODE_NAME = "vla_policy_node"


class ReplayError(RuntimeError):
    """The replay evaluation failed; one line says why."""


_SCHEMA = load_schema()


@dataclass(frozen=True)
class ReplayOptions:
    """How to replay (the flags of vla-bag replay-eval); the node's values are checked by its schema."""

    seed: int = 0
    """the node's noise seed"""
    blending: Annotated[str, tyro.conf.arg(help=_SCHEMA.specs["blending"].description)] = "none"
    rate: float = 1.0
    """playback rate"""
    params: tyro.conf.DisallowNone[str | None] = None
    """node parameter YAML (cameras, joints, ...)"""
    timeout: float = 300.0
    """overall limit in seconds"""
    startup_timeout: float = 120.0
    """seconds for the node to configure"""
    domain_id: tyro.conf.DisallowNone[int | None] = None
    """ROS_DOMAIN_ID (default: random 1..101)"""
    torch_threads: int = 1
    """the node's torch threads (0 = torch's default)"""
    extra_params: tyro.conf.Suppress[dict[str, Any]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in ("seed", "blending", "torch_threads"):
            try:
                _SCHEMA.check(name, getattr(self, name))
            except ParameterError as exc:
                raise ConfigError(str(exc)) from exc
        require(self.rate > 0, f"rate must be > 0, got {self.rate}")
        require(self.timeout > 0 and self.startup_timeout > 0, "timeout and startup timeout must be > 0 s")
        require(
            self.domain_id is None or 0 <= self.domain_id <= 232,
            f"domain id must be in [0, 232], got {self.domain_id}",
        )


@dataclass
class ReplayResult:
    report: dict[str, Any]
    timing: dict[str, Any]
    paths: dict[str, Path]


def _node_params(
    checkpoint: str,
    opts: ReplayOptions,
    cams: dict[str, str],
    cam_types: dict[str, str],
    joints: Any,
    controllers: dict[str, str],
    base: dict[str, Any],
) -> dict[str, Any]:
    params = dict(base)
    params.update(
        {
            "checkpoint": str(Path(checkpoint).resolve()),
            "use_sim_time": True,
            "autostart": True,
            "output_mode": "forward",
            "forward_hold": "stop",
            "blending": opts.blending,
            "seed": int(opts.seed),
            "torch_threads": int(opts.torch_threads),
            "cameras.names": list(cams),
            "cameras.topics": list(cams.values()),
            "cameras.types": [cam_types[c] for c in cams],
        }
    )
    for g in GROUP_NAMES:
        names = list(joints.group(g))
        params[f"joints.{g}"] = names if names else [""]
        params[f"controllers.{g}"] = controllers[g]
    # an empty group cannot be passed as an empty string list: leave groups without joints out
    for g in GROUP_NAMES:
        if not joints.group(g):
            params.pop(f"joints.{g}")
    params.update(opts.extra_params)
    return params


def run_replay_eval(
    bag: str | Path,
    checkpoint: str | Path,
    out: str | Path,
    options: ReplayOptions | None = None,
    log: Callable[[str], None] | None = None,
) -> ReplayResult:
    opts = options or ReplayOptions()
    say = log or logger.info
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    clear_previous(out)
    work = out / "replay"
    if work.exists():
        shutil.rmtree(work)
    (work / "logs").mkdir(parents=True)
    from vla_policy.model.checkpoint import CheckpointError, read_config

    try:
        model_cfg, _ = read_config(Path(checkpoint))
    except (CheckpointError, OSError, ValueError) as exc:
        raise ReplayError(f"cannot read checkpoint {checkpoint}: {one_line(exc)}") from exc
    base_params: dict[str, Any] = {}
    cfg = EvalConfig(seed=opts.seed, blending=opts.blending, progress=False)
    if opts.params:
        base_params = read_node_params(opts.params)
        cfg = config_from_node_params(base_params, cfg)
    with EpisodeBagReader(bag) as reader:
        meta, joints, cams, controllers = resolve_episode(reader, cfg, tuple(model_cfg.backbone.cameras))
        gt = load_ground_truth(reader, joints, controllers)
        topics = reader.topics()
        cam_types = {c: topics[t].msgtype.rsplit("/", 1)[-1] for c, t in cams.items()}
        t_start, t_end = reader.start_time * 1e-9, reader.end_time * 1e-9
        gt_topics = [t for t in ground_truth_topics(joints, controllers) if t in topics]
    params = _node_params(str(checkpoint), opts, cams, cam_types, joints, controllers, base_params)
    params_file = work / "node_params.yaml"
    params_file.write_text(yaml.safe_dump({"/**": {"ros__parameters": params}}, sort_keys=True))

    env = dict(os.environ)
    env["ROS_DOMAIN_ID"] = str(
        opts.domain_id if opts.domain_id is not None else random.SystemRandom().randint(1, 101)
    )
    env["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
    env.setdefault("RMW_IMPLEMENTATION", "rmw_fastrtps_cpp")
    env["ROS_LOG_DIR"] = str(work / "logs" / "ros")
    env["PYTHONUNBUFFERED"] = "1"
    py = sys.executable
    out_bag = work / "node_output"
    node_topics = [command_topic(controllers[g]) for g in joints.active_groups]
    node_topics.append(f"/{NODE_NAME}/action_chunk")
    logs = work / "logs"
    children: list[ChildProcess] = []
    t0 = time.monotonic()
    try:
        say(f"replay-eval: starting {NODE_NAME} (ROS_DOMAIN_ID {env['ROS_DOMAIN_ID']}, use_sim_time)")
        node = ChildProcess(
            [py, "-m", "vla_policy_node.main", "--ros-args", "--params-file", str(params_file)],
            env=env,
            log_path=logs / "node.log",
        )
        children.append(node)
        if not node.wait_for("configured ", opts.startup_timeout):
            raise ReplayError(f"{NODE_NAME} did not configure: {node.last_line()}")
        say(f"replay-eval: node configured in {time.monotonic() - t0:.1f} s; starting the recorder")
        rec = ChildProcess(
            [
                py,
                "-m",
                "vla_policy_node.bag_cli",
                "record",
                "--out",
                str(out_bag),
                "--use-sim-time",
                *node_topics,
            ],
            env=env,
            log_path=logs / "recorder.log",
        )
        children.append(rec)
        for t in node_topics:
            # the recorder's start (imports) and DDS discovery share the CPU with the node's inference
            if not rec.wait_for(f"subscribed {t} ", opts.startup_timeout):
                raise ReplayError(
                    f"the recorder did not subscribe to {t}: {rec.last_line()} (node: {node.last_line()})"
                )
        say(f"replay-eval: playing {bag} with /clock at rate {opts.rate:g}")
        play = ChildProcess(
            [
                py,
                "-m",
                "vla_policy_node.bag_cli",
                "play",
                str(bag),
                "--clock",
                "--rate",
                str(opts.rate),
                "--delay",
                "1.0",
                "--exclude",
                *gt_topics,
            ],
            env=env,
            log_path=logs / "player.log",
        )
        children.append(play)
        limit = max(30.0, opts.timeout - (time.monotonic() - t0))
        try:
            rc = play.wait(timeout=limit)
        except subprocess.TimeoutExpired as exc:
            raise ReplayError(f"playback did not finish within {limit:.0f} s") from exc
        if rc != 0:
            raise ReplayError(f"vla-bag play failed: {play.last_line()}")
        time.sleep(0.5)
        if rec.stop(sigint_timeout=10.0, term_timeout=5.0) != 0:
            raise ReplayError(f"the recorder failed: {rec.last_line()}")
        node.stop(sigint_timeout=10.0, term_timeout=5.0)
    finally:
        for c in children:
            c.stop(sigint_timeout=10.0, term_timeout=5.0)  # those still running
    wall = time.monotonic() - t0
    say(f"replay-eval: done in {wall:.1f} s; scoring")
    try:
        report, timing, series, lat = _score(out_bag, gt, joints, controllers, model_cfg, t_start, t_end)
    except EpisodeBagError as exc:
        raise ReplayError(f"cannot read the node's output bag: {one_line(exc)}") from exc
    report.update(
        bag=str(bag),
        policy=f"{model_cfg.name} ({checkpoint})",
        episode=meta.summary(),
        ground_truth={g: gt.sources.get(g, "") for g in joints.active_groups},
        config={
            "seed": opts.seed,
            "blending": opts.blending,
            "rate": opts.rate,
            "control_period_s": float(model_cfg.dt),
        },
    )
    timing["replay_wall_s"] = wall
    paths = write_report(out, report, timing, series, joints, lat, None)
    return ReplayResult(report, timing, paths)


def _score(
    out_bag: Path,
    gt: Any,
    joints: Any,
    controllers: dict[str, str],
    model_cfg: Any,
    t_start: float,
    t_end: float,
) -> tuple[dict[str, Any], dict[str, Any], tuple, list[float]]:
    period = float(model_cfg.dt)
    groups = joints.active_groups
    sizes = {g: len(joints.group(g)) for g in groups}
    cmd: dict[str, tuple[list[float], list[np.ndarray]]] = {g: ([], []) for g in groups}
    chunk_t: list[float] = []
    chunk_ids: list[int] = []
    latencies: list[float] = []
    topic_group = {command_topic(controllers[g]): g for g in groups}
    with EpisodeBagReader(out_bag) as reader:
        have = reader.topics()
        for m in reader.messages(
            topics=[t for t in [*topic_group, f"/{NODE_NAME}/action_chunk"] if t in have]
        ):
            if m.topic in topic_group:
                g = topic_group[m.topic]
                cmd[g][0].append(m.time)
                cmd[g][1].append(np.asarray(m.msg.data, dtype=np.float64)[: sizes[g]])
            else:
                chunk_t.append(m.time)
                chunk_ids.append(int(m.msg.chunk_id))
                latencies.append(to_seconds(m.msg.inference_latency))
    n = math.floor((t_end - t_start) / period + 1e-9) + 1
    times = t_start + np.arange(n) * period
    predicted = np.full((n, joints.state_dim), np.nan)
    col = 0
    for g in groups:
        ts, vs = cmd[g]
        if ts:
            ta, va = np.asarray(ts), np.stack(vs)
            k = np.searchsorted(ta, times + 1e-9, side="right") - 1
            ok = (k >= 0) & (times - ta[np.maximum(k, 0)] <= 1.5 * period)
            predicted[ok, col : col + sizes[g]] = va[k[ok]]
        col += sizes[g]
    ids = np.zeros(n, dtype=np.int64)
    if chunk_t:
        ca = np.asarray(chunk_t)
        k = np.searchsorted(ca, times + 1e-9, side="right") - 1
        ids[k >= 0] = np.asarray(chunk_ids)[k[k >= 0]]
    recorded = gt.at(times)
    scores = score_series(times, predicted, recorded, ids, joints, period)
    lat = latency_summary(latencies)
    report = {
        "report_version": 1,
        "mode": "replay",
        "joints": {g: list(joints.group(g)) for g in groups},
        "duration_s": float(times[-1] - times[0]) if n > 1 else 0.0,
        "node_messages": {g: len(cmd[g][0]) for g in groups} | {"action_chunk": len(chunk_ids)},
        "latency": {"mode": "measured (node, wall clock)", **lat},
        "scores": scores,
    }
    timing = {"note": "replay runs in real time: nothing here is deterministic", "inference_wall": lat}
    if not any(cmd[g][0] for g in groups):
        raise EvalError("the node published no commands during the replay (see OUT/replay/logs/node.log)")
    return report, timing, (times, predicted, recorded), latencies


# --- CLI: vla-bag replay-eval ------------------------------------------------------------------------------
@dataclass(frozen=True)
class ReplayEvalCommand:
    """Run vla_policy_node (use_sim_time, forward output) against `play --clock`, record what it publishes
    and score it against the bag's commands."""

    bag: str
    """episode bag directory"""
    checkpoint: str
    """checkpoint directory"""
    out: str
    """output directory for the report"""
    replay: Annotated[ReplayOptions, tyro.conf.OmitArgPrefixes] = ReplayOptions()


def run_replay_eval_command(cmd: ReplayEvalCommand) -> int:
    """``vla-bag replay-eval`` with its parsed flags: the summary and the report's path on stdout."""

    def say(text: str) -> None:
        sys.stdout.write(text + "\n")
        sys.stdout.flush()

    res = run_replay_eval(cmd.bag, cmd.checkpoint, cmd.out, cmd.replay, log=say)
    say(summary_table(res.report, res.timing))
    say(f"report: {res.paths['report.json']}")
    return 0


def replay_eval_main(argv: Sequence[str]) -> int:
    """``vla-bag replay-eval ARGS``: the flags of :class:`ReplayEvalCommand`; bad input is one line."""
    errors = (ReplayError, EvalError, EpisodeBagError, OSError)
    return run_command("vla-bag replay-eval", ReplayEvalCommand, argv, run_replay_eval_command, errors)
