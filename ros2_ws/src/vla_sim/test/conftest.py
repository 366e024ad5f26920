"""vla_sim tests: importing the harness sets MUJOCO_GL and the package path for every test."""

import sim_harness  # noqa: F401
