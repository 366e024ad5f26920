"""``vla-bag``: record, play, sample and replay-evaluate episode bags.

    vla-bag sample --out BAG [--duration S] [--seed N] [--storage mcap|sqlite3] ...
    vla-bag record --out BAG [TOPIC ...] [--exclude T ...] [--use-sim-time] [--task ...] [--duration S]
                    [--stats-json PATH]
    vla-bag play BAG [--rate R] [--loop] [--start-offset S] [--clock] [--topics T ...] [--exclude T ...]
    vla-bag replay-eval --bag BAG --checkpoint DIR --out DIR [--seed N] [--blending ...]
    vla-bag export-lerobot BAG [BAG ...] --out DIR [--fps F] [--params YAML] [--vcodec C]

Bad input exits non-zero with one line on stderr (no traceback).
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from vla_policy.config_cli import add_subcommand, parse_known
from vla_policy.data.episode_bag import EpisodeBagError, one_line

PROG = "vla-bag"


class CLIError(RuntimeError):
    pass


def _out(*args: Any, file: Any = None, flush: bool = True) -> None:
    print(*args, file=file or sys.stdout, flush=flush)


def _install_stop(stop: threading.Event) -> None:
    def handler(signum: int, frame: Any) -> None:
        stop.set()

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)


def _init_ros(args: Sequence[str] | None = None) -> None:
    import rclpy
    from rclpy.signals import SignalHandlerOptions

    rclpy.init(args=list(args) if args else None, signal_handler_options=SignalHandlerOptions.NO)


def _shutdown_ros() -> None:
    import rclpy

    if rclpy.ok():
        rclpy.try_shutdown()


# --- sample -----------------------------------------------------------------------------------------------
def cmd_sample(args: argparse.Namespace) -> int:
    from vla_policy.data.synthetic_episode import SyntheticEpisodeConfig, write_synthetic_episode
    from vla_policy.strict_config import ConfigError

    try:
        cfg = SyntheticEpisodeConfig(
            duration=args.duration,
            seed=args.seed,
            image_height=args.height,
            image_width=args.width,
            camera_rate=args.camera_rate,
            joint_rate=args.joint_rate,
            command_rate=args.command_rate,
            command_mode=args.commands,
            compressed=args.compressed,
            clock_rate=args.clock_rate,
            storage=args.storage,
            instruction=args.instruction,
        )
    except ConfigError as exc:
        raise CLIError(str(exc)) from exc
    t0 = time.perf_counter()
    meta = write_synthetic_episode(args.out, cfg)
    _out(
        f"wrote synthetic episode '{meta.task}' ({cfg.duration:g} s, {len(cfg.cameras)} cameras "
        f"{cfg.image_width}x{cfg.image_height}, {cfg.storage}) to {args.out} "
        f"in {time.perf_counter() - t0:.1f} s"
    )
    return 0


# --- record -----------------------------------------------------------------------------------------------
def cmd_record(args: argparse.Namespace) -> int:
    from rclpy.executors import SingleThreadedExecutor

    from vla_policy_node.bag_recorder import BagRecorder, drain, spin_until

    if not args.max_queue_mb > 0:
        raise CLIError(f"--max-queue-mb must be > 0, got {args.max_queue_mb}")
    custom = {
        "task": args.task,
        "instruction": args.instruction,
        "embodiment": args.embodiment,
        "success": args.success,
    }
    stop = threading.Event()
    _install_stop(stop)
    ros_args = ["--ros-args", "-p", "use_sim_time:=true"] if args.use_sim_time else None
    _init_ros(ros_args)
    import rclpy

    node = rclpy.create_node(args.node_name)
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    recorder = None
    try:
        recorder = BagRecorder(
            node,
            args.out,
            topics=args.topics,
            exclude=args.exclude,
            storage=args.storage,
            custom_data=custom,
            log=lambda s: _out(s, flush=True),
            max_queue_bytes=round(args.max_queue_mb * 1e6),
        )
        what = "all topics" if not args.topics else " ".join(args.topics)
        _out(f"recording to {args.out} ({what})")
        deadline = time.monotonic() + args.duration if args.duration > 0 else None
        spin_until(executor, stop, deadline)
        _out(f"stopping: draining {recorder.queued} queued messages and what is still in flight")
        drain(executor, 0.3, recorder, window=args.drain)
        counts = recorder.close()
        stats = recorder.stats()
        for topic, st in stats["topics"].items():
            _out(
                f"  {topic}: received {st['received']}, written {st['written']}, dropped {st['dropped']}, "
                f"{st['bytes'] / 1e6:.1f} MB"
            )
        _out(
            f"write rate {stats['write_mb_per_s']:.1f} MB/s, queue high-water {stats['max_queued_messages']} "
            f"messages ({stats['max_queued_mb']:.1f} MB of {stats['max_queue_mb']:.0f} MB), "
            f"finalised in {stats['finalise_s']:.2f} s"
        )
        if stats["dropped"]:
            _out(
                f"warning: the disk did not keep up: dropped {stats['dropped']} messages (oldest per topic; "
                "per-topic counts above and in metadata.yaml custom_data vla.recorder.dropped)"
            )
        if args.stats_json:
            Path(args.stats_json).write_text(json.dumps(stats, indent=1) + "\n")
        _out(f"recorded {sum(counts.values())} messages to {args.out}: {json.dumps(counts)}")
    finally:
        if recorder is not None:
            recorder.close()
        executor.shutdown()
        node.destroy_node()
        _shutdown_ros()
    return 0


# --- play -------------------------------------------------------------------------------------------------
def cmd_play(args: argparse.Namespace) -> int:
    from vla_policy_node.bag_player import PlayOptions, play_bag

    opts = PlayOptions(
        rate=args.rate,
        loop=args.loop,
        start_offset=args.start_offset,
        clock=args.clock,
        clock_hz=args.clock_hz,
        topics=tuple(args.topics or ()),
        exclude=tuple(args.exclude or ()),
        delay=args.delay,
        reliable=args.reliable,
    )
    if not (args.rate > 0):
        raise CLIError(f"--rate must be > 0, got {args.rate}")
    if not Path(args.bag).exists():  # before DDS starts: its own start-up errors would add lines
        raise CLIError(f"bag {args.bag} does not exist")
    stop = threading.Event()
    _install_stop(stop)
    _init_ros()
    try:
        counts = play_bag(args.bag, opts, stop, log=lambda s: _out(s, flush=True))
    finally:
        _shutdown_ros()
    _out(f"published {sum(counts.values())} messages: {json.dumps(counts)}")
    return 0


# --- export-lerobot ---------------------------------------------------------------------------------------
def cmd_export_lerobot(args: argparse.Namespace) -> int:
    from vla_policy.data.lerobot_export import ExportConfig, LeRobotExportError, export_lerobot
    from vla_policy.evaluation.offline_eval import (
        EvalConfig,
        EvalError,
        config_from_node_params,
        read_node_params,
    )

    if args.fps < 0:
        raise CLIError(f"--fps must be > 0 (or 0: from the bag), got {args.fps}")
    missing = [b for b in args.bags if not Path(b, "metadata.yaml").is_file()]
    if missing:
        raise CLIError(f"{missing[0]} is not an episode bag (no metadata.yaml)")
    try:
        read = EvalConfig()
        if args.params:
            read = config_from_node_params(read_node_params(args.params), read)
        cfg = ExportConfig(fps=args.fps, vcodec=args.vcodec, robot_type=args.robot_type, read=read)
        t0 = time.perf_counter()
        summary = export_lerobot(args.bags, args.out, cfg, log=lambda s: _out(s, flush=True))
    except (LeRobotExportError, EvalError) as exc:
        raise CLIError(str(exc)) from exc
    if args.json:
        _out(json.dumps(summary, indent=1))
    else:
        _out(
            f"wrote LeRobot dataset {summary['out']} (v3.0 with meta/modality.json): {summary['episodes']} "
            f"episodes, {summary['frames']} frames at {summary['fps']:g} fps, cameras "
            f"{', '.join(summary['cameras'])}, in {time.perf_counter() - t0:.1f} s"
        )
    return 0


# --- replay-eval ------------------------------------------------------------------------------------------
def replay_eval_main(argv: Sequence[str]) -> int:
    """``vla-bag replay-eval ARGS``, imported here: the other subcommands never load the model's code."""
    from vla_policy_node.replay_eval import replay_eval_main as run

    return run(argv)


