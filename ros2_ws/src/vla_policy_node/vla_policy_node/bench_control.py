"""Control-loop jitter benchmark: the node's control timer at 50 Hz with inference running all the time,
beside a bare rclpy timer (the baseline) in the same process and the same run.

    bench_control [--checkpoint DIR] [--duration 20] [--rate 50] [--json out.json]

Reports, for both timers, |interval - period| p50/p99/max (ms) and deadline misses (an interval longer
than 1.5 periods), plus the inference latency and chunk count. Without --checkpoint a random tiny
checkpoint is written to a temporary directory.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
from vla_policy.latency_stats import summarize

LOG = logging.getLogger("bench_control")
CAMERAS = ("head", "left_wrist", "right_wrist")


def _stats(intervals: list[float], period: float, factor: float = 1.5) -> dict[str, float]:
    arr = np.asarray(intervals, dtype=np.float64)
    if arr.size == 0:
        return {"ticks": 0}
    jitter = summarize(np.abs(arr - period))
    return {
        "ticks": int(arr.size),
        "jitter_p50_ms": jitter.median * 1e3,
        "jitter_p99_ms": jitter.p99 * 1e3,
        "jitter_max_ms": jitter.max * 1e3,
        "deadline_misses": int(np.count_nonzero(arr > factor * period)),
    }


def _make_checkpoint(root: Path) -> Path:
    from vla_policy.model.policy import VLAPolicy
    from vla_policy.model.presets import get_preset

    out = root / "tiny"
    VLAPolicy(get_preset("tiny"), seed=0).save(out)
    return out


def run(
    checkpoint: Path, duration: float, rate: float, torch_threads: int, control_loop: str = "thread"
) -> dict[str, Any]:
    import rclpy
    from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
    from rclpy.executors import MultiThreadedExecutor
    from rclpy.parameter import Parameter
    from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
    from sensor_msgs.msg import Image, JointState
    from std_msgs.msg import String

    from vla_policy_node.node import VLAPolicyNode

    sys.setswitchinterval(0.001)  # as the node's main() does
    rclpy.init()
    period = 1.0 / rate
    names = [f"left_joint_{i}" for i in range(6)] + [f"right_joint_{i}" for i in range(6)]
    names += ["left_gripper", "right_gripper"]
    overrides = {
        "checkpoint": str(checkpoint),
        "control_rate_hz": float(rate),
        "output_mode": "forward",
        "refill_threshold": 0.99,  # ask for the next chunk at once: inference runs all the time
        "torch_threads": torch_threads,
        "control_loop": control_loop,
        "cameras.topics": [f"/bench/{c}" for c in CAMERAS],
        "max_image_age": 1.0,
        "max_state_age": 1.0,
    }
    node = VLAPolicyNode(parameter_overrides=[Parameter(k, value=v) for k, v in overrides.items()])

    side = rclpy.create_node("bench_side")
    baseline: list[float] = []
    last = [None]

    def _baseline_tick() -> None:
        t = time.perf_counter()
        if last[0] is not None:
            baseline.append(t - last[0])
        last[0] = t

    side.create_timer(period, _baseline_tick, callback_group=MutuallyExclusiveCallbackGroup())
    cam_pubs = [side.create_publisher(Image, f"/bench/{c}", qos_profile_sensor_data) for c in CAMERAS]
    joint_pub = side.create_publisher(JointState, "/joint_states", qos_profile_sensor_data)
    latched = QoSProfile(
        depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL
    )
    instr_pub = side.create_publisher(String, "/instruction", latched)
    rng = np.random.default_rng(0)
    frame = rng.integers(0, 256, size=(64, 64, 3), dtype=np.uint8).tobytes()

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

    sensors = MutuallyExclusiveCallbackGroup()
    side.create_timer(1.0 / 15.0, _cameras, callback_group=sensors)
    side.create_timer(1.0 / 50.0, _joints, callback_group=sensors)
    instr_pub.publish(String(data="pick up the red cube"))

    executor = MultiThreadedExecutor(num_threads=4)
    executor.add_node(node)
    executor.add_node(side)
    spin = threading.Thread(target=executor.spin, daemon=True)
    spin.start()
    node.trigger_configure()
    node.trigger_activate()
    time.sleep(2.0)  # settle: discovery, first chunk
    node._intervals.clear()
    baseline.clear()
    chunks0 = node._chunk_id
    lat0 = len(node._latencies)
    time.sleep(duration)
    node_intervals = list(node._intervals)
    base_intervals = list(baseline)
    latencies = list(node._latencies)[lat0:] if lat0 < len(node._latencies) else list(node._latencies)
    chunks = node._chunk_id - chunks0
    state = node.policy_state
    node.trigger_deactivate()
    node._free()
    executor.shutdown()
    node.destroy_node()
    side.destroy_node()
    rclpy.try_shutdown()
    lat = np.asarray(latencies, dtype=np.float64)
    result = {
        "rate_hz": rate,
        "control_loop": control_loop,
        "duration_s": duration,
        "control": _stats(node_intervals, period),
        "baseline": _stats(base_intervals, period),
        "chunks": int(chunks),
        "inference_busy_fraction": float(lat.sum() / duration) if lat.size else 0.0,
        "inference_latency_p50_ms": summarize(lat).median * 1e3,
        "final_state": int(state),
    }
    c, b = result["control"], result["baseline"]
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
    parser.add_argument("--control-loop", choices=("thread", "timer"), default="thread")
    parser.add_argument("--json", type=Path, default=None, help="write the result here")
    args, _ros_args = parser.parse_known_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench_control_") as tmp:
        ckpt = args.checkpoint or _make_checkpoint(Path(tmp))
        result = run(ckpt, args.duration, args.rate, args.torch_threads, args.control_loop)
    text = json.dumps(result, indent=1)
    LOG.info("%s", text)
    if args.json is not None:
        args.json.write_text(text + "\n")


if __name__ == "__main__":
    main()
