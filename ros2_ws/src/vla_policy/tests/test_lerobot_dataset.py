"""LeRobot datasets in and out: a dataset written by lerobot's own writer reads and trains here; bags export
as a dataset that reads back (and, where a lerobot venv is present, loads in lerobot's ``LeRobotDataset``)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest
from vla_policy.data.episode_dataset import DatasetConfig, DatasetError, find_bags, load_episodes
from vla_policy.data.lerobot_dataset import LeRobotDatasetError, LeRobotDatasetReader
from vla_policy.data.lerobot_export import ExportConfig, LeRobotExportError, _read_episode, export_lerobot
from vla_policy.data.synthetic_episode import SyntheticEpisodeConfig, write_synthetic_episode
from vla_policy.evaluation.offline_eval import EvalConfig, config_from_node_params, read_node_params

HERE = Path(__file__).resolve().parent
FIXTURE = HERE / "fixtures" / "lerobot" / "aloha_sim_tiny"  # written by lerobot 0.4.4 (make_fixture.py)
CHECK = HERE / "fixtures" / "lerobot" / "check_with_lerobot.py"
ALOHA_PARAMS = HERE.parents[1] / "vla_sim" / "config" / "aloha.yaml"
LEROBOT_PYTHON = Path(os.environ.get("VLA_LEROBOT_PYTHON", "/work/lerobot-data-venv/bin/python"))
IMAGE_MAE_LEVELS = 6.0  # AV1 at CRF 30, yuv420p (as check_with_lerobot.py)


def aloha_read() -> EvalConfig:
    return config_from_node_params(read_node_params(ALOHA_PARAMS), EvalConfig())


def red_pixels(img: np.ndarray) -> int:
    r, g, b = (img[..., i].astype(int) for i in range(3))
    return int(((r > 150) & (g < 100) & (b < 120)).sum())


def test_reads_dataset_written_by_lerobot():
    ds = LeRobotDatasetReader(FIXTURE)
    assert ds.fps == 50 and [e.length for e in ds.episodes] == [60, 60]
    assert ds.video_keys == tuple(f"observation.images.{c}" for c in ("head", "left_wrist", "right_wrist"))
    assert ds.tasks == {
        0: "pick up the cube and hand it to the other arm",
        1: "insert the peg into the socket",
    }
    for entry in ds.episodes:
        frames = ds.frames(entry, videos=ds.video_keys)
        # the fixture's actions lead its state by one frame: rows are in frame order, episodes apart
        np.testing.assert_array_equal(frames.action[:-1], frames.state[1:])
        np.testing.assert_allclose(frames.timestamps, np.arange(60) / 50, atol=1e-6)
        assert list(frames.task_index) == [entry.index] * 60
        for video in frames.images.values():
            assert video.shape == (60, 64, 96, 3) and video.dtype == np.uint8
            assert all(red_pixels(f) > 150 for f in video)  # the 16x16 red block, through AV1


def test_training_windows_from_lerobot_dataset_match_the_bag_feed():
    """The dataset's frames go through the node's ObservationBuffer at the model's ticks, as bags do."""
    cfg = DatasetConfig(read=aloha_read())
    episodes = load_episodes(find_bags(FIXTURE), cfg, workers=1)
    assert [e.path.name for e in episodes] == ["episode_000000", "episode_000001"]
    ds = LeRobotDatasetReader(FIXTURE)
    frames = ds.frames(ds.episodes[1])
    ep = episodes[1]
    assert len(ep) == 24 and ep.observations[0].instruction == "insert the peg into the socket"
    assert set(ep.observations[0].images) == {"head", "left_wrist", "right_wrist"}
    joints = ep.joints
    names = list(ds.state_names)
    for k in (0, 7, 23):
        o = ep.observations[k]
        i = round(o.stamp * 50)  # the frame at the tick
        np.testing.assert_array_equal(o.state, joints.state_from_joint_state(names, frames.state[i]))
        # the chunk's first action: the recorded action held since the last frame at or before the tick
        expected = joints.state_from_joint_state(names, frames.action[i])
        np.testing.assert_array_equal(ep.actions[k, 0, joints.action_indices()], expected)


def test_dataset_without_joint_mapping_says_what_to_pass():
    with pytest.raises(DatasetError, match="pass --params with joints") as info:
        load_episodes(find_bags(FIXTURE), DatasetConfig(), workers=1)
    assert "\n" not in str(info.value)


