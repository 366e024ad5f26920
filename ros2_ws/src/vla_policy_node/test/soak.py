"""Soak: the real node (a tiny random checkpoint, forward mode, the model in its worker process) fed
synthetic cameras, joint states and the instruction for a long time, every output checked by the invariant
monitor. Beside it, for the same time, a bare rclpy timer at the same rate in a process of its own (the
baseline) and ``--hog N`` busy processes (load). Reports RSS drift, latency drift, the node's deadline misses
and worst tick gap against the baseline's, and the monitor's counts as ``reliability.json`` /
``reliability.md`` (run by ``scripts/soak.sh``; ``--duration`` seconds, default 1800)."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parents[3] / "tests"))

import ros_harness  # noqa: E402
from node_harness import Harness, node_params, write_params_file  # noqa: E402
from reliability_report import ReliabilityReport  # noqa: E402
from vla_policy_node.bench_control import cpu_hogs, interval_stats  # noqa: E402

RUNNING = 2
PERIOD = 0.02  # the node's control period: 50 Hz


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--duration", type=float, default=float(os.environ.get("VLA_SOAK_SECONDS", 1800)))
    ap.add_argument("--out", default=os.environ.get("VLA_RELIABILITY_DIR", ""))
    ap.add_argument("--sample", type=float, default=5.0, help="seconds between samples")
    ap.add_argument("--hog", type=int, default=0, help="busy processes beside the node (load)")
    args = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="vla_soak_"))
    env = ros_harness.ros_child_env(log_dir=tmp / "ros_log")
    os.environ.update({k: env[k] for k in ("ROS_DOMAIN_ID", "ROS_AUTOMATIC_DISCOVERY_RANGE", "ROS_LOG_DIR")})
    ckpt = tmp / "tiny"
    subprocess.run(
        [sys.executable, "-m", "vla_policy.cli", "init", "--preset", "tiny", "--out", str(ckpt)],
        check=True,
        capture_output=True,
    )
    params = node_params(ckpt, output_mode="forward", control_rate_hz=1.0 / PERIOD)
    params_file = write_params_file(tmp / "params.yaml", params)
    cmd = [sys.executable, "-m", "vla_policy_node.main", "--ros-args", "--params-file", str(params_file)]
    proc = ros_harness.spawn(cmd, env, log_path=tmp / "node.log")
    harness = Harness(control_period=PERIOD)
    harness.publish_instruction("pick up the red cube")
    report = ReliabilityReport(kind=f"soak {args.duration:.0f} s")
    samples: list[dict[str, float]] = []
    try:
        with report.scenario("soak", harness.monitor, f"synthetic input, {args.duration:.0f} s") as notes:
            if harness.wait_status(lambda s: s.state == RUNNING and s.last_chunk_id > 0, 180.0) is None:
                raise RuntimeError(f"node never ran a chunk:\n{ros_harness.output(proc)[-2000:]}")
            hogs = cpu_hogs(args.hog)
            hogs.__enter__()
            base_json = tmp / "baseline.json"
            baseline = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "vla_policy_node.bench_control",
                    "--baseline",
                    "--duration",
                    str(args.duration),
                    "--rate",
                    str(1.0 / PERIOD),
                    "--json",
                    str(base_json),
                ],
                env=env,
            )
            misses0 = harness.latest_status().deadline_misses
            t0 = time.monotonic()
            while time.monotonic() - t0 < args.duration:
                time.sleep(min(args.sample, max(0.0, args.duration - (time.monotonic() - t0))))
                if proc.poll() is not None:
                    raise RuntimeError(f"node exited with {proc.returncode}")
                s = harness.latest_status()
                worst = harness.diagnostic_value("jitter_max_ms")
                samples.append(
                    {
                        "t": round(time.monotonic() - t0, 1),
                        "rss_mb": round(_rss_mb(proc.pid), 1),
                        "latency_mean_s": float(s.latency_mean) if s is not None else float("nan"),
                        "deadline_misses": int(s.deadline_misses) if s is not None else 0,
                        "overruns": int(s.inference_overruns) if s is not None else 0,
                        "state": int(s.state) if s is not None else -1,
                        "commands": harness.count_commands(),
                        "jitter_max_ms": float(worst) if worst else float("nan"),
                    }
                )
            baseline.wait(timeout=120)
            hogs.__exit__(None, None, None)
            base = interval_stats(json.loads(base_json.read_text())["intervals"], PERIOD)
            n = max(1, len(samples) // 5)
            first, last = samples[:n], samples[-n:]

            def mean(rows: list[dict[str, float]], key: str) -> float:
                return sum(r[key] for r in rows) / len(rows)

            ticks = harness.count_commands() / 3  # three groups per tick
            figures = {
                "duration_s": args.duration,
                "rss_start_mb": round(mean(first, "rss_mb"), 1),
                "rss_end_mb": round(mean(last, "rss_mb"), 1),
                "rss_drift_mb": round(mean(last, "rss_mb") - mean(first, "rss_mb"), 1),
                "latency_start_s": round(mean(first, "latency_mean_s"), 4),
                "latency_end_s": round(mean(last, "latency_mean_s"), 4),
                "latency_drift_s": round(mean(last, "latency_mean_s") - mean(first, "latency_mean_s"), 4),
                "deadline_misses": samples[-1]["deadline_misses"] - misses0,
                "worst_gap_ms": round(PERIOD * 1e3 + max(r["jitter_max_ms"] for r in samples), 1),
                "baseline_deadline_misses": base["deadline_misses"],
                "baseline_worst_gap_ms": round(base["worst_gap_ms"], 1),
                "baseline_jitter_p99_ms": round(base["jitter_p99_ms"], 2),
                "hog_processes": args.hog,
                "control_ticks_seen": int(ticks),
                "deadline_miss_rate": round((samples[-1]["deadline_misses"] - misses0) / max(ticks, 1), 4),
                "inference_overruns": samples[-1]["overruns"],
                "samples": len(samples),
            }
            report.extra.update(figures)
            notes.append(
                f"RSS drift {figures['rss_drift_mb']} MB, latency drift {figures['latency_drift_s']} s, "
                f"{figures['deadline_misses']} deadline misses "
                f"(bare timer: {figures['baseline_deadline_misses']}), "
                f"worst gap {figures['worst_gap_ms']} ms (bare timer: {figures['baseline_worst_gap_ms']} ms)"
            )
            assert harness.monitor.violation_count == 0
    except Exception as exc:
        print(f"soak failed: {exc}", file=sys.stderr)
    finally:
        report.add_monitor(harness.monitor)
        report.extra["rss_samples"] = [(r["t"], r["rss_mb"]) for r in samples[:: max(1, len(samples) // 60)]]
        harness.close()
        code = ros_harness.stop(proc)
        report.extra["exit_code"] = code
        out = report.write(Path(args.out) if args.out else None)
        print(report.markdown())
        print(f"report: {out}/reliability.md; node log: {tmp / 'node.log'}")
    return 0 if report.violations == 0 and all(s.result == "pass" for s in report.scenarios) else 1


if __name__ == "__main__":
    sys.exit(main())