# --- parser -----------------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Record, play, sample and replay-evaluate episode bags (rosbag2: MCAP or sqlite3), and "
        "export them as LeRobot datasets.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser(
        "sample",
        help="write a synthetic bimanual episode bag",
        description="Write a synthetic bimanual episode: rendered cameras in which a block "
        "moves, smooth joint trajectories, an instruction and the commanded actions.",
    )
    p.add_argument("--out", required=True, help="bag directory to create (must not exist)")
    p.add_argument("--duration", type=float, default=8.0, help="seconds (default 8)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--storage", choices=("mcap", "sqlite3"), default="mcap")
    p.add_argument("--height", type=int, default=96, help="image height (default 96)")
    p.add_argument("--width", type=int, default=128, help="image width (default 128)")
    p.add_argument("--camera-rate", type=float, default=15.0, help="Hz (default 15)")
    p.add_argument("--joint-rate", type=float, default=50.0, help="Hz (default 50)")
    p.add_argument("--command-rate", type=float, default=20.0, help="Hz (default 20 = 1/dt of tiny)")
    p.add_argument(
        "--commands",
        choices=("forward", "trajectory", "both"),
        default="forward",
        help="ground-truth command topics (default forward: <group>_controller/commands)",
    )
    p.add_argument("--compressed", action="store_true", help="CompressedImage (JPEG) cameras")
    p.add_argument("--clock-rate", type=float, default=0.0, help="also store /clock at this rate (Hz)")
    p.add_argument("--instruction", default="pick up the red block and put it in the bin")
    p.set_defaults(func=cmd_sample)

    p = sub.add_parser(
        "record",
        help="record topics into a bag until SIGINT/SIGTERM (or --duration)",
        description="Record topics (raw CDR bytes, each topic's offered QoS kept) into a new "
        "bag. SIGINT or SIGTERM finalises the bag.",
    )
    p.add_argument("topics", nargs="*", help="topics to record (default: all)")
    p.add_argument("--out", "-o", required=True, help="bag directory to create (must not exist)")
    p.add_argument("--exclude", nargs="*", default=[], help="topics not to record")
    p.add_argument("--storage", choices=("mcap", "sqlite3"), default="mcap")
    p.add_argument("--use-sim-time", action="store_true", help="timestamps from /clock")
    p.add_argument("--duration", type=float, default=0.0, help="stop after this many seconds (0 = signal)")
    p.add_argument("--task", default="")
    p.add_argument("--instruction", default="")
    p.add_argument("--embodiment", default="")
    p.add_argument("--success", choices=("true", "false", "unknown"), default="unknown")
    p.add_argument("--node-name", default="vla_bag_recorder")
    p.add_argument(
        "--drain",
        type=float,
        default=3.5,
        help="on stop, keep taking messages up to this many seconds after the last reliable one, so that "
        "samples resent after the publisher's heartbeat (3 s in Fast DDS) are kept (default 3.5)",
    )
    p.add_argument(
        "--max-queue-mb",
        type=float,
        default=512.0,
        help="memory cap of the writer queue in MB (default 512); when the disk cannot keep up, the oldest "
        "queued messages of a topic are dropped, counted and reported",
    )
    p.add_argument("--stats-json", default=None, help="write the per-topic counts and write rate here")
    p.set_defaults(func=cmd_record)

    p = sub.add_parser(
        "play",
        help="publish a bag with its original timing",
        description="Publish a bag's messages with their original timing (in place of `ros2 bag play`).",
    )
    p.add_argument("bag", help="bag directory")
    p.add_argument("--rate", type=float, default=1.0, help="playback rate (default 1)")
    p.add_argument("--loop", action="store_true", help="play again from the start when done")
    p.add_argument("--start-offset", type=float, default=0.0, help="seconds into the bag to start at")
    p.add_argument("--clock", action="store_true", help="publish /clock with the bag time")
    p.add_argument("--clock-hz", type=float, default=100.0, help="rate of /clock (default 100)")
    p.add_argument("--topics", nargs="*", default=None, help="only these topics")
    p.add_argument("--exclude", nargs="*", default=None, help="not these topics")
    p.add_argument("--delay", type=float, default=0.5, help="seconds to wait for discovery (default 0.5)")
    p.add_argument("--reliable", action="store_true", help="publish every topic reliable")
    p.set_defaults(func=cmd_play)

    add_subcommand(sub, "replay-eval", "evaluate the real node on a bag over DDS", replay_eval_main)

    p = sub.add_parser(
        "export-lerobot",
        help="write episode bags as a LeRobot dataset (v3.0, GR00T's modality.json)",
        description="Write episode bags as one LeRobot dataset (format v3.0 of lerobot 0.4.x: parquet "
        "frames, AV1 videos, meta/info.json, stats, tasks, episodes; plus GR00T's meta/modality.json). "
        "Each bag is one episode; frames are the node's observations at --fps with the recorded commands "
        "as actions. Joint groups and cameras come from the bags' metadata or --params.",
    )
    p.add_argument("bags", nargs="+", metavar="BAG", help="episode bag directories")
    p.add_argument("--out", required=True, help="dataset directory to create (must not exist)")
    p.add_argument("--fps", type=float, default=0.0, help="frame rate (default: the bag's control rate)")
    p.add_argument("--params", default=None, help="node parameter YAML (joints, cameras, controllers)")
    p.add_argument("--vcodec", default="libsvtav1", help="video codec (default libsvtav1, lerobot's)")
    p.add_argument("--robot-type", default="", help="info.json robot_type (default: the bag's embodiment)")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.set_defaults(func=cmd_export_lerobot)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args, rest = parse_known(parser, argv)
    if getattr(args, "config_main", None) is not None:  # replay-eval: its flags are ReplayOptions' fields
        return int(args.config_main(rest))
    try:
        return int(args.func(args))
    except KeyboardInterrupt:
        return 130
    except (CLIError, EpisodeBagError, ValueError, OSError, RuntimeError, KeyError) as exc:
        _out(f"{PROG} {args.command}: error: {one_line(exc)}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
