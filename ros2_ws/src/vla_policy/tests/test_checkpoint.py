from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file
from vla_policy.model.checkpoint import CheckpointError, load_checkpoint
from vla_policy.model.policy import VLAPolicy
from vla_policy.model.presets import get_preset


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> tuple[VLAPolicy, Path]:
    policy = VLAPolicy(get_preset("tiny"), seed=5)
    path = tmp_path_factory.mktemp("ck") / "tiny"
    policy.save(path, random_init=True)
    return policy, path


def _copy(src: Path, dst: Path) -> Path:
    dst.mkdir()
    for f in src.iterdir():
        (dst / f.name).write_bytes(f.read_bytes())
    return dst


def test_save_load_round_trip_is_exact(saved: tuple[VLAPolicy, Path]) -> None:
    policy, path = saved
    loaded = VLAPolicy.from_checkpoint(path)
    a, b = policy.model.state_dict(), loaded.model.state_dict()
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert loaded.config == policy.config


def test_config_json_marks_random_init(saved: tuple[VLAPolicy, Path]) -> None:
    _, path = saved
    assert json.loads((path / "config.json").read_text())["random_init"] is True
    assert VLAPolicy.from_checkpoint(path).random_init is True


def test_name_is_preset_and_weight_digest(saved: tuple[VLAPolicy, Path]) -> None:
    import hashlib

    _, path = saved
    digest = hashlib.sha256((path / "model.safetensors").read_bytes()).hexdigest()[:12]
    assert VLAPolicy.from_checkpoint(path).name == f"tiny@{digest}"


def test_sharded_checkpoint_loads_exactly(saved: tuple[VLAPolicy, Path], tmp_path: Path) -> None:
    policy, _ = saved
    policy.save(tmp_path / "sharded", max_shard_bytes=1_000_000)
    assert (tmp_path / "sharded" / "model.safetensors.index.json").is_file()
    loaded = VLAPolicy.from_checkpoint(tmp_path / "sharded")
    a, b = policy.model.state_dict(), loaded.model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_dtype_option_casts_weights(saved: tuple[VLAPolicy, Path]) -> None:
    ck = load_checkpoint(saved[1], dtype=torch.bfloat16)
    assert ck.state_dict["action_head.model.proj_out_2.weight"].dtype == torch.bfloat16


def test_truncated_weights_refused(saved: tuple[VLAPolicy, Path], tmp_path: Path) -> None:
    path = _copy(saved[1], tmp_path / "trunc")
    data = (path / "model.safetensors").read_bytes()
    (path / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        VLAPolicy.from_checkpoint(path)


def test_garbage_weights_refused(saved: tuple[VLAPolicy, Path], tmp_path: Path) -> None:
    path = _copy(saved[1], tmp_path / "garbage")
    (path / "model.safetensors").write_bytes(b"\x00\x01not a safetensors file" * 10)
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        VLAPolicy.from_checkpoint(path)


def test_pickle_weights_refused(saved: tuple[VLAPolicy, Path], tmp_path: Path) -> None:
    path = _copy(saved[1], tmp_path / "pickle")
    (path / "model.safetensors").unlink()
    (path / "pytorch_model.bin").write_bytes(b"\x80\x04pickle")
    with pytest.raises(CheckpointError, match="pickle"):
        VLAPolicy.from_checkpoint(path)


def test_missing_and_unexpected_keys_named(saved: tuple[VLAPolicy, Path], tmp_path: Path) -> None:
    path = _copy(saved[1], tmp_path / "keys")
    sd = load_file(str(path / "model.safetensors"))
    sd.pop("action_head.future_tokens.weight")
    sd["action_head.extra.weight"] = torch.zeros(1)
    save_file(sd, str(path / "model.safetensors"))
    with pytest.raises(
        CheckpointError,
        match=r"missing keys \(1\): action_head.future_tokens.weight.*"
        r"unexpected keys \(1\): action_head.extra.weight",
    ):
        VLAPolicy.from_checkpoint(path)


def test_corrupt_config_refused(saved: tuple[VLAPolicy, Path], tmp_path: Path) -> None:
    path = _copy(saved[1], tmp_path / "cfg")
    (path / "config.json").write_text("{not json")
    with pytest.raises(CheckpointError, match=r"config\.json: corrupt"):
        VLAPolicy.from_checkpoint(path)


def test_tokenizer_json_in_checkpoint_is_used(saved: tuple[VLAPolicy, Path], tmp_path: Path) -> None:
    from tokenizers import Tokenizer, models, pre_tokenizers

    path = _copy(saved[1], tmp_path / "tok")
    vocab = {"<pad>": 0, "<bos>": 1, "<image>": 2, "pick": 3, "up": 4, "[UNK]": 5}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.save(str(path / "tokenizer.json"))
    policy = VLAPolicy.from_checkpoint(path)
    assert policy.tokenizer.image_id == 2 and policy.tokenizer.encode("pick up") == [3, 4]


def test_old_checkpoint_config_means_the_seed_architecture() -> None:
    """models/tiny-aloha-transfer-cube predates the reference keys: loading it gives the seed's layout
    and the chunk pinned from the code before the reference architecture existed."""
    from vla_policy.observation import synthetic_observation

    path = Path(__file__).resolve().parents[4] / "models" / "tiny-aloha-transfer-cube"
    saved = json.loads((path / "config.json").read_text())["model"]
    assert "layout" not in saved["decoder"] and "attention_bias" not in saved["action_head"]
    policy = VLAPolicy.from_checkpoint(path)
    cfg = policy.config
    assert cfg.decoder.layout == "split" and cfg.backbone.projector == "linear"
    assert not cfg.action_head.attention_bias and cfg.action_head.use_vl_mask
    obs = synthetic_observation(cfg.backbone.cameras, 48, 14, seed=5)
    res = policy.predict_chunk(obs, seed=3)
    assert res.actions.shape == (16, 16)
    pinned = [  # rows 0, 7, 15; dims 0, 3, 9, 14, 15 (the code at commit af0dcb5)
        [-0.006075, -0.007793, 0.13624, 0.260908, 0.809188],
        [-0.006845, -0.012395, 0.101041, 0.121146, 0.93005],
        [-0.007083, -0.01091, 0.142589, 0.20632, 0.919901],
    ]
    np.testing.assert_allclose(res.actions[[0, 7, 15]][:, [0, 3, 9, 14, 15]], pinned, atol=2e-6, rtol=0)
    assert float(np.abs(res.actions).mean()) == pytest.approx(0.339412, abs=2e-6)
