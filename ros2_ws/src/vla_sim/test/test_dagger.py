"""DAgger rounds: the policy drives, the bag records the scripted expert's plan as the commands."""

from pathlib import Path

import numpy as np
from sim_harness import PKG, need_sim

pytestmark = need_sim


def test_a_dagger_bag_is_training_data_labelled_by_the_plan(checkpoint: Path, tmp_path: Path) -> None:
    from vla_policy.data.episode_dataset import dataset_config_for, read_episode
    from vla_policy.model.presets import get_preset
    from vla_policy.training.trainer import _read_config
    from vla_sim.aloha_env import JOINT_NAMES
    from vla_sim.dagger import record_dagger
    from vla_sim.inprocess_loop import LoopConfig
    from vla_sim.scripted_expert import plan_joint_trajectory

    cfg = LoopConfig(episode_steps=40, height=48, width=64)
    summary = record_dagger(checkpoint, [5], tmp_path, cfg, log=lambda _: None)
    assert summary["episodes"] == 1 and summary["labelled_steps"] == 40
    params = PKG / "config" / "aloha.yaml"
    dcfg = dataset_config_for(get_preset("tiny-aloha"), _read_config(params), stride=1)
    episode = read_episode(tmp_path / "dagger_000005", dcfg)
    assert len(episode) > 10
    # the first window's first action is the plan's first command (state order), not what the random
    # policy executed (the arm's start pose at step 0)
    plan = plan_joint_trajectory("transfer_cube", 5)[1]
    plan0 = episode.joints.state_from_joint_state(JOINT_NAMES, plan[0])
    first = episode.joints.select_actions(episode.actions[0])[0]
    assert np.allclose(first, plan0, atol=1e-6)
    assert not np.allclose(first, episode.states[0], atol=1e-6)
