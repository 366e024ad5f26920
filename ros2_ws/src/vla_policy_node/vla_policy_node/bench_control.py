"""Control-loop jitter benchmark: the node's control loop at 50 Hz with inference running all the time,
against a bare rclpy timer in a process of its own (the baseline), measured in the same run.

    bench_control [--checkpoint DIR] [--duration 20] [--rate 50] [--variants process:50,process:0,thread:0]
                  [--hog 2] [--json out.json]

For each variant ``WORKER:PRIORITY`` (worker ``process``: the model in its own process, the default;
``thread``: the model in the node's process, sharing its GIL; PRIORITY: the node's
``control_thread_priority``, 0 = normal scheduling), the node runs for ``--duration`` seconds while a
baseline process (normal priority) ticks a bare rclpy timer at the same rate, and a third process publishes
the synthetic cameras, joint states and instruction (as a robot's drivers do); ``--hog N`` keeps N busy
processes beside them. Reports
|interval - period| p50/p99/max (ms), deadline misses (an interval longer than 1.5 periods), the worst gap,
the inference latency and chunk count, and the ratios node / baseline. Without --checkpoint a random tiny
checkpoint is written to a temporary directory.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
from vla_policy.latency_stats import summarize

from vla_policy_node.child_process import ChildProcess

LOG = logging.getLogger("bench_control")
CAMERAS = ("head", "left_wrist", "right_wrist")


def interval_stats(intervals: list[float], period: float, factor: float = 1.5) -> dict[str, float]:
    arr = np.asarray(intervals, dtype=np.float64)
    if arr.size == 0:
        return {"ticks": 0}
    jitter = summarize(np.abs(arr - period))
    return {
        "ticks": int(arr.size),
        "jitter_p50_ms": jitter.median * 1e3,
        "jitter_p99_ms": jitter.p99 * 1e3,
        "jitter_max_ms": jitter.max * 1e3,
        "worst_gap_ms": float(arr.max()) * 1e3,
        "deadline_misses": int(np.count_nonzero(arr > factor * period)),
    }


def _make_checkpoint(root: Path) -> Path:
    from vla_policy.model.policy import VLAPolicy
    from vla_policy.model.presets import get_preset

    out = root / "tiny"
    VLAPolicy(get_preset("tiny"), seed=0).save(out)
    return out


@contextlib.contextmanager
def cpu_hogs(n: int) -> Iterator[None]:
    """``n`` processes spinning on a core each, for as long as the block runs."""
    hogs = [ChildProcess([sys.executable, "-c", "while True: pass"], log_path=os.devnull) for _ in range(n)]
    try:
        yield
    finally:
        for h in hogs:
            h.stop()


def baseline(duration: float, rate: float) -> list[float]:
    """A bare rclpy timer in this process (run it as its own process: ``--baseline``)."""
    import rclpy

    rclpy.init()
    node = rclpy.create_node("bench_baseline")
    intervals: list[float] = []
    last: list[float | None] = [None]

    def _tick() -> None:
        t = time.perf_counter()
        if last[0] is not None:
            intervals.append(t - last[0])
        last[0] = t

    node.create_timer(1.0 / rate, _tick)
    end = time.monotonic() + duration
    while time.monotonic() < end:
        rclpy.spin_once(node, timeout_sec=0.1)
    node.destroy_node()
    rclpy.try_shutdown()
    return intervals


def sensors() -> None:
    """Synthetic drivers until SIGINT (run as their own process: ``--sensors``): three 64x64 cameras at
    15 Hz, the joint states at 50 Hz, the instruction latched."""
    import rclpy
    from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
    from rclpy.executors import ExternalShutdownException
    from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
    from sensor_msgs.msg import Image, JointState
    from std_msgs.msg import String

    rclpy.init()
    side = rclpy.create_node("bench_inputs")
    names = [f"left_joint_{i}" for i in range(6)] + [f"right_joint_{i}" for i in range(6)]
    names += ["left_gripper", "right_gripper"]
    cam_pubs = [side.create_publisher(Image, f"/bench/{c}", qos_profile_sensor_data) for c in CAMERAS]
    joint_pub = side.create_publisher(JointState, "/joint_states", qos_profile_sensor_data)
    latched = QoSProfile(
        depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL
    )
    instr_pub = side.create_publisher(String, "/instruction", latched)
    frame = np.random.default_rng(0).integers(0, 256, size=(64, 64, 3), dtype=np.uint8).tobytes()

    def _cameras() -> None:
        stamp = side.get_clock().now().to_msg()
        for pub in cam_pubs:
            msg = Image(height=64, width=64, encoding="rgb8", step=192, data=frame)
            msg.header.stamp = stamp
            pub.publish(msg)

    def _joints() -> None:
        msg = JointState(name=names, position=[0.0] * len(names))
        msg.header.stamp = side.get_clock().now().to_msg()
        joint_pub.publish(msg)

    group = MutuallyExclusiveCallbackGroup()
    side.create_timer(1.0 / 15.0, _cameras, callback_group=group)
    side.create_timer(1.0 / 50.0, _joints, callback_group=group)
    instr_pub.publish(String(data="pick up the red cube"))
    with contextlib.suppress(KeyboardInterrupt, ExternalShutdownException):
        rclpy.spin(side)
    side.destroy_node()
    rclpy.try_shutdown()


def run_node(
    checkpoint: Path, duration: float, rate: float, torch_threads: int, worker: str, priority: int
) -> dict[str, Any]:
    """The node (in this process) fed by a drivers process, inference all the time, a baseline process."""
    import rclpy
    from rclpy.executors import MultiThreadedExecutor
    from rclpy.parameter import Parameter

    from vla_policy_node.node import VLAPolicyNode
    from vla_policy_node.realtime import schedule_process_threads

    rclpy.init()
    overrides = {
        "checkpoint": str(checkpoint),
        "control_rate_hz": float(rate),
        "output_mode": "forward",
        "refill_threshold": 0.99,  # ask for the next chunk at once: inference runs all the time
        "torch_threads": torch_threads,
        "inference_worker": worker,
        "control_thread_priority": priority,
        "cameras.topics": [f"/bench/{c}" for c in CAMERAS],
        "max_image_age": 1.0,
        "max_state_age": 1.0,
    }
    node = VLAPolicyNode(parameter_overrides=[Parameter(k, value=v) for k, v in overrides.items()])
    schedule_process_threads()  # as the node's main() does
    drivers_log = tempfile.TemporaryDirectory(prefix="bench_sensors_")
    # the sensors publish from a process of their own, as a robot's camera and joint drivers do
    drivers = ChildProcess(
        [sys.executable, "-m", "vla_policy_node.bench_control", "--sensors"],
        log_path=Path(drivers_log.name) / "sensors.log",
        preexec_fn=lambda: os.sched_setscheduler(0, os.SCHED_OTHER, os.sched_param(0)),
    )
    executor = MultiThreadedExecutor(num_threads=4)
    executor.add_node(node)
    threading.Thread(target=executor.spin, daemon=True).start()
    node.trigger_configure()
    runtime = node._runtime
    if runtime is None:
        raise SystemExit("bench_control: the node did not configure (see its log)")
    node.trigger_activate()
    time.sleep(3.0)  # settle: discovery, first chunks
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "baseline.json"
        base = ChildProcess(
            [
                sys.executable,
                "-m",
                "vla_policy_node.bench_control",
                "--baseline",
                "--duration",
                str(duration),
                "--rate",
                str(rate),
                "--json",
                str(out),
            ],
            log_path=Path(tmp) / "baseline.log",
            # at normal priority, whatever this process runs at
            preexec_fn=lambda: os.sched_setscheduler(0, os.SCHED_OTHER, os.sched_param(0)),
        )
        ticks0, chunks0 = runtime.status(0.0).ticks, runtime.samples()[2]
        time.sleep(duration)
        ticks1 = runtime.status(0.0).ticks
        intervals, latencies, chunk_id = runtime.samples()
        chunks = chunk_id - chunks0
        intervals = intervals[-(ticks1 - ticks0) :]  # the window's ticks (the history keeps 2000)
        latencies = latencies[-chunks:] if chunks > 0 else []
        state = runtime.state
        if base.wait(timeout=duration + 60) != 0:
            raise SystemExit(f"bench_control: the baseline failed: {base.last_line()}")
        base_intervals = json.loads(out.read_text())["intervals"]
    node.trigger_deactivate()
    node._free("benchmark done")
    drivers.stop()
    drivers_log.cleanup()
    executor.shutdown()
    node.destroy_node()
    rclpy.try_shutdown()
    period = 1.0 / rate
    lat = np.asarray(latencies, dtype=np.float64)
    result: dict[str, Any] = {
        "worker": worker,
        "control_thread_priority": priority,
        "control": interval_stats(intervals, period),
        "baseline_own_process": interval_stats(base_intervals, period),
        "chunks": int(chunks),
        "inference_latency_p50_ms": summarize(lat).median * 1e3 if lat.size else float("nan"),
        "final_state": int(state),
    }
    c, b = result["control"], result["baseline_own_process"]
    if b.get("jitter_p99_ms"):
        result["p99_ratio_control_over_baseline"] = c["jitter_p99_ms"] / b["jitter_p99_ms"]
    return result


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--checkpoint", type=Path, default=None)
    parser.add_argument("--duration", type=float, default=20.0)
    parser.add_argument("--rate", type=float, default=50.0)
    parser.add_argument("--torch-threads", type=int, default=1)
    parser.add_argument(
        "--variants", default="process:50,process:0,thread:0", help="WORKER:PRIORITY variants, in order"
    )
    parser.add_argument("--hog", type=int, default=0, help="busy processes beside the run (load)")
    parser.add_argument("--json", type=Path, default=None, help="write the result here")
    parser.add_argument("--baseline", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--sensors", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--variant", default="", help=argparse.SUPPRESS)
    args, _ros_args = parser.parse_known_args(argv)
    if args.sensors:  # the synthetic drivers' own process
        sensors()
        return
    if args.baseline:  # the baseline's own process
        assert args.json is not None
        args.json.write_text(json.dumps({"intervals": baseline(args.duration, args.rate)}))
        return
    if args.variant:  # one worker kind, in a process of its own (rclpy is initialised once per process)
        assert args.json is not None and args.checkpoint is not None
        worker, priority = args.variant.split(":")
        result = run_node(
            args.checkpoint, args.duration, args.rate, args.torch_threads, worker, int(priority)
        )
        args.json.write_text(json.dumps(result))
        # a thread worker may still be inside torch: no interpreter teardown under it (it would abort)
        os._exit(0)
    results: dict[str, Any] = {"rate_hz": args.rate, "duration_s": args.duration, "hog_processes": args.hog}
    with tempfile.TemporaryDirectory(prefix="bench_control_") as tmp, cpu_hogs(args.hog):
        ckpt = args.checkpoint or _make_checkpoint(Path(tmp))
        for variant in args.variants.split(","):
            out = Path(tmp) / f"{variant.replace(':', '_')}.json"
            cmd = [sys.executable, "-m", "vla_policy_node.bench_control", "--variant", variant]
            cmd += ["--json", str(out)]
            cmd += ["--checkpoint", str(ckpt), "--duration", str(args.duration), "--rate", str(args.rate)]
            run = ChildProcess(
                [*cmd, "--torch-threads", str(args.torch_threads)], log_path=Path(tmp) / "run.log"
            )
            if run.wait() != 0:
                raise SystemExit(f"bench_control: variant {variant} failed: {run.last_line()}")
            results[variant] = json.loads(out.read_text())
    text = json.dumps(results, indent=1)
    LOG.info("%s", text)
    if args.json is not None:
        args.json.write_text(text + "\n")


if __name__ == "__main__":
    main()
