"""``vla-policy train``: bags -> windows -> flow-matching training -> checkpoint, resumed exactly."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from vla_policy.cli import main as cli_main
from vla_policy.data.episode_dataset import (
    AugmentConfig,
    BatchBuilder,
    DatasetConfig,
    WindowDataset,
    augment_image,
    compute_statistics,
    find_bags,
    load_episodes,
)
from vla_policy.model.presets import get_preset
from vla_policy.training.trainer import TrainConfig, lr_factor, train


def _cfg(**kw):
    base = dict(steps=8, batch_size=4, lr=1e-3, warmup_steps=2, val_fraction=0.5, val_every=4, progress=False)
    return TrainConfig(**{**base, **kw})


def _rows(path):
    return [json.loads(line) for line in (path / "metrics.jsonl").read_text().splitlines()]


def _fixed_loss(policy, bags) -> float:
    eps = load_episodes(find_bags(bags), DatasetConfig(), workers=1)
    builder = BatchBuilder(policy, WindowDataset(eps), 16, 0, AugmentConfig(enabled=False))
    with torch.no_grad(), torch.random.fork_rng(devices=[]):
        losses = []
        for k in range(3):
            torch.manual_seed(k)
            losses.append(float(policy.compute_loss(builder.build(k))))
    return float(np.mean(losses))


def test_windows_follow_the_recorded_commands(bags):
    eps = load_episodes(find_bags(bags), DatasetConfig(action_horizon=16, dt=0.05), workers=2)
    assert len(eps) == 2 and all(len(e) > 20 for e in eps)
    e = eps[0]
    assert e.actions.shape == (len(e), 16, 16) and e.actions.dtype == np.float32
    assert e.action_dims.sum() == 14 and not e.action_dims[6] and not e.action_dims[13]
    # the commands lead the measured state (the synthetic expert commands q(t + period))
    assert np.abs(e.actions[:, 0][:, e.action_dims] - e.states).max() < 0.2
    stats = compute_statistics(eps)
    assert stats["state"].dim == 14 and stats["action"].dim == 16
    assert np.all(stats["action"].q01 <= stats["action"].q99)


def test_augmentation_changes_pixels_only_when_on():
    rng = np.random.default_rng(0)
    img = rng.integers(0, 255, (32, 40, 3), dtype=np.uint8)
    out = augment_image(img, np.random.default_rng(1), AugmentConfig())
    assert out.dtype == np.uint8 and out.shape[2] == 3 and out.shape[0] <= 32
    assert not np.array_equal(out, img[: out.shape[0], : out.shape[1]])


def test_lr_schedule_warms_up_then_decays():
    f = [lr_factor(s, 5, 50) for s in range(50)]
    assert f[0] == pytest.approx(0.2) and f[4] == pytest.approx(1.0)
    assert all(a >= b for a, b in itertools.pairwise(f[4:])) and f[-1] < 0.01


def test_train_loss_falls_and_checkpoint_loads(bags, tmp_path, one_thread):
    from vla_policy.model.policy import VLAPolicy

    out = tmp_path / "run"
    res = train(bags, out, _cfg(steps=40, val_every=20, augment=False, lr=2e-3), preset="tiny")
    losses = [r["loss"] for r in _rows(out) if "loss" in r]
    assert len(losses) == 40
    assert np.mean(losses[-8:]) < np.mean(losses[:8]), losses
    # the same windows and the same noise: the trained policy beats its initialisation. The reference
    # architecture's N(0, 0.02) init predicts a near-zero velocity, close to the best constant, so 40 steps
    # gain about 1 % here (measured 1.622 -> 1.607); unchanged weights would give exactly `before`
    trained = VLAPolicy.from_checkpoint(out)
    init = VLAPolicy(get_preset("tiny"), normalizer=trained.normalizer, seed=0)
    before, after = _fixed_loss(init, bags), _fixed_loss(trained, bags)
    assert after < 0.995 * before, (before, after)
    assert res.val_loss is not None and np.isfinite(res.val_loss)
    assert any("val_loss" in r for r in _rows(out))
    stats = json.loads((out / "statistics.json").read_text())
    assert set(stats["state"]) == {"min", "max", "mean", "std", "q01", "q99"}
    assert len(stats["state"]["min"]) == 14 and len(stats["action"]["q99"]) == 16
    policy = VLAPolicy.from_checkpoint(out)
    assert not policy.random_init
    assert np.allclose(policy.normalizer.stats["action"].max, stats["action"]["max"])
    state = json.loads((out / "train_state.json").read_text())
    assert state["step"] == 40 and state["split"]["val"]
    assert sorted(p.name for p in out.iterdir() if p.suffix in (".pt", ".bin", ".pkl", ".pth")) == []


def test_resume_continues_exactly(bags, tmp_path, one_thread):
    cfg = _cfg(log_every=1)
    straight = tmp_path / "straight"
    train(bags, straight, cfg, preset="tiny")
    split = tmp_path / "split"
    train(bags, split, cfg, preset="tiny", stop_at=4)
    assert json.loads((split / "train_state.json").read_text())["step"] == 4
    train(bags, split, cfg, resume=True)
    a, b = _rows(straight), _rows(split)
    assert [r["step"] for r in a] == [r["step"] for r in b]
    for ra, rb in zip(a, b, strict=True):
        for k in ("loss", "val_loss", "lr"):
            if k in ra:
                assert ra[k] == rb[k], (ra, rb)
    wa, wb = load_file(str(straight / "model.safetensors")), load_file(str(split / "model.safetensors"))
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    oa = load_file(str(straight / "optimizer.safetensors"))
    ob = load_file(str(split / "optimizer.safetensors"))
    assert all(torch.equal(oa[k], ob[k]) for k in oa)


def test_cli_trains_and_reports(bags, tmp_path, capsys):
    out = tmp_path / "cli"
    rc = cli_main(
        ["train", "--data", str(bags), "--preset", "tiny", "--out", str(out), "--steps", "3",
         "--batch-size", "2", "--no-progress", "--json"]
    )  # fmt: skip
    assert rc == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["step"] == 3 and summary["train_samples_per_s"] > 0
    assert summary["loading_samples_per_s_per_worker"] > 0
    # a second run into the same directory without --resume is refused
    rc = cli_main(["train", "--data", str(bags), "--preset", "tiny", "--out", str(out), "--steps", "3"])
    assert rc == 2 and "--resume" in capsys.readouterr().err


@pytest.mark.parametrize(
    "make,needle",
    [
        (lambda p: p / "missing", "does not exist"),
        (lambda p: (p / "empty").mkdir() or p / "empty", "no episode bags"),
        (lambda p: (p / "f.txt").write_text("x") and p / "f.txt", "not a directory"),
    ],
)
def test_bad_data_dir_exits_with_one_line(tmp_path, capsys, make, needle):
    data = make(tmp_path)
    rc = cli_main(["train", "--data", str(data), "--preset", "tiny", "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert rc != 0
    assert err.count("\n") == 1 and needle in err and "Traceback" not in err
