"""Fixtures for the node tests: a tiny checkpoint, module-scoped ROS isolation and node processes."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

_HERE = Path(__file__).resolve().parent
if str(_HERE) not in sys.path:
    sys.path.insert(0, str(_HERE))


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random tiny checkpoint written by the model's CLI (`vla-policy init`)."""
    out = tmp_path_factory.mktemp("ckpt") / "tiny"
    cli = shutil.which("vla-policy") or str(Path(sys.executable).parent / "vla-policy")
    if os.path.exists(cli):
        cmd = [cli, "init", "--preset", "tiny", "--out", str(out)]
    else:
        cmd = [sys.executable, "-m", "vla_policy.cli", "init", "--preset", "tiny", "--out", str(out)]
    subprocess.run(cmd, check=True, capture_output=True)
    return out


@pytest.fixture(scope="module")
def module_ros_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """Like the root ``ros_env`` but for one test module: a random domain shared by the module's tests."""
    import ros_harness

    log_dir = tmp_path_factory.mktemp("ros_log")
    env = ros_harness.ros_child_env(log_dir=log_dir)
    keys = ("ROS_DOMAIN_ID", "ROS_AUTOMATIC_DISCOVERY_RANGE", "RMW_IMPLEMENTATION", "ROS_LOG_DIR")
    saved = {k: os.environ.get(k) for k in keys}
    for k in keys:
        os.environ[k] = env[k]
    yield env
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v
