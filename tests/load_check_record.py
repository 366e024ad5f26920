"""Load check of `vla-bag record` (not a test): 3 cameras at 30 Hz (480x640 rgb8) and /joint_states at
200 Hz for DURATION seconds (default 60), all reliable, recorded with 0 messages lost, counted against
the publisher.

    python tests/load_check_record.py [--duration 60] [--storage mcap] [--out DIR]

Prints the publisher's counts, the bag's counts and the lost messages per topic; exits 1 when any is lost.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import ros_harness

PUBLISHER = r"""
import json, sys, time
import numpy as np
import rclpy
from rclpy.qos import QoSProfile, ReliabilityPolicy, HistoryPolicy
from sensor_msgs.msg import Image, JointState
DURATION = float(sys.argv[1])
rclpy.init()
node = rclpy.create_node("load_publisher")
qos = QoSProfile(depth=1000, reliability=ReliabilityPolicy.RELIABLE, history=HistoryPolicy.KEEP_LAST)
cams = [f"/cameras/cam{i}/image_raw" for i in range(3)]
pubs = {t: node.create_publisher(Image, t, qos) for t in cams}
pub_js = node.create_publisher(JointState, "/joint_states", qos)
rng = np.random.default_rng(0)
images = {}
for t in cams:
    m = Image(height=480, width=640, encoding="rgb8", step=640 * 3)
    m.data = rng.integers(0, 256, 480 * 640 * 3, dtype=np.uint8).tobytes()
    images[t] = m
js = JointState(name=[f"j{i}" for i in range(14)], position=[0.0] * 14)
deadline = time.monotonic() + 30
every = [*pubs.values(), pub_js]
while time.monotonic() < deadline and not all(p.get_subscription_count() > 0 for p in every):
    time.sleep(0.05)
counts = {t: 0 for t in [*cams, "/joint_states"]}
t0 = time.monotonic()
next_cam, next_js = t0, t0
late = 0
while True:
    now = time.monotonic()
    if now - t0 >= DURATION:
        break
    if now >= next_js:
        js.header.stamp = node.get_clock().now().to_msg()
        js.position[0] = float(counts["/joint_states"])
        pub_js.publish(js)
        counts["/joint_states"] += 1
        next_js += 1 / 200
    if now >= next_cam:
        for t in cams:
            images[t].header.stamp = node.get_clock().now().to_msg()
            pubs[t].publish(images[t])
            counts[t] += 1
        next_cam += 1 / 30
        if time.monotonic() - next_cam > 1 / 30:
            late += 1
    time.sleep(max(0.0, min(next_js, next_cam) - time.monotonic()))
elapsed = time.monotonic() - t0
summary = {"counts": counts, "elapsed_s": round(elapsed, 2), "late_camera_frames": late}
print("PUBLISHED " + json.dumps(summary), flush=True)
time.sleep(5)
"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=60.0)
    parser.add_argument("--storage", choices=("mcap", "sqlite3"), default="mcap")
    parser.add_argument("--out", default=None, help="bag path (default: a temporary directory)")
    args = parser.parse_args()
    from vla_policy.data.episode_bag import open_bag

    out = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="load_check_")) / "bag"
    env = ros_harness.ros_child_env()
    topics = [f"/cameras/cam{i}/image_raw" for i in range(3)] + ["/joint_states"]
    stats_json = out.parent / (out.name + ".stats.json")
    rec = ros_harness.spawn(
        [
            sys.executable,
            "-m",
            "vla_policy_node.bag_cli",
            "record",
            "--out",
            str(out),
            "--storage",
            args.storage,
            "--stats-json",
            str(stats_json),
            *topics,
        ],
        env,
    )
    pub = None
    try:
        if not ros_harness.wait_for_output(rec, "recording to", 30):
            print(ros_harness.output(rec))
            return 2
        pub = ros_harness.spawn([sys.executable, "-c", PUBLISHER, str(args.duration)], env)
        if not ros_harness.wait_for_output(pub, "PUBLISHED", args.duration + 60):
            print(ros_harness.output(pub))
            return 2
        time.sleep(2.0)
        t_stop = time.monotonic()
        rc = ros_harness.stop(rec, sigint_timeout=60)
        stop_s = time.monotonic() - t_stop
    finally:
        if pub is not None:
            ros_harness.stop(pub)
        ros_harness.stop(rec)
    line = next(ln for ln in ros_harness.output(pub).splitlines() if ln.startswith("PUBLISHED"))
    published = json.loads(line.split(" ", 1)[1])
    with open_bag(out) as bag:
        recorded = {t: s.count for t, s in bag.topics().items()}
    lost = {t: published["counts"][t] - recorded.get(t, 0) for t in topics}
    size = sum(f.stat().st_size for f in out.iterdir())
    stats = json.loads(stats_json.read_text()) if stats_json.exists() else {}
    result = {
        "duration_s": args.duration,
        "storage": args.storage,
        "publisher": published,
        "recorded": recorded,
        "lost": lost,
        "recorder_exit": rc,
        "finalise_s": round(stop_s, 2),
        "bag_bytes": size,
        "bag": str(out),
        "recorder": {
            k: stats.get(k)
            for k in (
                "write_mb_per_s",
                "max_queued_messages",
                "max_queued_mb",
                "lost_in_recorder",
                "elapsed_s",
            )
        },
    }
    print(json.dumps(result, indent=1))
    return 0 if rc == 0 and all(v == 0 for v in lost.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
