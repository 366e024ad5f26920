"""ament_python build of the ALOHA simulation package (pip install -e works too)."""

from glob import glob

from setuptools import find_packages, setup

package_name = "vla_sim"

setup(
    name=package_name,
    version="0.1.0",
    packages=find_packages(exclude=["test"]),
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{package_name}"]),
        (f"share/{package_name}", ["package.xml"]),
        (f"share/{package_name}/config", glob("config/*.yaml")),
    ],
    package_data={package_name: ["config/*.yaml"]},
    install_requires=["setuptools"],
    zip_safe=False,
    maintainer="VLA stack maintainers",
    maintainer_email="robotics@vla-stack.dev",
    description="ALOHA bimanual simulation as a ROS 2 robot, scripted demos, closed-loop evaluation.",
    license="Apache-2.0",
    tests_require=["pytest"],
    extras_require={"test": ["pytest"]},
    entry_points={"console_scripts": ["vla-sim = vla_sim.cli:main"]},
)
