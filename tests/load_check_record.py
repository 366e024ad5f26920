"""Load check of `vla-bag record` (not a test): 3 cameras at 30 Hz (480x640 rgb8) and /joint_states at
200 Hz for DURATION seconds (default 60), all reliable, recorded with 0 messages lost, counted against
the publisher.

    python tests/load_check_record.py [--duration 60] [--storage mcap] [--out DIR]
    python tests/load_check_record.py --throttle-mb-s 5 --max-queue-mb 64 [--duration 20]

Prints the publisher's counts, the bag's counts and the lost messages per topic; exits 1 when any is lost.
With ``--throttle-mb-s`` the recorder's disk is throttled (its bag writer sleeps ``bytes / rate`` per
message: a disk slower than the input) and the queue is capped at ``--max-queue-mb``: the check then
samples the recorder's resident memory, and passes when the queue stayed under its cap (plus the newest
message and the one being written), every message the publisher sent is either in the bag or counted as
dropped for its topic (in the summary and in metadata.yaml), and nothing was lost otherwise.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import threading
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


# The recorder with a throttled disk: the bag writer sleeps bytes / rate after each message.
THROTTLED_RECORDER = r"""
import sys, time
from vla_policy.data.episode_bag import EpisodeBagWriter
from vla_policy_node import bag_cli
RATE = float(sys.argv[1]) * 1e6
write_raw = EpisodeBagWriter.write_raw
def throttled(self, topic, stamp, data):
    write_raw(self, topic, stamp, data)
    time.sleep(len(data) / RATE)
EpisodeBagWriter.write_raw = throttled
sys.exit(bag_cli.main(sys.argv[2:]))
"""


class RssSampler:
    """Samples a process's resident memory (VmRSS) every ``period`` seconds in a thread."""

    def __init__(self, pid: int, period: float = 0.25) -> None:
        self.pid, self.period = pid, period
        self.samples: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.period):
            try:
                text = Path(f"/proc/{self.pid}/status").read_text()
            except OSError:
                return
            kb = next((int(ln.split()[1]) for ln in text.splitlines() if ln.startswith("VmRSS:")), None)
            if kb is not None:
                self.samples.append(kb / 1024)

    def stop(self) -> dict[str, float]:
        self._stop.set()
        self._thread.join()
        s = sorted(self.samples) or [0.0]
        n = len(s)
        return {"samples": n, "median_mb": round(s[n // 2], 1), "max_mb": round(s[-1], 1)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=60.0)
    parser.add_argument("--storage", choices=("mcap", "sqlite3"), default="mcap")
    parser.add_argument("--out", default=None, help="bag path (default: a temporary directory)")
    parser.add_argument("--throttle-mb-s", type=float, default=0.0, help="throttle the recorder's disk")
    parser.add_argument("--max-queue-mb", type=float, default=512.0, help="the recorder's queue cap")
    parser.add_argument("--stop-timeout", type=float, default=60.0, help="seconds for the recorder to finish")
    args = parser.parse_args()
    from vla_policy.data.episode_bag import open_bag

    out = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="load_check_")) / "bag"
    env = ros_harness.ros_child_env()
    topics = [f"/cameras/cam{i}/image_raw" for i in range(3)] + ["/joint_states"]
    stats_json = out.parent / (out.name + ".stats.json")
    launcher = (
        [sys.executable, "-c", THROTTLED_RECORDER, str(args.throttle_mb_s)]
        if args.throttle_mb_s > 0
        else [sys.executable, "-m", "vla_policy_node.bag_cli"]
    )
    rec = ros_harness.spawn(
        [
            *launcher,
            "record",
            "--max-queue-mb",
            str(args.max_queue_mb),
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
    rss = RssSampler(rec.pid)
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
        rc = ros_harness.stop(rec, sigint_timeout=args.stop_timeout)
        stop_s = time.monotonic() - t_stop
    finally:
        if pub is not None:
            ros_harness.stop(pub)
        ros_harness.stop(rec)
        memory = rss.stop()
    line = next(ln for ln in ros_harness.output(pub).splitlines() if ln.startswith("PUBLISHED"))
    published = json.loads(line.split(" ", 1)[1])
    with open_bag(out) as bag:
        recorded = {t: s.count for t, s in bag.topics().items()}
        dropped_meta = json.loads(bag.custom_data.get("vla.recorder.dropped", "{}"))
    stats = json.loads(stats_json.read_text()) if stats_json.exists() else {}
    dropped = {t: stats.get("topics", {}).get(t, {}).get("dropped", 0) for t in topics}
    lost = {t: published["counts"][t] - recorded.get(t, 0) - dropped[t] for t in topics}
    size = sum(f.stat().st_size for f in out.iterdir())
    biggest = 480 * 640 * 3 + 100  # one camera message
    queue_ok = stats.get("max_queued_mb", 0.0) * 1e6 <= args.max_queue_mb * 1e6 + 2 * biggest
    result = {
        "duration_s": args.duration,
        "storage": args.storage,
        "throttle_mb_s": args.throttle_mb_s,
        "max_queue_mb": args.max_queue_mb,
        "publisher": published,
        "recorded": recorded,
        "dropped": dropped,
        "dropped_in_metadata": dropped_meta,
        "lost": lost,
        "queue_within_cap": queue_ok,
        "recorder_rss": memory,
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
                "dropped",
                "elapsed_s",
            )
        },
    }
    print(json.dumps(result, indent=1))
    ok = rc == 0 and all(v == 0 for v in lost.values()) and queue_ok
    if args.throttle_mb_s > 0:
        ok = ok and dropped_meta == {t: n for t, n in dropped.items() if t in dropped_meta}
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
