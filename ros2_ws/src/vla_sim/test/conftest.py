"""vla_sim tests: importing the harness sets MUJOCO_GL and the package path for every test."""

from pathlib import Path

import pytest
import sim_harness  # noqa: F401


@pytest.fixture(scope="session")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random tiny-aloha checkpoint: what the loop does is under test, not how well the policy does."""
    from vla_policy.model.policy import VLAPolicy
    from vla_policy.model.presets import get_preset

    out = tmp_path_factory.mktemp("ck") / "tiny-aloha"
    VLAPolicy(get_preset("tiny-aloha"), seed=0).save(out, random_init=True)
    return out
