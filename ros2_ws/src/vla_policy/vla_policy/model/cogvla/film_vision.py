"""FiLM of every ViT block by the mean instruction embedding (CogVLA).

Each block becomes ``x = x + attn(norm1(x)); x = x * (1 + γ) + β; x = x + mlp(norm2(x))`` with
``γ, β = Linear(mean instruction embedding)``. The projections are zero-initialised, so a fresh FiLM
block is exactly the identity and the pretrained ViT's output is unchanged until FiLM is trained.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

BlockFn = Callable[[nn.Module, torch.Tensor], torch.Tensor]


class FiLM(nn.Module):
    """γ/β from a conditioning vector: x [N, T, D], cond [N, C] -> x * (1 + γ) + β, same shape as x."""

    def __init__(self, cond_dim: int, dim: int) -> None:
        super().__init__()
        self.proj = nn.Linear(cond_dim, 2 * dim)
        # zero init: γ = β = 0, so the block is the identity and pretrained ViT weights keep their meaning
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        gamma, beta = self.proj(cond.to(x.dtype)).unsqueeze(1).chunk(2, dim=-1)  # [N, 1, D] each
        return x * (1 + gamma) + beta


def instruction_embedding(
    embed_tokens: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor, image_token_id: int
) -> torch.Tensor:
    """Mean LLM input embedding over the prompt's non-image, non-padding tokens (BOS + instruction).

    input_ids [B, L], attention_mask [B, L] -> [B, D_llm]. A prompt with no such token gives zeros.
    """
    keep = (attention_mask.bool() & (input_ids != image_token_id)).unsqueeze(-1)  # [B, L, 1]
    embeds = embed_tokens(input_ids)
    total = (embeds * keep.to(embeds.dtype)).sum(dim=1)
    return total / keep.sum(dim=1).clamp_min(1).to(embeds.dtype)


def per_image(cond: torch.Tensor, num_images: int) -> torch.Tensor:
    """cond [B, C] -> [N, C] for N = B x images per row (view-major pixel_values rows)."""
    b, c = cond.shape
    return cond.unsqueeze(1).expand(b, num_images // b, c).reshape(num_images, c)


def run_blocks(
    layers: Sequence[nn.Module],
    x: torch.Tensor,
    attn: BlockFn,
    mlp: BlockFn,
    films: Sequence[FiLM] | None = None,
    cond: torch.Tensor | None = None,
) -> torch.Tensor:
    """Run ViT blocks x [N, T, D] -> [N, T, D], FiLMing after each attention residual when ``films``.

    ``attn(layer, x)`` / ``mlp(layer, x)`` return the residual branch of one encoder's block, so SigLIP
    and DINOv2 (which adds layer scale) share this loop.
    """
    for i, layer in enumerate(layers):
        x = x + attn(layer, x)
        if films is not None and cond is not None:
            x = films[i](x, cond)
        x = x + mlp(layer, x)
    return x


def siglip_attn(layer: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Attention branch of a ``SiglipEncoderLayer`` (no padding in images, so no mask)."""
    return layer.self_attn(hidden_states=layer.layer_norm1(x), attention_mask=None)[0]


def siglip_mlp(layer: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return layer.mlp(layer.layer_norm2(x))
