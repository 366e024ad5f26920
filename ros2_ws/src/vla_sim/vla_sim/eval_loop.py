"""``vla-sim eval``: closed loop, the sim (``vla-sim serve``) and the real policy node as separate processes.

The sim runs N episodes (auto-reset after the episode length) and writes one JSON line per episode; the
node runs with ``use_sim_time`` and config/aloha.yaml (groups, cameras: sim 'top' published as 'head').
In ``lockstep`` mode (the default) the node runs with ``lockstep:=true`` and a fixed noise seed, the sim
waits for its ``~/tick`` and resets it before each episode: the same command gives the same episodes,
whatever the inference time (see sim_node.py).
Reports: ``eval.json``, ``eval.md`` (success rate, time to success, the node's inference latency from
its ``~/action_chunk`` messages), ``eval.png`` (per-episode max reward) and a gif of the first episode
under ``video/``.
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


def eval_main(args: Any) -> int:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results = out / "episodes.jsonl"
    results.unlink(missing_ok=True)
    steps = round(args.episode_seconds / DT) if args.episode_seconds else EPISODE_STEPS[args.task]
    env = dict(os.environ)
    sim_cmd = [
        sys.executable, "-m", "vla_sim.cli", "serve", "--task", args.task, "--mode", args.mode,
        "--height", str(args.height), "--width", str(args.width), "--seed", str(args.seed),
        "--episode-steps", str(steps), "--episodes", str(args.episodes), "--results", str(results),
        "--video-dir", str(out / "video"),
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
    sim_status = _last_status(out / "sim.log")
    report = {
        "task": args.task,
        "checkpoint": str(args.checkpoint),
        "mode": args.mode,
        "blending": args.blending,
        "output_mode": args.output_mode,
        "n_episodes": len(eps),
        "successes": len(succ),
        "success_rate": len(succ) / len(eps) if eps else 0.0,
        "time_to_success_s_median": float(np.median(tts)) if tts else None,
        "accepted_commands": sum(e["accepted_commands"] for e in eps),
        "rejected_commands": sum(e["rejected_commands"] for e in eps),
        "inference_latency": latency,
        "wall_s": round(wall, 2),
        "timed_out": timed_out,
        "node_exit_code": node_rc,
        "sim_status": sim_status,
        "episodes": eps,
    }
    (out / "eval.json").write_text(json.dumps(report, indent=2))
    lines = [
        f"# Closed-loop evaluation: {args.task}",
        "",
        f"- checkpoint: `{args.checkpoint}`, mode {args.mode}, blending {args.blending}, "
        f"output {args.output_mode}",
        f"- success rate: {report['success_rate']:.2f} ({len(succ)}/{len(eps)})",
        f"- time to success (median): {report['time_to_success_s_median']}",
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


def _last_status(log: Path) -> str:
    try:
        lines = [ln for ln in log.read_text().splitlines() if "episode done" in ln]
        return lines[-1][-300:] if lines else ""
    except OSError:
        return ""
