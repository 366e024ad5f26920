"""``vla-sim serve`` as a separate process over Fast DDS: publishes, accepts commands, holds on bad input."""

import json
import os
import sys
import time
from pathlib import Path

import pytest
import ros_harness
from sim_harness import PKG, need_sim

rclpy = pytest.importorskip("rclpy")
pytestmark = [pytest.mark.ros, need_sim]


@pytest.fixture
def ros_env(tmp_path):
    env = ros_harness.ros_child_env(log_dir=tmp_path / "roslog")
    env["PYTHONPATH"] = os.pathsep.join([str(PKG), env.get("PYTHONPATH", "")])
    old = {k: os.environ.get(k) for k in ("ROS_DOMAIN_ID", "ROS_AUTOMATIC_DISCOVERY_RANGE", "ROS_LOG_DIR")}
    os.environ.update({k: env[k] for k in old})
    yield env
    for k, v in old.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


def test_serve_publishes_accepts_commands_and_holds_on_bad_input(ros_env, tmp_path: Path):
    from rclpy.qos import QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
    from rosgraph_msgs.msg import Clock
    from sensor_msgs.msg import Image, JointState
    from std_msgs.msg import Float64MultiArray, String
    from std_srvs.srv import Trigger
    from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

    results = tmp_path / "episodes.jsonl"
    cmd = [
        sys.executable,
        "-m",
        "vla_sim.cli",
        "serve",
        "--task",
        "transfer_cube",
        "--height",
        "24",
        "--width",
        "32",
        "--mode",
        "realtime",
        "--command-timeout",
        "0.5",
        "--results",
        str(results),
    ]
    proc = ros_harness.spawn(cmd, ros_env, log_path=tmp_path / "sim.log")
    rclpy.init()
    node = rclpy.create_node("vla_sim_test")
    got: dict = {"js": [], "clock": [], "img": [], "status": []}
    try:
        node.create_subscription(JointState, "/joint_states", got["js"].append, qos_profile_sensor_data)
        node.create_subscription(Clock, "/clock", got["clock"].append, 10)
        node.create_subscription(Image, "/cameras/head/image_raw", got["img"].append, qos_profile_sensor_data)
        rel = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
        node.create_subscription(
            String, "/vla_sim/status", lambda m: got["status"].append(json.loads(m.data)), rel
        )
        fwd = node.create_publisher(Float64MultiArray, "/left_arm_controller/commands", rel)
        traj = node.create_publisher(JointTrajectory, "/right_arm_controller/joint_trajectory", rel)
        reset = node.create_client(Trigger, "/vla_sim/reset")

        def spin_until(cond, timeout=60.0):
            end = time.time() + timeout
            while time.time() < end and not cond():
                rclpy.spin_once(node, timeout_sec=0.05)
            return cond()

        assert spin_until(lambda: len(got["js"]) > 5 and got["img"] and got["clock"]), "no data from the sim"
        assert list(got["js"][-1].name)[:2] == ["left_joint_0", "left_joint_1"]
        assert got["img"][-1].height == 24 and got["img"][-1].encoding == "rgb8"
        # silence: holds and says so
        assert spin_until(lambda: any(s["command_state"] == "hold_silence" for s in got["status"]))
        # a good forward command moves the left waist
        target = 0.3

        def waist_near():
            fwd.publish(Float64MultiArray(data=[target, -0.96, 1.16, 0.0, -0.3, 0.0]))
            return abs(got["js"][-1].position[0] - target) < 0.05

        assert spin_until(waist_near), "the sim did not follow the forward command"
        # bad input: NaN, out of range, wrong joint names -> rejected, the sim keeps running
        fwd.publish(Float64MultiArray(data=[float("nan")] * 6))
        fwd.publish(Float64MultiArray(data=[50.0] * 6))
        bad = JointTrajectory(joint_names=[f"x{i}" for i in range(6)])
        bad.points.append(JointTrajectoryPoint(positions=[0.0] * 6))
        traj.publish(bad)
        assert spin_until(lambda: got["status"] and got["status"][-1]["rejected"] >= 3), got["status"][-1:]
        n = len(got["js"])
        assert spin_until(lambda: len(got["js"]) > n + 10), "the sim stopped after bad input"
        assert abs(got["js"][-1].position[0] - target) < 0.05  # held the last good target
        assert proc.poll() is None
        # reset service
        assert reset.wait_for_service(timeout_sec=10)
        fut = reset.call_async(Trigger.Request())
        assert spin_until(fut.done, 20) and fut.result().success
        assert spin_until(lambda: results.exists() and results.read_text().strip(), 20)
        assert json.loads(results.read_text().splitlines()[0])["reason"] == "reset service"
    finally:
        node.destroy_node()
        rclpy.shutdown()
        ros_harness.stop(proc)
    out = ros_harness.output(proc)
    assert "rejected command" in out and "no command for" in out, out[-2000:]
