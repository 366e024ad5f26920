"""Control-loop jitter while the model infers: ThreadWorker against ProcessWorker against a bare loop.

``python -m vla_policy.benchmarks.worker_bench --seconds 20`` runs a 50 Hz control thread in this process
(sleeping to absolute deadlines, as the runtime's timer does) in three variants, interleaved segment by
segment so the machine's load drifts over all of them alike:

- ``bare``: the loop alone (no inference);
- ``thread``: each tick polls a ``ThreadWorker`` and submits the next request as soon as a chunk is back
  (the model runs continuously in a thread of this process: it shares the GIL with the loop);
- ``process``: the same with a ``ProcessWorker`` (the model runs in a child process).

For each it prints the deadline misses (an interval over 1.5 periods), the jitter |interval - period|
(median, p99, max, repetitions) and the chunks inferred. Then it times one request round trip through
the process channel against calling the model in this process (``PolicyRunner.serve``), alternating the
two: the overhead is the round trip minus the child's own compute time. Without ``--checkpoint`` a
random tiny checkpoint is written to a temporary directory.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from vla_policy.latency_stats import summarize
from vla_policy.model.policy import VLAPolicy
from vla_policy.model.presets import get_preset
from vla_policy.observation import Observation
from vla_policy.runtime.inference import InferenceRequest, InferenceWorker, PolicySpec
from vla_policy.runtime.policy_runner import PolicyRunner
from vla_policy.runtime.process_worker import ProcessWorker
from vla_policy.runtime.thread_worker import ThreadWorker

MISS_FACTOR = 1.5  # an interval longer than this many periods is a missed deadline
START_TIMEOUT = 600.0
HOG = "while True: pass"


def bench_observation(cameras: Sequence[str], height: int, width: int, seed: int = 0) -> Observation:
    rng = np.random.default_rng(seed)
    images = {c: rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8) for c in cameras}
    state = rng.uniform(-1.0, 1.0, size=16).astype(np.float32)
    return Observation(images=images, state=state, instruction="pick up the red cube")


class ControlLoop:
    """One segment of the control thread: ticks at absolute deadlines, optionally driving a worker."""

    def __init__(self, period: float, worker: InferenceWorker | None, obs: Observation) -> None:
        self.period = period
        self.worker = worker
        self.obs = obs
        self.intervals: list[float] = []
        self.chunks = 0
        self.errors: list[str] = []
        self._next_id = 0
        self._in_flight = False

    def run(self, seconds: float) -> None:
        start = time.perf_counter()
        deadline = start + self.period
        last: float | None = None
        while True:
            delay = deadline - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            now = time.perf_counter()
            if now - start >= seconds:
                break
            if last is not None:
                self.intervals.append(now - last)
            last = now
            self._tick(now)
            while deadline <= now:  # a late tick skips the deadlines it missed (as a ROS timer does)
                deadline += self.period
        if self.worker is not None and self._in_flight:  # leave the worker idle for the next variant
            self.worker.wait(START_TIMEOUT)

    def _tick(self, now: float) -> None:
        if self.worker is None:
            return
        if self._in_flight:
            result = self.worker.poll(now)
            if result is None:
                return
            self._in_flight = False
            if result.error is None:
                self.chunks += 1
            else:
                self.errors.append(result.error)
        self._next_id += 1
        self.worker.submit(InferenceRequest(self._next_id, self.obs, seed=self._next_id), now)
        self._in_flight = True


def loop_summary(period: float, intervals: list[float], chunks: int) -> dict[str, Any]:
    a = np.asarray(intervals)
    jitter = summarize(np.abs(a - period).tolist()).as_ms()
    return {
        "ticks": int(a.size),
        "deadline_misses": int(np.count_nonzero(a > MISS_FACTOR * period)),
        "jitter_ms": {k: jitter[k] for k in ("median_ms", "p99_ms", "max_ms", "reps")},
        "worst_interval_ms": round(float(a.max()) * 1e3, 3) if a.size else float("nan"),
        "chunks": chunks,
    }


def round_trips(runner: PolicyRunner, worker: ProcessWorker, obs: Observation, reps: int) -> dict[str, Any]:
    """In-process ``serve`` against a process round trip, alternated rep by rep."""
    direct: list[float] = []
    trip: list[float] = []
    child: list[float] = []
    for i in range(reps):
        request = InferenceRequest(i, obs, seed=i)
        order = ("direct", "process") if i % 2 == 0 else ("process", "direct")
        for kind in order:
            t0 = time.perf_counter()
            if kind == "direct":
                runner.serve(request)
                direct.append(time.perf_counter() - t0)
            else:
                worker.submit(request, 0.0)
                result = worker.wait(START_TIMEOUT)
                trip.append(time.perf_counter() - t0)
                assert result is not None and result.error is None, result
                child.append(result.compute_s)
    overhead = [t - c for t, c in zip(trip, child, strict=True)]
    return {
        "in_process_ms": summarize(direct).as_ms(),
        "process_round_trip_ms": summarize(trip).as_ms(),
        "process_child_compute_ms": summarize(child).as_ms(),
        "channel_overhead_ms": summarize(overhead).as_ms(),
        "round_trip_over_in_process_median": round(float(np.median(trip) / np.median(direct)), 4),
    }


def run(
    checkpoint: Path,
    seconds: float,
    segment: float,
    rate: float,
    image_hw: tuple[int, int],
    torch_threads: int,
    reps: int,
) -> dict[str, Any]:
    spec = PolicySpec(checkpoint=str(checkpoint), torch_threads=torch_threads)
    period = 1.0 / rate
    process = ProcessWorker(spec)
    thread = ThreadWorker(spec)
    try:
        info = process.start(START_TIMEOUT)
        thread.start(START_TIMEOUT)
        obs = bench_observation(info.cameras, *image_hw)
        workers: dict[str, InferenceWorker | None] = {"bare": None, "thread": thread, "process": process}
        intervals: dict[str, list[float]] = {k: [] for k in workers}
        chunks = dict.fromkeys(workers, 0)
        errors: list[str] = []
        rounds = max(1, round(seconds / segment))
        names = list(workers)
        for r in range(rounds):
            for name in names[r % 3 :] + names[: r % 3]:  # rotate the order each round
                loop = ControlLoop(period, workers[name], obs)
                t = threading.Thread(target=loop.run, args=(segment,), name=f"control-{name}")
                t.start()
                t.join()
                intervals[name] += loop.intervals
                chunks[name] += loop.chunks
                errors += loop.errors
        runner = PolicyRunner.load(spec)
        trips = round_trips(runner, process, obs, reps)
    finally:
        process.close()
        thread.close()
    return {
        "model": info.name,
        "torch_threads": torch_threads,
        "rate_hz": rate,
        "image_hw": list(image_hw),
        "cameras": len(info.cameras),
        "seconds_per_variant": rounds * segment,
        "segment_s": segment,
        "loop": {name: loop_summary(period, intervals[name], chunks[name]) for name in workers},
        "inference_errors": errors[:5],
        "round_trip": trips,
    }


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", type=Path, help="default: a random tiny checkpoint in a temporary dir")
    p.add_argument("--seconds", type=float, default=20.0, help="control-loop seconds per variant")
    p.add_argument("--segment", type=float, default=5.0, help="seconds per interleaved segment")
    p.add_argument("--rate", type=float, default=50.0, help="control rate (Hz)")
    p.add_argument("--image-hw", type=int, nargs=2, default=(480, 640), metavar=("H", "W"))
    p.add_argument("--torch-threads", type=int, default=1)
    p.add_argument("--reps", type=int, default=50, help="round trips (each against an in-process call)")
    p.add_argument("--hog", type=int, default=0, help="busy-loop processes to load the cores meanwhile")
    args = p.parse_args(argv)
    hogs = [subprocess.Popen([sys.executable, "-c", HOG]) for _ in range(args.hog)]
    try:
        with tempfile.TemporaryDirectory() as tmp:
            checkpoint = args.checkpoint
            if checkpoint is None:
                checkpoint = VLAPolicy(get_preset("tiny"), seed=0).save(Path(tmp) / "tiny", random_init=True)
            start = time.perf_counter()
            out = run(
                checkpoint,
                args.seconds,
                args.segment,
                args.rate,
                tuple(args.image_hw),
                args.torch_threads,
                args.reps,
            )
    finally:
        for h in hogs:
            h.kill()
            h.wait()
    out["hogs"] = args.hog
    out["wall_s"] = round(time.perf_counter() - start, 1)
    sys.stdout.write(json.dumps(out, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
