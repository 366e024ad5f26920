"""LoRA adapters for fine-tuning the CogVLA prefix parts, merged into plain Linear layers for export.

A plain implementation (``peft`` is not a dependency): ``y = W x + b + (alpha / r) * B A x`` with A
Kaiming-initialised and B zero-initialised, so a fresh adapter changes nothing. ``merge_lora`` folds
``(alpha / r) * B A`` into W and puts the ``nn.Linear`` back, so exported graphs carry no adapter ops.
"""

from __future__ import annotations

import math

import torch
from torch import nn


class LoRALinear(nn.Module):
    """Wraps ``base`` (frozen) with a rank-``rank`` update: x [..., in] -> [..., out]."""

    def __init__(self, base: nn.Linear, rank: int, alpha: float) -> None:
        super().__init__()
        if rank <= 0:
            raise ValueError(f"LoRA rank must be positive, got {rank}")
        self.base = base
        self.base.requires_grad_(False)
        self.scale = alpha / rank
        w = base.weight
        self.lora_a = nn.Parameter(torch.empty(rank, base.in_features, dtype=w.dtype, device=w.device))
        self.lora_b = nn.Parameter(torch.zeros(base.out_features, rank, dtype=w.dtype, device=w.device))
        if w.device.type != "meta":
            nn.init.kaiming_uniform_(self.lora_a, a=math.sqrt(5))  # as nn.Linear; B = 0 keeps y = base(x)

    @property
    def weight(self) -> torch.Tensor:
        """The frozen base weight (code around a Linear reads its dtype and device)."""
        return self.base.weight

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.base(x) + (x @ self.lora_a.t() @ self.lora_b.t()) * self.scale

    def merged(self) -> nn.Linear:
        """A new ``nn.Linear`` with W + scale * B A (same output up to float rounding)."""
        out = nn.Linear(
            self.base.in_features,
            self.base.out_features,
            bias=self.base.bias is not None,
            device=self.base.weight.device,
            dtype=self.base.weight.dtype,
        )
        with torch.no_grad():
            out.weight.copy_(self.base.weight + self.scale * (self.lora_b @ self.lora_a))
            if self.base.bias is not None:
                out.bias.copy_(self.base.bias)
        return out


def add_lora(module: nn.Module, rank: int, alpha: float) -> list[str]:
    """Replace every ``nn.Linear`` under ``module`` with a LoRALinear; returns the wrapped names."""
    wrapped: list[str] = []
    targets = [(n, m) for n, m in module.named_modules() if isinstance(m, nn.Linear)]
    if isinstance(module, nn.Linear):
        raise ValueError("add_lora needs a container module; wrap a bare Linear with LoRALinear")
    for name, linear in targets:
        parent_name, _, child = name.rpartition(".")
        parent = module.get_submodule(parent_name) if parent_name else module
        setattr(parent, child, LoRALinear(linear, rank, alpha))
        wrapped.append(name)
    return wrapped


def merge_lora(module: nn.Module) -> int:
    """Replace every LoRALinear under ``module`` by its merged ``nn.Linear``; returns how many."""
    targets = [(n, m) for n, m in module.named_modules() if isinstance(m, LoRALinear)]
    for name, lora in targets:
        parent_name, _, child = name.rpartition(".")
        parent = module.get_submodule(parent_name) if parent_name else module
        setattr(parent, child, lora.merged())
    return len(targets)


def merged_state_dict(module: nn.Module) -> dict[str, torch.Tensor]:
    """``module.state_dict()`` as if every LoRALinear were merged; ``module`` keeps its adapters."""
    sd = module.state_dict()
    for name, m in module.named_modules():
        if not isinstance(m, LoRALinear):
            continue
        p = f"{name}." if name else ""
        del sd[p + "lora_a"], sd[p + "lora_b"]
        sd[p + "weight"] = (sd.pop(p + "base.weight") + m.scale * (m.lora_b @ m.lora_a)).detach()
        if p + "base.bias" in sd:
            sd[p + "bias"] = sd.pop(p + "base.bias")
    return sd
