"""Dual SigLIP + DINOv2 encoder with a language-conditioned router (CogVLA).

Both towers see the same image (DINOv2 with ImageNet normalisation), each is projected to the LLM width,
and a router MLP on the mean instruction embedding gives softmax weights over the 2 experts per sample:
``out = w_siglip * proj_siglip + w_dino * proj_dino``.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers import Dinov2Config, Dinov2Model

from vla_policy.model.cogvla.config import DinoV2Config
from vla_policy.model.image_preprocessing import SIGLIP_MEAN, SIGLIP_STD

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def dinov2_config(config: DinoV2Config, image_size: int) -> Dinov2Config:
    """A ``transformers.Dinov2Config`` from our frozen config; nothing is downloaded."""
    return Dinov2Config(
        hidden_size=config.hidden_size,
        num_hidden_layers=config.num_hidden_layers,
        num_attention_heads=config.num_attention_heads,
        mlp_ratio=config.mlp_ratio,
        image_size=image_size,
        patch_size=config.patch_size,
        layer_norm_eps=config.layer_norm_eps,
        layerscale_value=config.layerscale_value,
        attn_implementation="sdpa",
    )


def siglip_to_imagenet(pixel_values: torch.Tensor) -> torch.Tensor:
    """SigLIP-normalised pixels [N, 3, S, S] -> ImageNet-normalised ones for DINOv2 (same shape)."""
    mean = torch.tensor(IMAGENET_MEAN, dtype=pixel_values.dtype, device=pixel_values.device)
    std = torch.tensor(IMAGENET_STD, dtype=pixel_values.dtype, device=pixel_values.device)
    unit = pixel_values * SIGLIP_STD + SIGLIP_MEAN  # back to [0, 1]
    return (unit - mean.view(1, 3, 1, 1)) / std.view(1, 3, 1, 1)


def dinov2_attn(layer: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Attention branch of a ``Dinov2Layer``, layer scale included (drop path is identity at eval)."""
    return layer.drop_path(layer.layer_scale1(layer.attention(layer.norm1(x))[0]))


def dinov2_mlp(layer: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return layer.drop_path(layer.layer_scale2(layer.mlp(layer.norm2(x))))


class ExpertRouter(nn.Module):
    """cond [B, C] -> softmax weights [B, num_experts] (CogVLA: Linear -> GELU -> Linear -> softmax)."""

    def __init__(self, cond_dim: int, hidden: int, num_experts: int = 2) -> None:
        super().__init__()
        self.fc1 = nn.Linear(cond_dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, num_experts)

    def forward(self, cond: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.fc2(self.act(self.fc1(cond))).float(), dim=-1).to(cond.dtype)

    @staticmethod
    def mix(weights: torch.Tensor, experts: list[torch.Tensor]) -> torch.Tensor:
        """weights [N, E], experts E x [N, T, D] -> sum_e w[:, e] * expert_e, [N, T, D]."""
        out = weights[:, 0, None, None] * experts[0]
        for e in range(1, len(experts)):
            out = out + weights[:, e, None, None] * experts[e]
        return out


class DinoV2Tower(nn.Module):
    """A ``Dinov2Model`` built from config; its blocks run through ``film_vision.run_blocks``."""

    def __init__(self, config: DinoV2Config, image_size: int) -> None:
        super().__init__()
        self.model = Dinov2Model(dinov2_config(config, image_size))

    @property
    def layers(self) -> nn.ModuleList:
        return self.model.encoder.layer

    def embed(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """SigLIP-normalised pixels [N, 3, S, S] -> patch embeddings [N, P, D] (CLS token dropped).

        CLS is dropped so the DINOv2 sequence lines up with SigLIP's patches (and aggregation tokens)."""
        return self.model.embeddings(siglip_to_imagenet(pixel_values))[:, 1:]

    def final_norm(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.layernorm(x)
