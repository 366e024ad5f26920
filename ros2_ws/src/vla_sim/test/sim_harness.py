"""Shared by the vla_sim tests: the package path and the skip when the simulation extra is missing."""

import os
import sys
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[1]
if str(PKG) not in sys.path:
    sys.path.insert(0, str(PKG))
os.environ.setdefault("MUJOCO_GL", "egl")


def _have(mod: str) -> bool:
    try:
        __import__(mod)
        return True
    except Exception:
        return False


need_sim = pytest.mark.skipif(
    not (_have("gym_aloha") and _have("dm_control")), reason="gym-aloha not installed (requirements/sim.txt)"
)
