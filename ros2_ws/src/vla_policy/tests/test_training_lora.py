"""``vla-policy train --lora-rank``: adapters on the LLM and the DiT, merged checkpoint, exact resume."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from vla_policy.model.lora import LoRALinear
from vla_policy.model.policy import VLAPolicy
from vla_policy.model.presets import get_preset
from vla_policy.observation import synthetic_observation
from vla_policy.training.trainer import LORA_FILE, TrainConfig, TrainError, apply_lora, train

LLM = "backbone.eagle_model.language_model"
DIT = "action_head.model"


def _cfg(**kw):
    base = dict(steps=8, batch_size=4, lr=1e-3, warmup_steps=2, val_fraction=0.5, val_every=4, progress=False)
    return TrainConfig(**{**base, "lora_rank": 4, **kw})


def _linear_weights(policy: VLAPolicy, path: str) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in policy.model.get_submodule(path).state_dict().items() if "lora" not in k}


def test_lora_trains_adapters_and_leaves_the_target_base_weights(one_thread):
    policy = VLAPolicy(get_preset("tiny"), seed=0)
    before = {p: _linear_weights(policy, p) for p in (LLM, DIT)}
    n = apply_lora(policy, _cfg())
    adapters = [m for m in policy.model.modules() if isinstance(m, LoRALinear)]
    assert n > 0 and len(adapters) > 0
    obs = synthetic_observation(tuple(policy.config.backbone.cameras), 32, 14, 1)
    batch = policy.make_batch([obs], [np.zeros((policy.config.action_horizon, 14), np.float32)])
    opt = torch.optim.AdamW(list(policy.trainable_parameters()), lr=1e-2)
    for _ in range(3):
        opt.zero_grad()
        policy.compute_loss(batch).backward()
        opt.step()
    for path in (LLM, DIT):
        after = {k.replace("base.", ""): v for k, v in _linear_weights(policy, path).items()}
        assert all(torch.equal(before[path][k], after[k]) for k in before[path]), path
    llm_b = [m.lora_b for n_, m in policy.model.named_modules() if isinstance(m, LoRALinear) and LLM in n_]
    assert llm_b and any(float(b.detach().abs().sum()) > 0 for b in llm_b), "the LLM's adapters never learned"


def test_lora_checkpoint_is_merged_and_predicts_like_the_adapted_model(bags, tmp_path, one_thread):
    out = tmp_path / "run"
    train(bags, out, _cfg(), preset="tiny")
    keys = load_file(str(out / "model.safetensors")).keys()
    assert not any("lora" in k or ".base." in k for k in keys)
    merged = VLAPolicy.from_checkpoint(out)
    adapted = VLAPolicy.from_checkpoint(out)
    apply_lora(adapted, _cfg(), load_file(str(out / LORA_FILE)))
    obs = synthetic_observation(tuple(merged.config.backbone.cameras), 32, 14, 1)
    a = merged.predict_chunk(obs, seed=3).actions
    b = adapted.predict_chunk(obs, seed=3).actions
    assert np.allclose(a, b, atol=1e-5), np.abs(a - b).max()


def test_lora_resume_continues_exactly(bags, tmp_path, one_thread):
    cfg = _cfg(log_every=1)
    straight, split = tmp_path / "straight", tmp_path / "split"
    train(bags, straight, cfg, preset="tiny")
    train(bags, split, cfg, preset="tiny", stop_at=4)
    train(bags, split, cfg, resume=True)
    rows = [
        [json.loads(line) for line in (d / "metrics.jsonl").read_text().splitlines()]
        for d in (straight, split)
    ]
    for ra, rb in zip(*rows, strict=True):
        for key in ("samples_per_s", "samples_per_s_per_rank"):  # wall clock
            ra.pop(key, None), rb.pop(key, None)
        assert ra == rb
    for name in ("model.safetensors", LORA_FILE):
        wa, wb = load_file(str(straight / name)), load_file(str(split / name))
        assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa), name


def test_lora_loss_falls(bags, tmp_path, one_thread):
    out = tmp_path / "run"
    train(bags, out, _cfg(steps=30, val_every=30, lr=3e-3, augment=False), preset="tiny")
    losses = [
        json.loads(r)["loss"] for r in (out / "metrics.jsonl").read_text().splitlines() if '"loss"' in r
    ]
    assert np.mean(losses[-6:]) < np.mean(losses[:6]), losses


@pytest.mark.parametrize(
    "kw, words",
    [({"lora_rank": -1}, "rank"), ({"lora_targets": ("vision",)}, "targets"), ({"lora_alpha": 0.0}, "alpha")],
)
def test_bad_lora_settings_are_one_line_errors(kw, words):
    with pytest.raises(TrainError, match=words) as err:
        _cfg(**kw).check()
    assert "\n" not in str(err.value)


def test_resume_with_other_lora_settings_is_refused(bags, tmp_path, one_thread):
    out = tmp_path / "run"
    train(bags, out, _cfg(steps=4), preset="tiny", stop_at=2)
    with pytest.raises(TrainError, match="LoRA"):
        train(bags, out, _cfg(steps=4, lora_rank=8), resume=True)
