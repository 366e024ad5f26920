"""Shim so that colcon's ament_python build type can build the core package.

All metadata lives in pyproject.toml; this file only adds the ament index marker and package.xml.
"""

import os

from setuptools import setup

# colcon --symlink-install runs this file through a symlink in build/vla_policy, where pyproject.toml is
# absent; run it from the package's own directory so that setuptools reads pyproject.toml.
_here = os.path.dirname(os.path.realpath(__file__))
if not os.path.exists("pyproject.toml") and os.path.exists(os.path.join(_here, "pyproject.toml")):
    os.chdir(_here)

dist = setup(
    data_files=[
        ("share/ament_index/resource_index/packages", ["resource/vla_policy"]),
        ("share/vla_policy", ["package.xml"]),
    ],
)

# colcon reads the distribution's attributes back with ast.literal_eval (setup.py run with
# stop_after="config"); the SpecifierSet that setuptools makes of requires-python is not a literal.
if dist is not None:
    for holder in (dist, getattr(dist, "metadata", None)):
        if getattr(holder, "python_requires", None) is not None:
            holder.python_requires = str(holder.python_requires)
