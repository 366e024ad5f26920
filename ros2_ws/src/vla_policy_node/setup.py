"""ament_python build of the VLA policy node package."""

from glob import glob
from pathlib import Path

from setuptools import find_packages, setup

package_name = "vla_policy_node"
# The shipped policy (repository models/), installed beside the launch files: bimanual.launch.py's default
# checkpoint when neither checkpoint:= nor VLA_CHECKPOINT_DIR is given. Absent in a copy without models/.
SHIPPED = "tiny-aloha-transfer-cube"
shipped_files = sorted(str(f) for f in Path("../../../models", SHIPPED).glob("*") if f.is_file())

setup(
    name=package_name,
    version="0.1.0",
    packages=find_packages(exclude=["test"]),
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{package_name}"]),
        (f"share/{package_name}", ["package.xml"]),
        (f"share/{package_name}/config", glob("config/*.yaml")),
        (f"share/{package_name}/launch", glob("launch/*.launch.py")),
        *([(f"share/{package_name}/models/{SHIPPED}", shipped_files)] if shipped_files else []),
    ],
    install_requires=["setuptools"],
    zip_safe=True,
    maintainer="VLA stack maintainers",
    maintainer_email="robotics@vla-stack.dev",
    description="Lifecycle ROS 2 node running the VLA policy with async inference and a safety filter.",
    license="Apache-2.0",
    tests_require=["pytest"],
    extras_require={"test": ["pytest"]},
    entry_points={
        "console_scripts": [
            "vla_policy_node = vla_policy_node.main:main",
            "bench_control = vla_policy_node.bench_control:main",
            "vla-bag = vla_policy_node.bag_cli:main",
        ],
    },
)
