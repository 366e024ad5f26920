"""The VLA policy node with a scripted fake model, for fault tests. It runs the thread worker (the model in
the node's process, so the fake can be injected here); the process worker's own faults (crash, hang) are
tested against the real model by killing or stopping its process. Settings come from the JSON in
``VLA_FAKE_POLICY``: horizon, dt, fail_calls (requests after warm-up that fail), delay (seconds per
request)."""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import vla_policy.runtime.thread_worker as thread_worker
import vla_policy_node.main as main_mod
import vla_policy_node.node as node_mod
from node_harness import CAMERAS, IMAGE_SIZE
from vla_policy.runtime.inference import InferenceRequest, InferenceResult, ModelInfo, PolicySpec


class FakeRunner:
    """Stands in for ``PolicyRunner``: constant chunks (0.2 everywhere), scripted failures and delays."""

    def __init__(self, horizon: int = 8, dt: float = 0.05, fail_calls: int = 0, delay: float = 0.0) -> None:
        self.fail_calls, self.delay = fail_calls, delay
        self.calls = 0
        self.lock = threading.Lock()
        self.info = ModelInfo(
            name="fake@000000000000",
            cameras=CAMERAS,
            image_size=IMAGE_SIZE,
            history_frames=1,
            horizon=horizon,
            dt=dt,
            max_state_dim=32,
            action_dim=16,
            action_layout={"left_arm": (0, 7), "right_arm": (7, 7), "claw": (14, 2)},
            backend="fake",
        )

    def load(self, spec: PolicySpec) -> FakeRunner:
        return self

    def serve(self, request: InferenceRequest) -> InferenceResult:
        with self.lock:
            self.calls += 1
            n = self.calls
        t0 = time.perf_counter()
        if self.delay:
            time.sleep(self.delay)
        if n <= self.fail_calls:
            return InferenceResult(request.request_id, None, self.info.dt, 0.0, {}, "scripted failure")
        actions = np.full((self.info.horizon, 16), 0.2, dtype=np.float32)
        return InferenceResult(request.request_id, actions, self.info.dt, time.perf_counter() - t0)


if __name__ == "__main__":
    fake: Any = FakeRunner(**json.loads(os.environ.get("VLA_FAKE_POLICY", "{}")))
    thread_worker.PolicyRunner = fake  # type: ignore[misc,assignment]
    node_mod.resolve_checkpoint = Path  # type: ignore[assignment]  # no checkpoint: the fake is the model
    main_mod.main()
