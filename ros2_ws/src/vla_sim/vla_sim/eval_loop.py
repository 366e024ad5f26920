"""``vla-sim eval``: closed loop, the sim (``vla-sim serve``) and the real policy node as separate processes.

The sim runs N episodes (auto-reset after the episode length) and writes one JSON line per episode; the
node runs with ``use_sim_time`` and config/aloha.yaml (groups, cameras: sim 'top' published as 'head').
In ``lockstep`` mode (the default) the node runs with ``lockstep:=true`` and a fixed noise seed, the sim
waits for its ``~/tick`` and resets it before each episode: the same command gives the same episodes,
whatever the inference time (see sim_node.py).
``--in-process`` runs the node's ``PolicyRuntime`` and the sim in this process instead (inprocess_loop.py:
the same control logic in lock-step, without DDS and processes, sim time restarting in every episode).
Reports: ``eval.json``, ``eval.md`` (success rate with its 95 % Wilson interval, touched / lifted counts,
time to success, smoothness against the scripted demonstrations on the same seeds, the inference
latency, episodes per minute), ``eval.png`` (per-episode max reward) and gifs under ``video/``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from vla_policy.stamps import to_seconds
from vla_policy_node.child_process import ChildProcess

from vla_sim.aloha_env import DT, EPISODE_STEPS
from vla_sim.eval_metrics import LIFTED_REWARD, TOUCHED_REWARD, demonstration_jerk, wilson_interval

CONFIG = Path(__file__).resolve().parents[1] / "config" / "aloha.yaml"
NODE = "vla_policy_node"
CHUNK_TOPIC = f"/{NODE}/action_chunk"


class LatencyListener:
    """Collects ``inference_latency`` (seconds) of every ActionChunk the node publishes, on its own thread."""

    def __init__(self) -> None:
        import rclpy
        from rclpy.executors import SingleThreadedExecutor
        from vla_msgs.msg import ActionChunk

        self.latencies: list[float] = []
        self._context = rclpy.Context()
        rclpy.init(context=self._context)
        self._node = rclpy.create_node("vla_sim_eval_latency", context=self._context)
        self._node.create_subscription(ActionChunk, CHUNK_TOPIC, self._on_chunk, 10)
        self._executor = SingleThreadedExecutor(context=self._context)
        self._executor.add_node(self._node)
        self._thread = threading.Thread(target=self._executor.spin, daemon=True)
        self._thread.start()

    def _on_chunk(self, msg: Any) -> None:
        self.latencies.append(to_seconds(msg.inference_latency))

    def close(self) -> list[float]:
        self._executor.shutdown()
        self._node.destroy_node()
        self._context.try_shutdown()
        self._thread.join(timeout=5.0)
        return list(self.latencies)


def _aloha_yaml() -> Path:
    if CONFIG.is_file():
        return CONFIG
    from ament_index_python.packages import get_package_share_directory

    return Path(get_package_share_directory("vla_sim")) / "config" / "aloha.yaml"


def _node_cmd(checkpoint: str, output_mode: str, blending: str, lockstep: bool, seed: int) -> list[str]:
    exe = shutil.which("vla_policy_node")
    base = [exe] if exe else [sys.executable, "-m", "vla_policy_node.main"]
    return [
        *base,
        "--ros-args",
        "--params-file",
        str(_aloha_yaml()),
        "-p",
        f"checkpoint:={checkpoint}",
        "-p",
        "use_sim_time:=true",
        "-p",
        "autostart:=true",
        "-p",
        f"output_mode:={output_mode}",
        "-p",
        "max_image_age:=5.0",
        "-p",
        "max_state_age:=5.0",
        "-p",
        f"blending:={blending}",
        "-p",
        f"lockstep:={'true' if lockstep else 'false'}",
        "-p",
        f"seed:={seed if lockstep else -1}",
    ]


def eval_in_process(args: Any, out: Path) -> tuple[list[dict], list[float]]:
    """``--in-process``: the episodes through ``InProcessLoop`` (the node's PolicyRuntime, lock-step, no
    DDS); a video of the first ``--videos`` episodes from the ``angle`` camera at 240x320."""
    from vla_sim.aloha_env import VideoSpec
    from vla_sim.inprocess_loop import InProcessLoop, LoopConfig
    from vla_sim.sim_node import write_video

    steps = round(args.episode_seconds / DT) if args.episode_seconds else 0
    cfg = LoopConfig(
        blending=args.blending,
        output_mode=args.output_mode,
        noise_seed=args.seed if args.noise_seed is None else args.noise_seed,
        episode_steps=steps,
        height=args.height,
        width=args.width,
        task=args.task,
        torch_threads=args.torch_threads,
    )
    loop = InProcessLoop(args.checkpoint, cfg)
    eps: list[dict] = []
    latencies: list[float] = []
    try:
        for i in range(args.episodes):
            video = VideoSpec() if i < args.videos else None
            ep = loop.run_episode(args.seed + i, video=video)
            latencies += ep.pop("inference_latencies")
            frames = ep.pop("frames")
            if frames:
                (out / "video").mkdir(exist_ok=True)
                write_video(out / "video" / f"episode_{i:03d}.gif", frames)
            eps.append({"episode": i, **ep})
            sys.stderr.write(
                f"vla-sim eval: episode {i + 1}/{args.episodes} seed {ep['seed']}: "
                f"{'success at ' + str(ep['time_to_success']) + ' s' if ep['success'] else 'no success'}"
                f" (max reward {ep['max_reward']:g})\n"
            )
    finally:
        loop.close()
    return eps, latencies


def eval_main(args: Any) -> int:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.in_process:
        t0 = time.perf_counter()
        eps, latencies = eval_in_process(args, out)
        report = summarize(args, eps, time.perf_counter() - t0, False, 0, out, latencies)
        sys.stdout.write(json.dumps({k: v for k, v in report.items() if k != "episodes"}) + "\n")
        return 0 if eps else 1
    results = out / "episodes.jsonl"
    results.unlink(missing_ok=True)
    steps = round(args.episode_seconds / DT) if args.episode_seconds else EPISODE_STEPS[args.task]
    env = dict(os.environ)
    sim_cmd = [
        sys.executable, "-m", "vla_sim.cli", "serve", "--task", args.task, "--mode", args.mode,
        "--height", str(args.height), "--width", str(args.width), "--seed", str(args.seed),
        "--episode-steps", str(steps), "--episodes", str(args.episodes), "--results", str(results),
        "--video-dir", str(out / "video"), "--video-episodes", str(args.videos),
    ]  # fmt: skip
    lockstep = args.mode == "lockstep"
    if lockstep:
        sim_cmd += ["--sync-topic", f"/{NODE}/tick", "--policy-reset", f"/{NODE}/reset"]
    t0 = time.perf_counter()
    listener = LatencyListener()
    sim = ChildProcess(sim_cmd, env=env, log_path=out / "sim.log")
    noise_seed = args.seed if args.noise_seed is None else args.noise_seed
    node_cmd = _node_cmd(args.checkpoint, args.output_mode, args.blending, lockstep, noise_seed)
    node = ChildProcess(node_cmd, env=env, log_path=out / "node.log")
    try:
        sim.wait(timeout=args.timeout)
        timed_out = False
    except subprocess.TimeoutExpired:
        timed_out = True
    finally:
        sim.stop(sigint_timeout=10.0, term_timeout=5.0)
        node_rc = node.stop(sigint_timeout=10.0, term_timeout=5.0)
        latencies = listener.close()
    wall = time.perf_counter() - t0
    eps = [json.loads(line) for line in results.read_text().splitlines()] if results.exists() else []
    eps = [e for e in eps if e.get("reason") == "time limit"] or eps
    report = summarize(args, eps, wall, timed_out, node_rc, out, latencies)
    sys.stdout.write(json.dumps({k: v for k, v in report.items() if k != "episodes"}) + "\n")
    return 0 if eps and not timed_out else 1


def summarize(
    args: Any, eps: list[dict], wall: float, timed_out: bool, node_rc: int, out: Path, latencies: list[float]
) -> dict:
    import numpy as np
    from vla_policy.latency_stats import summarize as summarize_latency

    latency = summarize_latency(latencies).as_ms()

    succ = [e for e in eps if e["success"]]
    tts = [e["time_to_success"] for e in succ if e["time_to_success"] is not None]
    sim_status = "" if args.in_process else _last_status(out / "sim.log")
    low, high = wilson_interval(len(succ), len(eps))
    jerks = [e["jerk_mean_abs"] for e in eps if e.get("jerk_mean_abs") is not None]
    policy_jerk = float(np.mean(jerks)) if jerks else None
    demo_jerk = demonstration_jerk(args.task, [e["seed"] for e in eps]) if eps else None
    report = {
        "task": args.task,
        "checkpoint": str(args.checkpoint),
        "mode": "in-process lockstep" if args.in_process else args.mode,
        "blending": args.blending,
        "output_mode": args.output_mode,
        "seeds": [e["seed"] for e in eps],
        "n_episodes": len(eps),
        "successes": len(succ),
        "success_rate": len(succ) / len(eps) if eps else 0.0,
        "success_rate_wilson95": [round(low, 4), round(high, 4)],
        "touched": sum(e["max_reward"] >= TOUCHED_REWARD for e in eps),
        "lifted": sum(e["max_reward"] >= LIFTED_REWARD for e in eps),
        "time_to_success_s_median": float(np.median(tts)) if tts else None,
        "jerk_mean_abs": policy_jerk,
        "demonstration_jerk_mean_abs": demo_jerk,
        "jerk_ratio": policy_jerk / demo_jerk if policy_jerk is not None and demo_jerk else None,
        "accepted_commands": sum(e["accepted_commands"] for e in eps),
        "rejected_commands": sum(e["rejected_commands"] for e in eps),
        "inference_latency": latency,
        "wall_s": round(wall, 2),
        "episodes_per_minute": round(60.0 * len(eps) / wall, 2) if wall > 0 else None,
        "timed_out": timed_out,
        "node_exit_code": node_rc,
        "sim_status": sim_status,
        "episodes": eps,
    }
    (out / "eval.json").write_text(json.dumps(report, indent=2))
    lines = [
        f"# Closed-loop evaluation: {args.task}",
        "",
        f"- checkpoint: `{args.checkpoint}`, mode {report['mode']}, blending {args.blending}, "
        f"output {args.output_mode}",
        f"- success rate: {report['success_rate']:.2f} ({len(succ)}/{len(eps)}; 95 % Wilson interval "
        f"{low:.2f}-{high:.2f}); touched the cube {report['touched']}, lifted it {report['lifted']}",
        f"- time to success (median): {report['time_to_success_s_median']}",
        f"- smoothness: mean |jerk| of the targets {_fmt(policy_jerk)}, the scripted demonstrations' "
        f"{_fmt(demo_jerk)} on the same seeds (ratio {_fmt(report['jerk_ratio'])})",
        f"- episodes per minute: {report['episodes_per_minute']}",
        f"- commands accepted/rejected: {report['accepted_commands']}/{report['rejected_commands']}",
        f"- inference latency (wall clock, {latency['reps']} chunks): median {latency['median_ms']} ms, "
        f"p99 {latency['p99_ms']} ms, max {latency['max_ms']} ms",
        f"- wall time: {report['wall_s']} s",
        "",
        "| episode | seed | success | max reward | time to success (s) |",
        "|---|---|---|---|---|",
        *[
            f"| {e['episode']} | {e['seed']} | {e['success']} | {e['max_reward']} | {e['time_to_success']} |"
            for e in eps
        ],
    ]
    (out / "eval.md").write_text("\n".join(lines) + "\n")
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(5, 3))
        ax.bar([e["episode"] for e in eps], [e["max_reward"] for e in eps])
        ax.set_xlabel("episode")
        ax.set_ylabel("max reward (4 = success)")
        fig.tight_layout()
        fig.savefig(out / "eval.png")
        plt.close(fig)
    except Exception as exc:  # plots are optional
        report["plot_error"] = str(exc)
    return report


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"


def _last_status(log: Path) -> str:
    try:
        lines = [ln for ln in log.read_text().splitlines() if "episode done" in ln]
        return lines[-1][-300:] if lines else ""
    except OSError:
        return ""
