"""LoRA adapters on the CogVLA parts: fresh adapters change nothing, merge() folds them into Linear."""

from __future__ import annotations

import torch
from cogvla_helpers import cog_policy, observation
from torch import nn
from vla_policy.model.lora import LoRALinear, add_lora, merge_lora


def test_fresh_adapter_is_identity_and_merge_matches() -> None:
    base = nn.Linear(8, 6)
    lora = LoRALinear(base, rank=2, alpha=4.0)
    x = torch.randn(3, 8)
    assert torch.equal(lora(x), base(x))
    nn.init.normal_(lora.lora_b)
    merged = lora.merged()
    assert isinstance(merged, nn.Linear)
    torch.testing.assert_close(merged(x), lora(x), atol=1e-6, rtol=1e-5)
    assert not base.weight.requires_grad and lora.lora_a.requires_grad


def test_add_and_merge_on_a_container() -> None:
    net = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 2))
    assert add_lora(net, 2, 2.0) == ["0", "2"]
    assert merge_lora(net) == 2
    assert all(isinstance(net[i], nn.Linear) for i in (0, 2))


def test_cogvla_backbone_lora_merge_keeps_outputs() -> None:
    policy = cog_policy(film=True, dual_encoder=True, aggregation_tokens=4, lora_rank=2)
    bb = policy.model.backbone
    adapters = [m for m in bb.modules() if isinstance(m, LoRALinear)]
    assert len(adapters) >= 6  # 2 SigLIP FiLM + 2 DINOv2 FiLM + router (2) + dino_proj + mlp1
    for m in adapters:
        nn.init.normal_(m.lora_b, std=0.02)
    inputs = policy.prepare_inputs([observation(policy)])
    args = (inputs["pixel_values"], inputs["input_ids"], inputs["attention_mask"])
    with torch.inference_mode():
        before = bb.encode_images(*args)
        assert bb.merge_lora() == len(adapters)
        after = bb.encode_images(*args)
    assert not any(isinstance(m, LoRALinear) for m in bb.modules())
    torch.testing.assert_close(after, before, atol=1e-5, rtol=1e-5)
