"""Root pytest configuration: shared ROS fixtures and marker-based skips for every test directory.

Markers (declared in pyproject.toml): ``ros``, ``gpu``, ``tensorrt``, ``launch``, ``slow``. A test with one
of the first four is skipped, with the reason, when the machine lacks what it needs.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

import pytest

_ROOT = Path(__file__).resolve().parent
# tests/ first (ros_harness for every test directory), the repo root last (never shadows installed packages).
if str(_ROOT / "tests") not in sys.path:
    sys.path.insert(0, str(_ROOT / "tests"))
if str(_ROOT) not in sys.path:
    sys.path.append(str(_ROOT))

import ros_harness  # noqa: E402


def _gpu_reason() -> str | None:
    try:
        import torch
    except Exception as exc:
        return f"torch cannot be imported ({exc})"
    if not torch.cuda.is_available():
        return "needs a CUDA GPU (torch.cuda.is_available() is False)"
    return None


def _tensorrt_reason() -> str | None:
    if importlib.util.find_spec("tensorrt") is None:
        return "needs TensorRT 10 (the `tensorrt` Python package is not installed)"
    return _gpu_reason()


def _launch_reason() -> str | None:
    missing = [m for m in ("launch", "launch_ros", "launch_testing") if importlib.util.find_spec(m) is None]
    if missing:
        return (
            f"needs a ROS 2 Kilted install with {', '.join(missing)} (not on PyPI; run in the docker/ image)"
        )
    return None


_CHECKS = {
    "ros": ros_harness.ros_unavailable_reason,
    "gpu": _gpu_reason,
    "tensorrt": _tensorrt_reason,
    "launch": _launch_reason,
}


def pytest_collection_modifyitems(config, items):
    reasons: dict[str, str | None] = {}
    for item in items:
        for marker, check in _CHECKS.items():
            if item.get_closest_marker(marker) is None:
                continue
            if marker not in reasons:
                reasons[marker] = check()
            if reasons[marker]:
                item.add_marker(pytest.mark.skip(reason=f"[{marker}] {reasons[marker]}"))
                break


@pytest.fixture
def ros_env(monkeypatch, tmp_path) -> dict[str, str]:
    """Isolate this test's ROS traffic: a random ROS_DOMAIN_ID (1..101), localhost discovery, a temp log dir.

    Sets them in ``os.environ`` (undone after the test), so an in-process ``rclpy.init()`` uses them, and
    returns the full environment for child processes (pass it to ``spawn``).
    """
    log_dir = tmp_path / "ros_log"
    log_dir.mkdir()
    env = ros_harness.ros_child_env(log_dir=log_dir)
    for key in ("ROS_DOMAIN_ID", "ROS_AUTOMATIC_DISCOVERY_RANGE", "RMW_IMPLEMENTATION", "ROS_LOG_DIR"):
        monkeypatch.setenv(key, env[key])
    return env


@pytest.fixture
def spawn(tmp_path):
    """``spawn(cmd, env)`` starts a child process (see ``ros_harness.spawn``); all are stopped after the test.

    The returned ``Popen`` has ``log_path``; on failure the children's output is printed.
    """
    procs = []

    def _spawn(cmd, env=None, **kwargs):
        kwargs.setdefault("log_path", tmp_path / f"child_{len(procs)}.log")
        proc = ros_harness.spawn(cmd, env if env is not None else os.environ, **kwargs)
        procs.append(proc)
        return proc

    yield _spawn
    for proc in procs:
        ros_harness.stop(proc)
