"""launch_testing test of bimanual.launch.py: synthetic sensors in, chunks and controller commands out,
clean exit codes. Needs a ROS 2 Kilted install (launch, launch_ros, launch_testing, launch_testing_ros);
skipped here otherwise. test_node_forward.py / test_node_lifecycle.py check the same behaviour with pytest.

Run: ``launch_test test/test_bimanual_launch.py`` or ``colcon test --packages-select vla_policy_node``.
"""

from __future__ import annotations

import atexit
import importlib.util
import shutil
import subprocess
import sys
import tempfile
import unittest
from pathlib import Path

import pytest

_MISSING = [
    m
    for m in ("launch", "launch_ros", "launch_testing", "launch_testing_ros")
    if importlib.util.find_spec(m) is None
]
if _MISSING:
    pytest.skip(
        f"needs a ROS 2 Kilted install with {', '.join(_MISSING)} (not on PyPI; run in the docker/ image)",
        allow_module_level=True,
    )

import launch  # noqa: E402
import launch_testing  # noqa: E402
import launch_testing.actions  # noqa: E402
import launch_testing.asserts  # noqa: E402
from launch.actions import IncludeLaunchDescription  # noqa: E402
from launch.launch_description_sources import PythonLaunchDescriptionSource  # noqa: E402
from launch.substitutions import PathJoinSubstitution  # noqa: E402
from launch_ros.substitutions import FindPackageShare  # noqa: E402
from launch_testing_ros import WaitForTopics  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from node_harness import GROUP_JOINTS, Harness, node_params, write_params_file  # noqa: E402


def _tiny_checkpoint(root: Path) -> Path:
    out = root / "tiny"
    subprocess.run(["vla-policy", "init", "--preset", "tiny", "--out", str(out)], check=True)
    return out


# the marks go on generate_test_description: launch_testing's plugin makes the test item from it, and a
# module-level pytestmark does not reach that item (`-m launch` would deselect it)
@pytest.mark.launch
@pytest.mark.launch_test
def generate_test_description():
    tmp = Path(tempfile.mkdtemp(prefix="vla_launch_"))
    atexit.register(shutil.rmtree, tmp, ignore_errors=True)  # the checkpoint and params of this run
    ckpt = _tiny_checkpoint(tmp)
    params = write_params_file(tmp / "params.yaml", node_params(ckpt, output_mode="forward"))
    include = IncludeLaunchDescription(
        PythonLaunchDescriptionSource(
            PathJoinSubstitution([FindPackageShare("vla_policy_node"), "launch", "bimanual.launch.py"])
        ),
        launch_arguments={"config": str(params), "checkpoint": str(ckpt), "output_mode": "forward"}.items(),
    )
    return launch.LaunchDescription([include, launch_testing.actions.ReadyToTest()])


class TestChunksAndCommands(unittest.TestCase):
    def test_chunks_and_controller_commands_appear(self) -> None:
        from std_msgs.msg import Float64MultiArray
        from vla_msgs.msg import ActionChunk

        harness = Harness()  # publishes cameras, joint states and the instruction
        try:
            harness.publish_instruction("pick up the red cube")
            topics = [("/vla_policy_node/action_chunk", ActionChunk)] + [
                (f"/{g}_controller/commands", Float64MultiArray) for g in GROUP_JOINTS
            ]
            with WaitForTopics(topics, timeout=120.0) as wait:
                self.assertEqual(set(wait.topics_received()), {t for t, _ in topics})
            self.assertTrue(harness.wait_for(lambda: harness.count_commands() > 10, 30.0))
            self.assertEqual(harness.violations, [])
        finally:
            harness.close()


@launch_testing.post_shutdown_test()
class TestExit(unittest.TestCase):
    def test_exit_codes(self, proc_info) -> None:
        launch_testing.asserts.assertExitCodes(proc_info, allowable_exit_codes=[0, -2])