def test_trains_on_dataset_written_by_lerobot(tmp_path, one_thread):
    from vla_policy.training.trainer import TrainConfig, train

    cfg = TrainConfig(steps=2, batch_size=4, workers=1, val_fraction=0.5, warmup_steps=0)
    result = train(FIXTURE, tmp_path / "run", cfg, preset="tiny", params=ALOHA_PARAMS)
    assert result.step == 2 and np.isfinite(result.last_loss)
    assert (tmp_path / "run" / "model.safetensors").is_file()


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    root = tmp_path_factory.mktemp("export")
    bags = []
    for i, compressed in enumerate((False, True)):
        cfg = SyntheticEpisodeConfig(
            seed=i, duration=1.5, image_height=48, image_width=64, camera_rate=10.0, compressed=compressed
        )
        write_synthetic_episode(root / f"ep{i}", cfg)
        bags.append(root / f"ep{i}")
    summary = export_lerobot(bags, root / "lerobot", ExportConfig())
    # what the export started from: the observation feed's frames, before video encoding
    fps = summary["fps"]
    episodes = [_read_episode(b, fps, EvalConfig()) for b in bags]
    expected = {
        "state": np.concatenate([e.state for e in episodes]),
        "action": np.concatenate([e.action for e in episodes]),
        "fps": np.array(fps),
        **{
            f"image.{c}": np.concatenate([np.stack(e.images[c]) for e in episodes])
            for c in episodes[0].cameras
        },
    }
    np.savez(root / "expected.npz", **expected)
    return root / "lerobot", summary, expected


def test_export_writes_lerobot_v30_with_modality(exported):
    out, summary, expected = exported
    info = json.loads((out / "meta" / "info.json").read_text())
    assert info["codebase_version"] == "v3.0" and info["fps"] == summary["fps"] == 50
    assert info["total_episodes"] == 2 and info["total_frames"] == len(expected["state"]) == summary["frames"]
    names = info["features"]["observation.state"]["names"]
    assert names[:6] == [f"left_joint_{i}" for i in range(6)] and names[-2:] == [
        "left_gripper",
        "right_gripper",
    ]
    assert info["features"]["observation.images.head"]["shape"] == [48, 64, 3]
    modality = json.loads((out / "meta" / "modality.json").read_text())
    assert modality["state"] == {
        "left_arm": {"start": 0, "end": 6},
        "right_arm": {"start": 6, "end": 12},
        "claw": {"start": 12, "end": 14},
    }
    assert modality["video"]["left_wrist"] == {"original_key": "observation.images.left_wrist"}
    stats = json.loads((out / "meta" / "stats.json").read_text())
    np.testing.assert_allclose(stats["action"]["max"], expected["action"].max(0), rtol=1e-6)
    assert np.asarray(stats["observation.images.head"]["mean"]).shape == (3, 1, 1)


def test_export_reads_back(exported):
    """Our reader on our export: frames, values, and images within the codec's tolerance."""
    out, _, expected = exported
    ds = LeRobotDatasetReader(out)
    assert ds.tasks == {0: "pick up the red block and put it in the bin"}
    frames = [ds.frames(e, videos=ds.video_keys) for e in ds.episodes]
    np.testing.assert_array_equal(np.concatenate([f.state for f in frames]), expected["state"])
    np.testing.assert_array_equal(np.concatenate([f.action for f in frames]), expected["action"])
    for cam in ("head", "left_wrist", "right_wrist"):
        got = np.concatenate([f.images[f"observation.images.{cam}"] for f in frames]).astype(float)
        assert np.abs(got - expected[f"image.{cam}"]).mean() < IMAGE_MAE_LEVELS
    # and it trains like the bags: modality.json gives the joint groups without --params
    episodes = load_episodes(find_bags(out), DatasetConfig(), workers=1)
    assert sum(len(e) for e in episodes) > 0


@pytest.mark.skipif(
    not LEROBOT_PYTHON.is_file()
    or subprocess.run([str(LEROBOT_PYTHON), "-c", "import lerobot"], capture_output=True).returncode != 0,
    reason=f"no Python with lerobot at {LEROBOT_PYTHON} (set VLA_LEROBOT_PYTHON; "
    "fixtures/lerobot/make_fixture.py says how to make one)",
)
def test_export_loads_in_lerobot(exported):
    """lerobot's own LeRobotDataset reads the export: same frames, fps, features, values."""
    out, _, _ = exported
    proc = subprocess.run(
        [str(LEROBOT_PYTHON), str(CHECK), str(out), str(out.parent / "expected.npz")],
        capture_output=True,
        text=True,
        timeout=600,
        env={k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")},
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr[-2000:]
    result = json.loads(proc.stdout[proc.stdout.index("{") :])
    assert result["ok"] and result["lerobot_frames"] == result["expected_frames"]


def test_export_bad_input(tmp_path, exported):
    out, _, _ = exported
    with pytest.raises(LeRobotExportError, match="already exists"):
        export_lerobot([tmp_path], out)
    with pytest.raises(LeRobotDatasetError, match=r"format v2\.1 is not supported"):
        bad = tmp_path / "old"
        (bad / "meta").mkdir(parents=True)
        (bad / "meta" / "info.json").write_text(json.dumps({"codebase_version": "v2.1", "features": {}}))
        LeRobotDatasetReader(bad)
