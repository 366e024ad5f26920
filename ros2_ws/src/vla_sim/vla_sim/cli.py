"""``vla-sim``: demos | dagger | expert | serve | eval (the ALOHA simulation, scripted demonstrations,
DAgger rounds, closed-loop evaluation)."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from vla_policy.runtime.chunk_scheduler import BLENDING_MODES

from vla_sim.aloha_env import TASKS


def cmd_demos(args: argparse.Namespace) -> int:
    from vla_sim.demos import parse_camera_map, record_demos

    summary = record_demos(
        args.task,
        args.episodes,
        args.out,
        camera_map=parse_camera_map(args.camera_map),
        height=args.height,
        width=args.width,
        seed=args.seed,
        storage=args.storage,
    )
    print(json.dumps({k: v for k, v in summary.to_dict().items() if k != "bags"}))
    return 0 if summary.recorded == args.episodes else 1


def cmd_expert(args: argparse.Namespace) -> int:
    from vla_sim.demos import scripted_success_rate

    rc = 0
    for task in args.task or list(TASKS):
        res = scripted_success_rate(task, list(range(args.seed, args.seed + args.episodes)))
        print(json.dumps(res), flush=True)
        rc |= int(res["success_rate"] < args.min_rate)
    return rc


def cmd_serve(args: argparse.Namespace) -> int:
    from vla_sim.sim_node import serve_main

    return serve_main(args)


def cmd_eval(args: argparse.Namespace) -> int:
    from vla_sim.eval_loop import eval_main

    return eval_main(args)


def cmd_dagger(args: argparse.Namespace) -> int:
    from vla_sim.dagger import record_dagger
    from vla_sim.inprocess_loop import LoopConfig

    cfg = LoopConfig(
        blending=args.blending,
        height=args.height,
        width=args.width,
        task=args.task,
        torch_threads=args.torch_threads,
    )
    seeds = list(range(args.seed, args.seed + args.episodes))
    summary = record_dagger(args.checkpoint, seeds, args.out, cfg, args.storage)
    print(json.dumps({k: v for k, v in summary.items() if k != "rows"}))
    return 0


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--task", choices=TASKS, required=True)
    p.add_argument("--height", type=int, default=240, help="camera image height")
    p.add_argument("--width", type=int, default=320, help="camera image width")
    p.add_argument(
        "--camera-map",
        default="top:head,left_wrist,right_wrist",
        help="sim cameras to render and the model camera names they publish as: sim[:model],...",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vla-sim", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("demos", help="record successful scripted episodes as episode bags")
    _common(p)
    p.add_argument("--episodes", type=int, default=10)
    p.add_argument("--out", required=True)
    p.add_argument("--seed", type=int, default=0, help="first seed (one seed per attempt)")
    p.add_argument("--storage", choices=("mcap", "sqlite3"), default="mcap")
    p.set_defaults(func=cmd_demos)

    p = sub.add_parser(
        "dagger", help="the policy drives, the scripted expert labels: episode bags for a DAgger round"
    )
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--task", choices=("transfer_cube",), default="transfer_cube")
    p.add_argument("--episodes", type=int, default=20)
    p.add_argument("--seed", type=int, required=True, help="first seed (+1 per episode); not an eval seed")
    p.add_argument("--out", required=True)
    p.add_argument("--height", type=int, default=96, help="camera image height (as the demonstrations)")
    p.add_argument("--width", type=int, default=128, help="camera image width (as the demonstrations)")
    p.add_argument("--blending", choices=BLENDING_MODES, default="none")
    p.add_argument("--storage", choices=("mcap", "sqlite3"), default="mcap")
    p.add_argument("--torch-threads", type=int, default=1)
    p.set_defaults(func=cmd_dagger)

    p = sub.add_parser("expert", help="scripted expert success rate over seeds (no rendering)")
    p.add_argument("--task", choices=TASKS, action="append", help="repeatable; default: all tasks")
    p.add_argument("--episodes", type=int, default=20)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--min-rate", type=float, default=0.95, help="exit 1 when a task's rate is below it")
    p.set_defaults(func=cmd_expert)

    p = sub.add_parser("serve", help="the simulation as a ROS 2 robot")
    _common(p)
    p.add_argument("--mode", choices=("realtime", "lockstep"), default="realtime")
    p.add_argument("--seed", type=int, default=0, help="seed of the first episode (reset adds one)")
    p.add_argument("--command-timeout", type=float, default=1.0, help="sim seconds of silence before 'hold'")
    p.add_argument(
        "--lockstep-wait",
        type=float,
        default=2.0,
        help="lockstep: wall seconds to wait for a command per step",
    )
    p.add_argument(
        "--max-steps", type=int, default=0, help="stop after this many steps (0 = run until stopped)"
    )
    p.add_argument(
        "--episode-steps", type=int, default=0, help="auto-reset after this many steps (0 = never)"
    )
    p.add_argument(
        "--episodes", type=int, default=0, help="with --episode-steps: stop after this many episodes"
    )
    p.add_argument("--camera-every", type=int, default=1, help="render the cameras every N steps")
    p.add_argument(
        "--video-dir", default="", help="write gifs for people here (angle camera, 240x320, 25 fps)"
    )
    p.add_argument("--video-episodes", type=int, default=1, help="with --video-dir: film the first N")
    p.add_argument("--results", default="", help="append one JSON line per finished episode to this file")
    p.add_argument(
        "--sync-topic",
        default="",
        help="lockstep: step only after the policy node's tick on this topic (e.g. /vla_policy_node/tick)",
    )
    p.add_argument(
        "--policy-reset", default="", help="reset service of the policy node, called before each episode"
    )
    p.add_argument(
        "--startup-timeout", type=float, default=300.0, help="wall seconds to wait for the policy node"
    )
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("eval", help="closed loop: sim and the real policy node as separate processes")
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--task", choices=TASKS, required=True)
    p.add_argument("--episodes", type=int, default=2)
    p.add_argument("--out", required=True)
    p.add_argument(
        "--episode-seconds", type=float, default=0.0, help="sim seconds per episode (0 = task default)"
    )
    p.add_argument("--height", type=int, default=96)
    p.add_argument("--width", type=int, default=128)
    p.add_argument("--mode", choices=("realtime", "lockstep"), default="lockstep")
    p.add_argument("--output-mode", choices=("trajectory", "forward"), default="trajectory")
    p.add_argument(
        "--blending", choices=BLENDING_MODES, default="none", help="the node's chunk blending mode"
    )
    p.add_argument("--seed", type=int, default=0, help="sim seed of the first episode (+1 per episode)")
    p.add_argument(
        "--noise-seed", type=int, default=None, help="lockstep: the node's noise seed (default --seed)"
    )
    p.add_argument("--timeout", type=float, default=600.0, help="wall seconds for the whole evaluation")
    p.add_argument(
        "--in-process",
        action="store_true",
        help="run the node's PolicyRuntime and the sim in this process (lock-step, no DDS): the same "
        "control logic, many times faster",
    )
    p.add_argument("--torch-threads", type=int, default=1, help="--in-process: torch threads (fixed)")
    p.add_argument("--videos", type=int, default=1, help="gifs of the first N episodes (angle camera)")
    p.set_defaults(func=cmd_eval)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # one line for the user; tracebacks are for bugs
        from vla_sim.aloha_env import SimError

        if isinstance(exc, SimError):
            print(f"vla-sim: error: {exc}", file=sys.stderr)
            return 2
        raise


if __name__ == "__main__":
    sys.exit(main())
