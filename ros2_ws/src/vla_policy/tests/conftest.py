"""Fixtures of the training tests: tiny synthetic episode bags and a one-thread torch."""

from __future__ import annotations

import pytest
import torch
from vla_policy.data.synthetic_episode import SyntheticEpisodeConfig, write_synthetic_episode

SMALL = dict(duration=2.5, image_height=32, image_width=40, camera_rate=10.0, joint_rate=20.0)


@pytest.fixture(scope="session")
def bags(tmp_path_factory):
    """Two 2.5 s synthetic episodes (32x40 images)."""
    root = tmp_path_factory.mktemp("bags")
    for i in range(2):
        write_synthetic_episode(root / f"ep{i}", SyntheticEpisodeConfig(seed=i, **SMALL))
    return root


@pytest.fixture
def one_thread():
    # MKL's threaded GEMM is not bitwise reproducible run to run; one thread is
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
