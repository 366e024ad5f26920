"""ROS-free sim core: env steps, cameras, command arbitration, scripted expert, demo bags."""

from pathlib import Path

import numpy as np
import pytest
from sim_harness import need_sim
from vla_sim.aloha_env import JOINT_NAMES, SimError
from vla_sim.commands import CommandArbiter
from vla_sim.demos import parse_camera_map
from vla_sim.episode_recorder import GROUP_INDICES, split_groups

GROUPS = {g: [JOINT_NAMES[i] for i in idx] for g, idx in GROUP_INDICES.items()}


def _arbiter():
    lo = np.full(14, -1.0)
    hi = np.full(14, 1.0)
    lo[[6, 13]], hi[[6, 13]] = 0.0, 1.0
    arb = CommandArbiter(JOINT_NAMES, lo, hi, GROUPS, command_timeout=0.5)
    arb.reset(np.zeros(14), now=1.0)
    return arb


def test_group_mapping_matches_node_defaults():
    assert GROUPS["left_arm"] == [f"left_joint_{i}" for i in range(6)]
    assert GROUPS["right_arm"] == [f"right_joint_{i}" for i in range(6)]
    assert GROUPS["claw"] == ["left_gripper", "right_gripper"]
    g = split_groups(np.arange(14.0))
    assert g["claw"].tolist() == [6.0, 13.0] and g["right_arm"].tolist() == [7, 8, 9, 10, 11, 12]
    assert parse_camera_map("top:head,left_wrist") == {"top": "head", "left_wrist": "left_wrist"}


def test_arbiter_rejects_bad_input_and_holds():
    arb = _arbiter()
    assert arb.on_forward("left_arm", [0.1] * 6, 1.0)
    assert arb.command(1.0)[:6].tolist() == [0.1] * 6
    assert not arb.on_forward("left_arm", [float("nan")] * 6, 1.1)
    assert not arb.on_forward("left_arm", [5.0] * 6, 1.1)
    assert not arb.on_forward("claw", [0.5], 1.1)  # wrong length
    assert not arb.on_trajectory("right_arm", ["bogus"] * 6, [0.1], [[0.0] * 6], 0.0, 1.1)
    assert arb.command(1.1)[:6].tolist() == [0.1] * 6  # held
    st = arb.status(1.1)
    assert st["rejected"] == 4 and st["command_state"] == "hold_rejected" and "bogus" in st["last_error"]
    arb.command(2.0)
    assert arb.holding and arb.status(2.0)["command_state"] == "hold_silence"
    assert any("no command" in e for e in arb.pop_events())


def test_arbiter_trajectory_interpolates_and_covers():
    arb = _arbiter()
    names = GROUPS["right_arm"][::-1]  # any joint order
    assert arb.on_trajectory("right_arm", names, [0.1, 0.2], [[0.2] * 6, [0.4] * 6], 1.0, 1.0)
    assert arb.covered_until() == pytest.approx(1.2)
    assert arb.command(1.05)[7:13] == pytest.approx([0.1] * 6)
    assert arb.command(1.15)[7:13] == pytest.approx([0.3] * 6)
    assert arb.command(5.0)[7:13] == pytest.approx([0.4] * 6)


@need_sim
def test_env_steps_and_cameras():
    from vla_sim.aloha_env import AlohaSim

    with pytest.raises(SimError, match="unknown camera"):
        AlohaSim("transfer_cube", cameras=["nope"])
    sim = AlohaSim("insertion", cameras=["top", "left_wrist", "right_wrist", "angle"], height=32, width=48)
    try:
        q0 = sim.reset(seed=1)
        assert q0.shape == (14,)
        for _ in range(3):
            res = sim.step(q0)
        assert res.time == pytest.approx(0.06) and np.all(np.isfinite(res.qpos))
        imgs = sim.render()
        assert set(imgs) == {"top", "left_wrist", "right_wrist", "angle"}
        assert all(im.shape == (32, 48, 3) and im.dtype == np.uint8 for im in imgs.values())
        assert sim.physics.model.vis.quality.offsamples == 0
        with pytest.raises(SimError):
            sim.step(np.full(14, np.nan))
    finally:
        sim.close()


@need_sim
@pytest.mark.parametrize("task", ["transfer_cube", "insertion"])
def test_scripted_expert_succeeds(task):
    from vla_sim.scripted_expert import run_expert_episode

    ep = run_expert_episode(task, 0, render=False)
    assert ep.success and ep.first_success_step is not None


@need_sim
def test_demos_write_episode_bag(tmp_path):
    from vla_policy.data.episode_bag import EpisodeBagReader
    from vla_sim.demos import record_demos

    s = record_demos("transfer_cube", 1, tmp_path / "demos", height=24, width=32, seed=1, log=lambda *_: None)
    assert s.recorded == 1
    bag_dir = Path(s.bags[0])
    # the storage file is named as rosbag2 names it, visible to ls and glob (not the temporary .tmp_ name)
    assert [p.name for p in bag_dir.glob("*.mcap")] == [f"{bag_dir.name}_0.mcap"]
    assert not [p for p in (tmp_path / "demos").rglob(".*")]
    with EpisodeBagReader(s.bags[0]) as bag:
        meta = bag.metadata
        topics = bag.topics()
        assert meta.task == "transfer_cube" and meta.success is True
        assert meta.instruction == "pick up the cube and hand it to the other arm"
        assert meta.cameras == ("head", "left_wrist", "right_wrist")
        for t in ("/cameras/head/image_raw", "/joint_states", "/instruction", "/claw_controller/commands"):
            assert t in topics
        assert topics["/left_arm_controller/commands"].count == 400
        js = next(bag.messages(["/joint_states"])).msg
        assert list(js.name) == list(JOINT_NAMES)
