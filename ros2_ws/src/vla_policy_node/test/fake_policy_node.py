"""The VLA policy node with a scripted fake policy, for fault tests. Settings come from the JSON in
``VLA_FAKE_POLICY``: horizon, dt, fail_calls (calls after warm-up that raise), delay (seconds per call)."""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from types import SimpleNamespace
from typing import Any

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import vla_policy_node.node as node_mod
from node_harness import CAMERAS, IMAGE_SIZE


class FakePolicy:
    def __init__(self, horizon: int = 8, dt: float = 0.05, fail_calls: int = 0, delay: float = 0.0) -> None:
        self.horizon, self.dt, self.fail_calls, self.delay = horizon, dt, fail_calls, delay
        self.calls = 0
        self.warm_calls = 1
        self.lock = threading.Lock()
        self.name = "fake@000000000000"
        self.prefix_backend = SimpleNamespace(name="fake", skipped=())
        self.config = SimpleNamespace(
            backbone=SimpleNamespace(
                cameras=CAMERAS, history_frames=1, vision=SimpleNamespace(image_size=IMAGE_SIZE)
            ),
            action_head=SimpleNamespace(max_state_dim=32),
            action_horizon=horizon,
            dt=dt,
        )

    def predict_chunk(self, obs: Any, *, seed: int | None = None, rtc: Any = None) -> Any:
        with self.lock:
            self.calls += 1
            n = self.calls - self.warm_calls
        if n > 0:
            if self.delay:
                time.sleep(self.delay)
            if n <= self.fail_calls:
                raise RuntimeError("scripted failure")
        actions = np.full((self.horizon, 16), 0.2, dtype=np.float32)
        return SimpleNamespace(actions=actions, groups={}, dt=self.dt, timings={})


if __name__ == "__main__":
    fake = FakePolicy(**json.loads(os.environ.get("VLA_FAKE_POLICY", "{}")))
    node_mod.load_policy = lambda settings: fake
    node_mod.main()
