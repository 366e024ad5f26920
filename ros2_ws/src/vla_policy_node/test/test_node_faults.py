"""Inference faults and overruns, with the node in the test process and a scripted fake policy (the real
model cannot be made to fail or slow down on demand from outside)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
from node_harness import CAMERAS, GROUP_JOINTS, IMAGE_SIZE, Harness, node_params

pytestmark = [pytest.mark.ros, pytest.mark.slow]

RUNNING, FAULT = 2, 4


@dataclass
class FakePolicy:
    horizon: int = 8
    dt: float = 0.05
    fail_calls: int = 0  # calls (after warm-up) that raise
    delay: float = 0.0  # seconds per call (after warm-up)
    calls: int = 0
    warm: bool = False
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self.name = "fake@000000000000"
        self.config = SimpleNamespace(
            backbone=SimpleNamespace(
                cameras=CAMERAS, history_frames=1, vision=SimpleNamespace(image_size=IMAGE_SIZE)
            ),
            action_head=SimpleNamespace(max_state_dim=32),
            action_horizon=self.horizon,
            dt=self.dt,
        )

    def predict_chunk(self, obs: Any, *, seed: int | None = None, rtc: Any = None) -> Any:
        if self.warm:
            with self.lock:
                self.calls += 1
                fail = self.calls <= self.fail_calls
            if self.delay:
                time.sleep(self.delay)
            if fail:
                raise RuntimeError("scripted failure")
        actions = np.full((self.horizon, 16), 0.2, dtype=np.float32)
        return SimpleNamespace(actions=actions, groups={}, dt=self.dt, timings={})


def _start(policy: FakePolicy, monkeypatch: pytest.MonkeyPatch, **params: Any) -> tuple[Any, Any, Any]:
    import rclpy
    import vla_policy_node.node as node_mod
    from rclpy.executors import MultiThreadedExecutor
    from rclpy.parameter import Parameter

    monkeypatch.setattr(node_mod, "load_policy", lambda settings: policy)
    ctx = rclpy.Context()
    rclpy.init(context=ctx)
    overrides = [Parameter(k, value=v) for k, v in node_params("fake", **params).items()]
    node = node_mod.VLAPolicyNode(context=ctx, parameter_overrides=overrides)
    executor = MultiThreadedExecutor(num_threads=4, context=ctx)
    executor.add_node(node)
    thread = threading.Thread(target=executor.spin, daemon=True)
    thread.start()
    node.trigger_configure()
    policy.warm = True
    node.trigger_activate()
    return ctx, node, (executor, thread)


def _stop(ctx: Any, node: Any, spin: Any) -> None:
    import rclpy

    node._free()
    rclpy.try_shutdown(context=ctx)
    spin[1].join(timeout=5.0)
    spin[0].shutdown()
    node.destroy_node()


@pytest.fixture
def harness(module_ros_env: dict[str, str]) -> Iterator[Harness]:
    h = Harness()
    h.publish_instruction("stack the blocks")
    yield h
    h.close()


def test_inference_exception_faults_retries_with_backoff_and_recovers(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    policy = FakePolicy(fail_calls=3)
    ctx, node, spin = _start(policy, monkeypatch, output_mode="forward")
    try:
        fault = harness.wait_status(lambda s: s.state == FAULT and "scripted failure" in s.reason, 30.0)
        assert fault is not None and "retrying" in fault.reason
        assert harness.wait_status(lambda s: s.state == RUNNING and s.last_chunk_id > 0, 30.0) is not None
        assert policy.calls > 3 and node._inference_errors == 3
        assert not harness.violations, harness.violations[:10]
    finally:
        _stop(ctx, node, spin)


def test_slow_inference_holds_last_safe_action_and_counts_overruns(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    policy = FakePolicy(horizon=8, delay=0.35)  # chunk 0.4 s, refill at 0.2 s left: always late
    ctx, node, spin = _start(policy, monkeypatch, output_mode="forward")
    try:
        status = harness.wait_status(lambda s: s.inference_overruns >= 2, 30.0)
        assert status is not None and status.state == RUNNING
        # while waiting for the slow chunk the same safe command repeats (hold at last safe action)
        with harness.lock:
            values = [tuple(v) for _, v in harness.commands["left_arm"][-5:]]
        assert len(values) == 5 and len(set(values)) <= 2
        assert not harness.violations, harness.violations[:10]
    finally:
        _stop(ctx, node, spin)


def test_forward_hold_stop_publishes_nothing_while_stale(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    policy = FakePolicy()
    ctx, node, spin = _start(policy, monkeypatch, output_mode="forward", forward_hold="stop")
    try:
        assert harness.wait_for(lambda: harness.count_commands() > 10, 30.0)
        harness.inputs.joint_mode = "off"
        assert harness.wait_status(lambda s: s.state == 3, 30.0) is not None
        time.sleep(0.3)
        before = harness.count_commands()
        harness.wait_for(lambda: False, 0.5)
        assert harness.count_commands() == before
    finally:
        harness.inputs.joint_mode = "ok"
        _stop(ctx, node, spin)
    assert set(GROUP_JOINTS) == set(harness.commands)
