"""Helpers for tests that talk ROS 2 to real child processes (rclpy, Fast DDS on loopback).

Importable from every test directory: the root ``conftest.py`` puts ``tests/`` on ``sys.path``.

- ``ros_child_env()``: an environment for child processes with its own random ``ROS_DOMAIN_ID``,
  localhost-only discovery and a private ``ROS_LOG_DIR``.
- ``spawn(cmd, env)`` / ``stop(proc)``: start a child process with its output in a file, and stop it
  with SIGINT, then SIGTERM, then SIGKILL (``vla_policy_node.child_process.ChildProcess``).
- ``ros_unavailable_reason()``: why ``ros``-marked tests cannot run here, or ``None``.
"""

from __future__ import annotations

import functools
import os
import random
import sys
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

from vla_policy_node.child_process import ChildProcess

REPO_ROOT = Path(__file__).resolve().parent.parent
ROS_DOMAIN_RANGE = (1, 101)


def random_domain_id() -> int:
    """A ROS_DOMAIN_ID in 1..101, so that parallel test runs do not hear each other."""
    return random.SystemRandom().randint(*ROS_DOMAIN_RANGE)


def ros_child_env(
    domain_id: int | None = None,
    log_dir: str | os.PathLike | None = None,
    base: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """Environment for a ROS child: a copy of ``base`` (default ``os.environ``) with an isolated domain."""
    env = dict(os.environ if base is None else base)
    env["ROS_DOMAIN_ID"] = str(random_domain_id() if domain_id is None else domain_id)
    env["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
    env.setdefault("RMW_IMPLEMENTATION", "rmw_fastrtps_cpp")
    env["ROS_LOG_DIR"] = str(log_dir if log_dir is not None else tempfile.mkdtemp(prefix="ros_log_"))
    env["PYTHONUNBUFFERED"] = "1"
    return env


def spawn(
    cmd: Sequence[str] | str,
    env: Mapping[str, str] | None = None,
    *,
    cwd: str | os.PathLike | None = None,
    log_path: str | os.PathLike | None = None,
) -> ChildProcess:
    """Start ``cmd`` as a child process; stdout and stderr go to ``proc.log_path`` (a file, never a pipe).

    A string is run as ``python -c <string>`` with this interpreter. Read the output with ``output(proc)``,
    wait for a line with ``wait_for_output(proc, text)``, and always ``stop(proc)`` (the ``spawn`` fixture
    of the root conftest does it for you). The process is a ``subprocess.Popen``.
    """
    if isinstance(cmd, str):
        cmd = [sys.executable, "-c", cmd]
    return ChildProcess(cmd, env=env, cwd=cwd, log_path=log_path)


def output(proc: ChildProcess) -> str:
    """Everything the child has written so far."""
    return proc.output()


def wait_for_output(proc: ChildProcess, text: str, timeout: float = 30.0) -> bool:
    """Wait until ``text`` appears in the child's output. False if the child exits or time runs out first."""
    return proc.wait_for(text, timeout)


def stop(proc: ChildProcess, sigint_timeout: float = 20.0, term_timeout: float = 5.0) -> int:
    """Stop a child: SIGINT (like Ctrl-C), then SIGTERM, then SIGKILL. Returns the exit code."""
    return proc.stop(sigint_timeout, term_timeout)


@functools.cache
def ros_unavailable_reason() -> str | None:
    """None when rclpy and the built vla_msgs (with its typesupport libraries) load; otherwise why not."""
    try:
        import rclpy
        import rclpy.serialization
    except Exception as exc:  # ImportError, or a missing shared library
        return f"rclpy cannot be imported ({exc.__class__.__name__}: {exc}); run `make setup`"
    try:
        from vla_msgs.msg import ActionChunk

        # Loads the C typesupport libraries: fails without the overlay's LD_LIBRARY_PATH.
        rclpy.serialization.serialize_message(ActionChunk())
    except Exception as exc:
        return (
            f"vla_msgs is not usable ({exc.__class__.__name__}: {exc}); "
            "build it with `make setup` and `source scripts/env.sh` before pytest"
        )
    return None


def sample_action_chunk(chunk_id: int = 1, horizon: int = 4):
    """A fully populated ``vla_msgs/ActionChunk`` (left arm 7, right arm 7, claw 2 joints)."""
    from builtin_interfaces.msg import Duration
    from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint
    from vla_msgs.msg import ActionChunk

    dt = 0.02
    msg = ActionChunk()
    msg.header.stamp.sec = 1_700_000_000
    msg.header.stamp.nanosec = 123_456_789
    msg.header.frame_id = "base_link"
    msg.chunk_id = chunk_id
    msg.policy = "tiny@0123456789ab"
    msg.dt = dt
    msg.inference_latency = Duration(sec=0, nanosec=47_900_000)
    for name, n_joints in (("left_arm", 7), ("right_arm", 7), ("claw", 2)):
        traj = JointTrajectory()
        traj.header = msg.header
        traj.joint_names = [f"{name}_joint_{j}" for j in range(n_joints)]
        for k in range(horizon):
            t = (k + 1) * dt
            traj.points.append(
                JointTrajectoryPoint(
                    positions=[0.1 * j + 0.01 * k for j in range(n_joints)],
                    time_from_start=Duration(sec=int(t), nanosec=round((t % 1) * 1e9)),
                )
            )
        setattr(msg, name, traj)
    return msg
